"""Depthwise convs for training on CPU (effnet.nn.depthwise): exact cropping, exact gradients.

Every expected value comes from plain PyTorch (F.conv2d on the explicitly padded input with
the full kernel, and its autograd), from timm run in the same test, or from first principles
(which taps of a kernel meet data).
"""

from __future__ import annotations

import itertools
import json

import onnx
import onnxruntime as ort
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import effnet
from effnet.bench.references import copy_weights_by_order
from effnet.inference.export import export_onnx
from effnet.nn.depthwise import (
    crop_window,
    depthwise_conv2d,
    direct_weight_grad,
    weight_grad_backend,
)
from effnet.nn.layers import DepthwiseConv2d, DepthwiseConv2dSame, make_conv, same_padding


def _taps_meeting_data(size, kernel, stride, before, after):
    """First principles: which taps of a 1-D conv multiply a real input element."""
    out = (size + before + after - kernel) // stride + 1
    return sorted({i for o in range(out) for i in range(kernel)
                   if 0 <= o * stride - before + i < size}), out


@pytest.mark.parametrize("size,kernel,stride", list(itertools.product(
    range(1, 10), (1, 2, 3, 5, 7), (1, 2))))
def test_crop_window_keeps_exactly_the_taps_that_meet_data(size, kernel, stride):
    for before, after in {(kernel // 2, kernel // 2), same_padding(size, kernel, stride)}:
        taps, out = _taps_meeting_data(size, kernel, stride, before, after)
        lo, hi, nb, na = crop_window(size, kernel, stride, before, after)
        assert (lo, hi) == (min(taps), max(taps))
        assert (size + nb + na - (hi - lo + 1)) // stride + 1 == out
        assert nb >= 0


def _reference(x, w, b, stride, pads):
    top, bottom, left, right = pads
    return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride, 0, 1, w.shape[0])


CASES = [  # (map size, kernel, stride, SAME padding): every combination the zoo, the proxies
    (h, k, s, same)  # and --image-size produce on maps from 1x1 up, including odd sizes
    for h in (1, 2, 3, 4, 5, 7, 8, 14) for k in (3, 5) for s in (1, 2) for same in (False, True)]


def _pads(h, w, k, s, same):
    return (same_padding(h, k, s) + same_padding(w, k, s)) if same else (k // 2,) * 4


@pytest.mark.parametrize("backend", ["direct", "onednn"])
@pytest.mark.parametrize("h,k,s,same", CASES)
def test_values_and_gradients_equal_plain_autograd_in_float64(backend, h, k, s, same):
    torch.manual_seed(h * 100 + k * 10 + s)
    w_ = h + 1  # a non-square map: rows and columns crop differently
    pads = _pads(h, w_, k, s, same)
    x = torch.randn(3, 8, h, w_, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(8, 1, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    ref = _reference(x, w, b, (s, s), pads)
    g = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, (x, w, b), g)
    with weight_grad_backend(backend):
        y = depthwise_conv2d(x, w, b, (s, s), pads)
        got = torch.autograd.grad(y, (x, w, b), g)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h,k,s", [(1, 5, 1), (2, 5, 1), (3, 3, 2), (4, 5, 2), (5, 3, 1),
                                   (1, 3, 2), (3, 1, 2), (4, 1, 2)])  # the last 3: one tap
def test_gradcheck(h, k, s):
    x = torch.randn(2, 3, h, h, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(3, 1, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    with weight_grad_backend("direct"):
        assert torch.autograd.gradcheck(
            lambda x, w, b: depthwise_conv2d(x, w, b, (s, s), (k // 2,) * 4), (x, w, b))


# Depthwise layers of the quick proxy (B0 base at 14 px, batch 256), of B0 at 32 px and at
# 224 px (smaller batches here): float32 gradients within 1e-4 of autograd's, relative.
FLOAT32_SHAPES = [((64, 288, 1, 1), 5, 1), ((64, 192, 2, 2), 5, 1), ((64, 144, 2, 2), 5, 2),
                  ((64, 96, 4, 4), 5, 1), ((64, 48, 7, 7), 3, 1), ((32, 48, 14, 14), 3, 2),
                  ((8, 96, 16, 16), 3, 2), ((4, 672, 14, 14), 5, 1), ((2, 96, 112, 112), 3, 2)]


@pytest.mark.parametrize("backend", ["auto", "direct"])
@pytest.mark.parametrize("shape,k,s", FLOAT32_SHAPES)
def test_float32_gradients_within_1e4_of_autograd(backend, shape, k, s):
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(shape[1], 1, k, k, requires_grad=True)
    pads = (k // 2,) * 4
    ref = _reference(x.double(), w.double(), None, (s, s), pads)
    g = torch.randn_like(ref)
    gx_ref, gw_ref = torch.autograd.grad(ref, (x, w), g)
    with weight_grad_backend(backend):
        y = depthwise_conv2d(x, w, None, (s, s), pads)
        gx, gw = torch.autograd.grad(y, (x, w), g.float())
    for got, exp in ((y, ref), (gx, gx_ref), (gw, gw_ref)):
        err = (got.double() - exp).abs().max() / exp.abs().max()
        assert err < 1e-4


# The C kernel's vector path (16 channels at a time, kernel rows of up to 7 taps), its plain
# tail (the channels past the last multiple of 16, kernels wider than 7) and SAME padding.
TAIL_CASES = [((16, 20, 7, 7), 5, 1, (2, 2, 2, 2)), ((16, 8, 14, 14), 3, 1, (1, 1, 1, 1)),
              ((8, 40, 7, 7), 5, 2, (1, 2, 1, 2)), ((8, 33, 6, 6), 3, 2, (0, 1, 0, 1)),
              ((4, 24, 9, 9), 9, 1, (4, 4, 4, 4)), ((4, 32, 11, 11), 7, 2, (3, 3, 3, 3))]


@pytest.mark.parametrize("shape,k,s,pads", TAIL_CASES)
def test_direct_float32_gradient_on_channel_tails_wide_kernels_and_same_padding(shape, k, s,
                                                                               pads):
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(shape[1], 1, k, k, requires_grad=True)
    ref = _reference(x.double(), w.double(), None, (s, s), pads)
    gw_ref, = torch.autograd.grad(ref, (w,), g := torch.randn_like(ref))
    with weight_grad_backend("direct"):
        gw, = torch.autograd.grad(depthwise_conv2d(x, w, None, (s, s), pads), (w,), g.float())
    assert (gw.double() - gw_ref).abs().max() / gw_ref.abs().max() < 1e-4


def test_without_a_c_compiler_the_weight_gradient_stays_onednns(tmp_path, monkeypatch):
    from effnet.nn import native

    monkeypatch.setenv("EFFNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a compiler that fails: nothing is built or left behind
    monkeypatch.setattr(native.sysconfig, "get_config_var", lambda name: None)
    monkeypatch.setattr(native.shutil, "which", lambda cmd: "/bin/false" if cmd == "false"
                        else None)
    native.weight_grad_kernel.cache_clear()
    try:
        assert native.weight_grad_kernel() is None
        assert not any(p.is_file() for p in tmp_path.rglob("*"))
        x = torch.randn(8, 32, 4, 4).contiguous(memory_format=torch.channels_last)
        w = torch.randn(32, 1, 5, 5, requires_grad=True)
        x.requires_grad_()
        ref = _reference(x.double(), w.double(), None, (1, 1), (2,) * 4)
        g = torch.randn_like(ref)
        exp = torch.autograd.grad(ref, (x, w), g)
        got = torch.autograd.grad(depthwise_conv2d(x, w, None, (1, 1), (2,) * 4), (x, w),
                                  g.float())
        for a, b in zip(got, exp, strict=True):
            assert (a.double() - b).abs().max() / b.abs().max() < 1e-4
    finally:
        native.weight_grad_kernel.cache_clear()


def test_a_cache_folder_that_cannot_be_written_leaves_onednns_path(tmp_path, monkeypatch):
    from effnet.nn import native

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("EFFNET_CACHE_DIR", str(blocker / "cache"))  # below a file: no mkdir
    native.weight_grad_kernel.cache_clear()
    try:
        assert native.weight_grad_kernel() is None
    finally:
        native.weight_grad_kernel.cache_clear()


def test_the_c_kernel_is_built_once_into_the_cache_folder(tmp_path, monkeypatch):
    from effnet.nn import native

    monkeypatch.setenv("EFFNET_CACHE_DIR", str(tmp_path))
    native.weight_grad_kernel.cache_clear()
    try:
        assert native.weight_grad_kernel() is not None  # this machine has a C compiler
        built = sorted(p.name for p in (tmp_path / "native").iterdir())
        assert len(built) == 1 and built[0].endswith(".so")
        native.weight_grad_kernel.cache_clear()
        assert native.weight_grad_kernel() is not None
        assert sorted(p.name for p in (tmp_path / "native").iterdir()) == built
    finally:
        native.weight_grad_kernel.cache_clear()


@pytest.mark.parametrize("channels", [96, 40])
def test_direct_gradient_does_not_depend_on_the_thread_count(channels):
    torch.manual_seed(0)
    x = torch.randn(16, channels, 4, 4).contiguous(memory_format=torch.channels_last)
    g = torch.randn(16, channels, 4, 4).contiguous(memory_format=torch.channels_last)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = direct_weight_grad(g, x, (5, 5), (1, 1), (2, 2, 2, 2))
        torch.set_num_threads(3)
        two = direct_weight_grad(g, x, (5, 5), (1, 1), (2, 2, 2, 2))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, two)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown depthwise gradient backend"), \
            weight_grad_backend("fastest"):
        pass


def test_depthwise_modules_are_plain_convs_to_state_dicts():
    assert type(make_conv(32, 32, 3, groups=32)) is DepthwiseConv2d
    assert type(make_conv(32, 32, 5, 2, groups=32, padding="same")) is DepthwiseConv2dSame
    assert type(make_conv(32, 32, 1, groups=32)) is nn.Conv2d
    assert type(make_conv(32, 64, 3)) is nn.Conv2d
    ours, plain = make_conv(32, 32, 3, groups=32), nn.Conv2d(32, 32, 3, padding=1, groups=32,
                                                              bias=False)
    assert list(ours.state_dict()) == list(plain.state_dict())
    assert [p.shape for p in ours.parameters()] == [p.shape for p in plain.parameters()]


@pytest.mark.parametrize("res,memory_efficient", [(32, False), (33, False), (32, True)])
def test_b0_training_gradients_equal_timms(res, memory_efficient):
    """B0 with timm's weights: loss and every parameter gradient equal timm's (same batch),
    plain and memory-efficient (which runs the depthwise backward inside its own Functions)."""
    torch.manual_seed(0)
    ref = timm.create_model("efficientnet_b0", drop_rate=0.0, drop_path_rate=0.0).train()
    ours = effnet.create_model("b0", bn_eps=1e-5, drop_rate=0.0, drop_path_rate=0.0).train()
    copy_weights_by_order(ref, ours)
    if memory_efficient:
        ours.set_memory_efficient()
    x = torch.randn(4, 3, res, res).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (4,))
    losses = []
    for m in (ref, ours):
        m.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        scale = q.grad.abs().max().clamp_min(1e-8)
        assert (p.grad - q.grad).abs().max() / scale < 1e-3, name


def test_export_of_a_trained_model_is_a_plain_graph(tmp_path):
    """ONNX of a trained model: the same operators and initialisers as with nn.Conv2d, and
    the same outputs as eager (cropping and the custom backward stay out of the graph)."""
    torch.manual_seed(0)
    model = effnet.create_model("b0", num_classes=3, in_chans=1).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 1, 32, 32)  # 32 px: the last stages run on 1x1 maps (cropped in eager)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), torch.arange(8) % 3).backward()
        opt.step()
    plain = effnet.create_model("b0", num_classes=3, in_chans=1)
    for mod in plain.modules():
        if type(mod) is DepthwiseConv2d:
            mod.__class__ = nn.Conv2d
    plain.load_state_dict(model.state_dict())
    graphs = {}
    for name, m in (("effnet", model), ("plain", plain)):
        path = export_onnx(m, tmp_path / f"{name}.onnx", image_size=32)
        g = onnx.load(str(path)).graph
        graphs[name] = (sorted(n.op_type for n in g.node), sorted(i.name for i in g.initializer))
    assert graphs["effnet"] == graphs["plain"]
    assert "Slice" not in graphs["effnet"][0]
    model.eval()
    sess = ort.InferenceSession(str(tmp_path / "effnet.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x[:2].numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x[:2]), rtol=1e-4, atol=1e-4)


def test_the_measured_choice_is_stored_and_followed(tmp_path, monkeypatch):
    """auto: the first backward of a shape times both paths and stores the winner; a later
    process reads it (here: a choice written by hand is obeyed) instead of measuring again."""
    from effnet.nn import depthwise

    monkeypatch.setenv("EFFNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(depthwise, "_CHOICES", {})
    x = torch.randn(4, 16, 3, 3).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(16, 1, 3, 3, requires_grad=True)
    depthwise_conv2d(x, w, None, (1, 1), (1, 1, 1, 1)).sum().backward()
    stored = json.loads((tmp_path / "depthwise-choices.json").read_text())
    assert len(stored) == 1 and set(stored.values()) <= {"direct", "onednn"}
    key = next(iter(stored))
    calls: list[str] = []
    original = depthwise.direct_weight_grad
    monkeypatch.setattr(depthwise, "direct_weight_grad",
                        lambda *a: calls.append("direct") or original(*a))
    for forced in ("direct", "onednn"):
        (tmp_path / "depthwise-choices.json").write_text(json.dumps({key: forced}))
        monkeypatch.setattr(depthwise, "_CHOICES", {})
        calls.clear()
        w.grad = None
        depthwise_conv2d(x, w, None, (1, 1), (1, 1, 1, 1)).sum().backward()
        assert bool(calls) == (forced == "direct")
        assert list(depthwise._CHOICES.values()) == [forced]


def test_bf16_autocast_training_step_runs_with_autograd_gradients():
    """Under CPU autocast the conv runs in bfloat16 through plain autograd (the custom backward
    is float32/float64 only): the step works and the weight gradient matches plain PyTorch's."""
    torch.manual_seed(0)
    conv = make_conv(16, 16, 5, groups=16)
    x = torch.randn(4, 16, 2, 2).contiguous(memory_format=torch.channels_last)
    plain = nn.Conv2d(16, 16, 5, padding=2, groups=16, bias=False)
    plain.weight = nn.Parameter(conv.weight.detach().clone())
    grads = []
    for m in (conv, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
        assert y.dtype == torch.bfloat16
        y.float().square().sum().backward()
        grads.append(m.weight.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=2e-2, atol=2e-2)


def test_a_layer_left_to_onednn_runs_plain_autograd_with_the_same_gradients(tmp_path,
                                                                            monkeypatch):
    """Once oneDNN is chosen for a shape, later steps skip the custom Function: the gradients
    are bit-identical to the first step's (the same oneDNN call), so switching never changes
    what is learned."""
    from effnet.nn import depthwise

    monkeypatch.setenv("EFFNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(depthwise, "_CHOICES", {})
    x = torch.randn(4, 16, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(16, 1, 3, 3, requires_grad=True)
    key = depthwise._stored_key(depthwise._choice_key(x, (3, 3), (1, 1), (1, 1, 1, 1)))
    (tmp_path / "depthwise-choices.json").write_text(json.dumps({key: "onednn"}))
    grads, nodes = [], []
    for _ in range(2):
        y = depthwise_conv2d(x, w, None, (1, 1), (1, 1, 1, 1))
        nodes.append(type(y.grad_fn).__name__)
        grads.append(torch.autograd.grad(y, (x, w), torch.ones_like(y)))
    assert nodes[0] != nodes[1] and "Convolution" in nodes[1]
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
