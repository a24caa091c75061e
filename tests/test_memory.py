"""Memory-efficient training: same outputs, gradients and BN statistics (issue 6, item 2)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

import effnet
from effnet.nn.efficient import CheckpointedStage, MemoryEfficientMBConv
from effnet.nn.layers import ConvBNAct
from effnet.nn.model import EfficientNet
from effnet.spec import BASELINES, NetworkSpec, StageSpec
from tests.conftest import saved_storage_bytes


def _randomize_affine(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _x(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _step(model: nn.Module, x: torch.Tensor, seed: int = 7, amp: bool = False):
    """One training forward + backward; the same seed replays dropout and stochastic depth."""
    model.train()
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = model(x)
    out = out.float()
    # A loss whose gradient differs per logit and per sample.
    w = torch.linspace(-1, 1, out.shape[1])
    (out.pow(2).mean(0) * w).sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    return out.detach(), grads, {k: v.clone() for k, v in model.state_dict().items()}


def _compare(plain: nn.Module, other: nn.Module, x: torch.Tensor, rtol: float = 1e-4) -> None:
    out_p, g_p, s_p = _step(plain, x)
    out_o, g_o, s_o = _step(other, x)
    torch.testing.assert_close(out_o, out_p, atol=1e-6, rtol=1e-5)
    assert list(g_o) == list(g_p)
    # Some BN biases have gradients that are ~0 in exact arithmetic (a later BN removes
    # per-channel shifts): compare every tensor against the largest gradient's scale.
    scale = max(g.abs().max() for g in g_p.values())
    for k in g_p:
        torch.testing.assert_close(g_o[k], g_p[k], atol=rtol * scale, rtol=rtol, msg=k)
    assert list(s_o) == list(s_p)
    for k in s_p:
        torch.testing.assert_close(s_o[k], s_p[k], atol=1e-6, rtol=1e-5, msg=k)


def _pair(name: str = "b0", **kw):
    plain = effnet.create_model(name, **kw)
    _randomize_affine(plain)
    return plain, copy.deepcopy(plain).set_memory_efficient()


@pytest.mark.parametrize("kw,size", [({}, 48), ({"padding": "same"}, 49),
                                     ({"drop_rate": 0.5, "drop_path_rate": 0.5}, 32)])
def test_b0_same_outputs_gradients_and_running_stats(kw, size):
    plain, eff = _pair("b0", **kw)
    assert any(isinstance(m, MemoryEfficientMBConv) for m in eff.modules())
    _compare(plain, eff, _x(3, size))


def test_lite_relu6_no_se():
    plain, eff = _pair("lite0")
    _compare(plain, eff, _x(2, 40) * 3)


@pytest.mark.parametrize("baseline", ["mobilenetv2", "resnet50"])
def test_other_baselines(baseline):
    """MobileNetV2 (ReLU6, no SE) and the ResNet bottleneck (ConvBNAct units only)."""
    spec = BASELINES[baseline]
    if baseline == "resnet50":  # keep it small: two narrow stages
        spec = spec.with_(stages=tuple(dataclasses.replace(s, out_channels=64 * (i + 1),
                                                           repeats=2)
                                       for i, s in enumerate(spec.stages[:2])))
    plain = EfficientNet(spec, num_classes=10)
    _randomize_affine(plain)
    eff = copy.deepcopy(plain).set_memory_efficient()
    _compare(plain, eff, _x(2, 32))


def test_features_only():
    plain, eff = _pair("b0", features_only=True, out_indices=(2, 4))
    outs = []
    for m in (plain, eff):
        m.train()
        torch.manual_seed(0)
        feats = m(_x(2, 48))
        sum(f.pow(2).mean() for f in feats).backward()
        outs.append((feats, {k: p.grad for k, p in m.named_parameters()}))
    for a, b in zip(outs[0][0], outs[1][0], strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
    scale = max(g.abs().max() for g in outs[0][1].values() if g is not None)
    for k, g in outs[0][1].items():
        if g is not None:
            torch.testing.assert_close(outs[1][1][k], g, atol=1e-4 * scale, rtol=1e-4)


def test_grad_checkpointing_same_function_and_stats_updated_once():
    plain, _ = _pair("b0", drop_path_rate=0.3)
    ckpt = copy.deepcopy(plain).set_grad_checkpointing()
    assert all(isinstance(s, CheckpointedStage) for s in ckpt.blocks)
    _compare(plain, ckpt, _x(2, 40))


def test_memory_efficient_with_checkpointing():
    plain, eff = _pair("b0", padding="same", drop_path_rate=0.3)
    eff.set_grad_checkpointing()
    _compare(plain, eff, _x(2, 41))


def test_same_state_dict_and_switching_back():
    plain, eff = _pair("b0")
    assert list(eff.state_dict()) == list(plain.state_dict())
    eff.load_state_dict(plain.state_dict())
    eff.set_memory_efficient(False).set_grad_checkpointing(False)
    assert [type(m) for m in eff.modules()] == [type(m) for m in plain.modules()]
    assert not any(isinstance(m, (MemoryEfficientMBConv, CheckpointedStage))
                   for m in eff.modules())


def test_eval_and_no_grad_use_the_plain_path():
    plain, eff = _pair("b0")
    plain.eval()
    eff.eval()
    x = _x(2, 64)
    with torch.no_grad():
        torch.testing.assert_close(eff(x), plain(x), atol=0, rtol=0)
    # eval mode with gradients (frozen BN fine-tuning) also matches
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    plain(xa).sum().backward()
    eff(xb).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-7, rtol=1e-5)


def test_frozen_bn_module_falls_back():
    """A block whose BN is in eval mode (frozen) computes as the plain block does."""
    plain, eff = _pair("b0")
    for m in (plain, eff):
        m.train()
        m.blocks[1][0].dw.bn.eval()
    _compare_train_mode_kept(plain, eff, _x(2, 40))


def _compare_train_mode_kept(plain, eff, x):
    outs = []
    for m in (plain, eff):
        torch.manual_seed(0)
        y = m(x)
        y.pow(2).sum().backward()
        outs.append((y, m.blocks[1][0].dw.conv.weight.grad))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-6, rtol=1e-5)
    scale = outs[0][1].abs().max()
    torch.testing.assert_close(outs[1][1], outs[0][1], atol=1e-4 * scale, rtol=1e-4)


def test_keeps_less_than_half_for_backward():
    """The point of it: the plain B0 keeps ~7 expanded-width tensors per block, this ~2."""
    plain, eff = _pair("b0")
    x = _x(2, 96)
    plain_bytes, eff_bytes = saved_storage_bytes(plain, x), saved_storage_bytes(eff, x)
    assert eff_bytes < 0.5 * plain_bytes


def test_bf16_autocast_error_as_small_as_plain():
    """Under bf16 autocast both paths round; the memory-efficient one is no further from fp32."""
    plain, eff = _pair("b0", drop_rate=0.0, drop_path_rate=0.0)
    ref = copy.deepcopy(plain)
    x = _x(2, 48)
    _, g32, _ = _step(ref, x)
    _, gp, _ = _step(plain, x, amp=True)
    _, ge, _ = _step(eff, x, amp=True)
    flat = [torch.cat([g[k].flatten() for k in g32]) for g in (g32, gp, ge)]
    err_plain = (flat[1] - flat[0]).norm()
    err_eff = (flat[2] - flat[0]).norm()
    assert err_eff <= 1.1 * err_plain + 1e-3 * flat[0].norm()


def test_mbconv_without_expand_and_without_skip():
    """Block 0 of B0 has expand_ratio 1 (no expand conv) and no skip: both paths covered."""
    spec = NetworkSpec(name="t", stages=(StageSpec("mbconv", 3, 1, 1, 16, 1, 0.25),
                                         StageSpec("mbconv", 5, 2, 4, 24, 2, 0.0)),
                       stem_channels=16, head_channels=32)
    plain = EfficientNet(spec, num_classes=5, drop_path_rate=0.2)
    _randomize_affine(plain)
    eff = copy.deepcopy(plain).set_memory_efficient()
    assert isinstance(eff.blocks[0][0].expand, nn.Identity)
    assert isinstance(eff.stem, ConvBNAct)
    _compare(plain, eff, _x(3, 32))
