"""The inference fast path computes the same function as the plain model (issue 6, item 1)."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

import effnet
from effnet.inference.optimize import (
    POINTWISE_GEMM_MAX_BATCH,
    FoldedConvAct,
    TracedModel,
    fold_bn,
    optimize_for_inference,
)
from effnet.nn.layers import Conv2dSame
from effnet.nn.model import EfficientNet
from effnet.spec import NetworkSpec, StageSpec
from tests.conftest import randomize_bn_stats, transfer_by_order

TINY = NetworkSpec(
    name="tiny",
    stages=(StageSpec("mbconv", 3, 1, 1, 16, 1, 0.25), StageSpec("mbconv", 3, 2, 6, 24, 2, 0.25),
            StageSpec("mbconv", 5, 2, 6, 40, 1, 0.25)),
    stem_channels=16, head_channels=64)


def _x(batch: int, size: int, seed: int = 0, chans: int = 3) -> torch.Tensor:
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(seed))


def _model(name: str = "b0", **kw) -> EfficientNet:
    m = effnet.create_model(name, **kw)
    randomize_bn_stats(m, seed=1)
    return m.eval()


def _assert_same(a, b, atol: float = 1e-5) -> None:
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _assert_same(u, v, atol)
        return
    assert a.shape == b.shape
    torch.testing.assert_close(b, a, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("conv_cls,stride,size", [(nn.Conv2d, 1, 9), (nn.Conv2d, 2, 10),
                                                   (Conv2dSame, 2, 10)])
def test_fold_bn_equals_conv_then_bn(conv_cls, stride, size):
    """bn(conv(x)) with running statistics is an affine map per channel: folding is exact."""
    conv = conv_cls(6, 6, 3, stride, padding=0 if conv_cls is Conv2dSame else 1, groups=3,
                    bias=conv_cls is nn.Conv2d)
    bn = nn.BatchNorm2d(6, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.1, 3)
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    fused = fold_bn(conv, bn)
    assert type(fused) is conv_cls and fused.bias is not None
    x = _x(2, size, chans=6)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), bn(conv(x)), atol=1e-6, rtol=1e-6)


def test_fold_bn_needs_running_stats():
    with pytest.raises(ValueError, match="running statistics"):
        fold_bn(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, track_running_stats=False))


def test_no_batch_norm_left_and_weights_channels_last():
    fast = optimize_for_inference(_model())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last)
                         for c in convs if c.weight.ndim == 4 and c.kernel_size != (1, 1))
    assert all(not p.requires_grad for p in fast.parameters())


@pytest.mark.parametrize("batch,size", [(1, 64), (3, 65), (POINTWISE_GEMM_MAX_BATCH, 32)])
def test_same_outputs_as_the_plain_model(batch, size):
    """Both sides of the small-batch GEMM rule, even and odd sizes."""
    m = _model()
    fast = optimize_for_inference(m)
    x = _x(batch, size)
    with torch.no_grad():
        _assert_same(m(x), fast(x))


def test_same_outputs_as_timm_at_224():
    """The issue's bar: the optimized model against timm's eager model, same weights, 1e-4."""
    ref = timm.create_model("efficientnet_b0", pretrained=False).eval()
    randomize_bn_stats(ref, seed=3)
    ours = effnet.create_model("b0", bn_eps=1e-5)
    transfer_by_order(ref.state_dict(), ours)
    fast = optimize_for_inference(ours.eval())
    x = _x(2, 224)
    with torch.no_grad():
        _assert_same(ref(x), fast(x), atol=1e-4)


@pytest.mark.parametrize("size", [64, 65])
def test_same_padding(size):
    """TF 'same' padding is computed per input: folding keeps Conv2dSame and its padding."""
    m = _model(padding="same")
    fast = optimize_for_inference(m)
    assert any(isinstance(mod, Conv2dSame) for mod in fast.modules())
    x = _x(2, size)
    with torch.no_grad():
        _assert_same(m(x), fast(x))


def test_lite_relu6_without_se():
    m = _model("lite0")
    fast = optimize_for_inference(m)
    x = _x(2, 64) * 3  # reach ReLU6's upper clamp
    with torch.no_grad():
        _assert_same(m(x), fast(x))


def test_features_only():
    m = _model(features_only=True, out_indices=(1, 2, 4))
    fast = optimize_for_inference(m)
    x = _x(2, 64)
    with torch.no_grad():
        a, b = m(x), fast(x)
    assert len(a) == len(b) == 3
    _assert_same(a, b)
    assert fast.feature_info.channels() == m.feature_info.channels()


def test_forward_features_and_head_still_work():
    m = _model()
    fast = optimize_for_inference(m)
    x = _x(1, 64)
    with torch.no_grad():
        _assert_same(m.forward_features(x), fast.forward_features(x))
        _assert_same(m.forward_head(m.forward_features(x), pre_logits=True),
                     fast.forward_head(fast.forward_features(x), pre_logits=True))


def test_input_model_is_not_modified():
    m = _model().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    types = [type(mod) for mod in m.modules()]
    optimize_for_inference(m)
    assert m.training
    assert [type(mod) for mod in m.modules()] == types
    after = m.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_gradient_to_the_input_matches():
    """With grad on (e.g. saliency maps) nothing runs in place and d out / d x is the same."""
    m = _model()
    fast = optimize_for_inference(m)
    grads = []
    for model in (m, fast):
        x = _x(2, 64).requires_grad_()
        model(x).logsumexp(1).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-4)


def test_nchw_input_or_channels_last_off():
    m = _model()
    x = _x(2, 64)
    plain_layout = optimize_for_inference(m, channels_last=False)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in plain_layout.modules())
    with torch.no_grad():
        _assert_same(m(x), plain_layout(x))
        _assert_same(m(x), optimize_for_inference(m)(x.contiguous(
            memory_format=torch.channels_last)))


def test_torchscript_trace_any_batch_and_fallback_for_other_sizes():
    m = _model(padding="same")
    example = _x(2, 64)
    fast = optimize_for_inference(m, example_input=example, torchscript=True)
    assert isinstance(fast, TracedModel)
    with torch.no_grad():
        for x in (example, _x(5, 64, seed=1), _x(3, 65, seed=2)):
            _assert_same(m(x), fast(x))
    assert fast.feature_info == m.feature_info  # attributes reach the eager model


def test_torchscript_without_example_uses_pretrained_size():
    m = _model("b0")
    fast = optimize_for_inference(m, torchscript=True)
    assert fast._key[0] == tuple(m.pretrained_cfg["input_size"])


def test_compile_and_torchscript_exclusive():
    with pytest.raises(ValueError, match="not both"):
        optimize_for_inference(_model(), compile=True, torchscript=True)


@pytest.mark.slow
def test_torch_compile_same_outputs():
    m = EfficientNet(TINY, num_classes=10)
    randomize_bn_stats(m, seed=5)
    m.eval()
    fast = optimize_for_inference(m, compile=True)
    x = _x(2, 32)
    with torch.no_grad():
        _assert_same(m(x), fast(x), atol=1e-4)


def test_generic_modules_are_kept():
    """Modules the fast path does not know run unchanged (e.g. a custom classifier)."""
    m = copy.deepcopy(_model())
    m.classifier = nn.Sequential(nn.Linear(m.num_features, 7), nn.Tanh())
    fast = optimize_for_inference(m)
    assert isinstance(fast.classifier[1], nn.Tanh)
    assert sum(isinstance(mod, FoldedConvAct) for mod in fast.modules()) == sum(
        isinstance(mod, effnet.nn.layers.ConvBNAct) for mod in m.modules())
    x = _x(1, 64)
    with torch.no_grad():
        _assert_same(m(x), fast(x))
