"""Inference fast path: the same function as the model, computed faster.

:func:`optimize_for_inference` returns a copy of an EfficientNet (or any model
built from effnet's ConvBNAct, SqueezeExcite and MBConv) that

* folds every batch norm into the convolution before it (eval-mode BN is an
  affine map per channel: w' = w * g / sqrt(v + eps), b' = beta - m * g / sqrt(v + eps));
* stores weights channels_last, where oneDNN's depthwise convolutions run
  about 3x faster than in NCHW (measured with `effnet bench limits`);
* runs 1x1 convs at small batches, and the SE's two 1x1 convs always, as one
  matrix product over the channels_last pixels;
* runs activations, the SE gate and the residual sum in place when no
  gradient is being recorded, saving an allocation and a pass over memory each;
* optionally freezes a TorchScript trace or wraps the result in torch.compile.

The outputs equal the original model's in eval mode (to float32 rounding).
Measured with `effnet bench inference` (benchmarks/README.md): the eager fast
path is the default; TorchScript is a little faster on CPU but fixed to one
input size and deprecated upstream, torch.compile is faster still on GPU but
takes a minute to compile.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EffnetError
from ..nn.blocks import MBConv
from ..nn.layers import (
    Conv2dSame,
    ConvBNAct,
    DropPath,
    SqueezeExcite,
    activation_name,
    apply_activation,
)

__all__ = ["export_form", "fold_bn", "optimize_for_inference"]

# Below this batch size 1x1 convs run as one GEMM (see `pointwise`).
POINTWISE_GEMM_MAX_BATCH = 16


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv (same class, with bias) computing bn(conv(x)) with `bn`'s running statistics."""
    if bn.running_mean is None or bn.running_var is None:
        raise EffnetError("cannot fold a batch norm without running statistics")
    fused = copy.deepcopy(conv)
    w = conv.weight.double()
    inv = torch.rsqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv)
    scale = gamma * inv
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(inv)
    fused.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype),
                                requires_grad=False)
    fused.bias = nn.Parameter((beta + (bias - bn.running_mean.double()) * scale)
                              .to(conv.weight.dtype), requires_grad=False)
    return fused


def _apply_act(act: nn.Module, x: torch.Tensor, inplace: bool) -> torch.Tensor:
    name = activation_name(act)
    return act(x) if name is None else apply_activation(name, x, inplace)


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
            and conv.padding in ((0, 0), "valid") and type(conv) is nn.Conv2d)


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv as one matrix product over the channels_last pixels, at small batches.

    On a channels_last tensor this is `linear` on an (N*H*W, C) view: no
    layout copies, one GEMM. PyTorch sends small-batch 1x1 convs to an im2col
    fallback that copies channels_last inputs (B0 at batch 1: 1.4x faster
    this way); from batch 16 on it uses oneDNN, which is as fast or faster.
    """
    if (x.ndim != 4 or x.shape[0] >= POINTWISE_GEMM_MAX_BATCH
            or not x.is_contiguous(memory_format=torch.channels_last)):
        return conv(x)
    y = F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias)
    return y.permute(0, 3, 1, 2)


class FoldedConvAct(nn.Module):
    """A conv with its batch norm folded in, then the activation (in place when no grad)."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.act = act
        self.pointwise = _is_pointwise(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = pointwise(self.conv, x) if self.pointwise else self.conv(x)
        return _apply_act(self.act, y, not torch.is_grad_enabled())


class FastSqueezeExcite(nn.Module):
    """SqueezeExcite with the gate multiplied in place when no grad is recorded."""

    def __init__(self, se: SqueezeExcite) -> None:
        super().__init__()
        self.reduce, self.act, self.expand = se.reduce, se.act, se.expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3))
        s = F.linear(s, self.reduce.weight.flatten(1), self.reduce.bias)
        s = F.linear(_apply_act(self.act, s, not torch.is_grad_enabled()),
                     self.expand.weight.flatten(1), self.expand.bias)
        gate = torch.sigmoid(s)[:, :, None, None]
        return x.mul_(gate) if not torch.is_grad_enabled() else x * gate


class FastMBConv(nn.Module):
    """MBConv for inference: no stochastic depth, residual added in place when no grad."""

    def __init__(self, block: MBConv) -> None:
        super().__init__()
        self.expand, self.dw, self.se, self.project = (block.expand, block.dw, block.se,
                                                       block.project)
        self.has_skip = block.has_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        if self.has_skip:
            return y.add_(x) if not torch.is_grad_enabled() else y + x
        return y


def _rewrite(module: nn.Module) -> nn.Module:
    """Replace, bottom-up, each known unit by its folded / in-place form."""
    for name, child in list(module.named_children()):
        setattr(module, name, _rewrite(child))
    if isinstance(module, ConvBNAct):
        return FoldedConvAct(fold_bn(module.conv, module.bn), module.act)
    if type(module) is SqueezeExcite:
        return FastSqueezeExcite(module)
    if isinstance(module, MBConv):
        return FastMBConv(module)
    if isinstance(module, (DropPath, nn.Dropout)):
        return nn.Identity()
    return module


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """TorchScript tracing warns about deprecation and about the Python ints of 'same' padding;
    the ONNX exporter about Slice ops it cannot constant-fold (harmless)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


class TracedModel(nn.Module):
    """A frozen TorchScript trace for one input shape, with the eager model for other shapes.

    A trace records TF 'same' padding for its example's height and width, so
    inputs of another (C, H, W), dtype or device run the eager fast model instead.
    """

    def __init__(self, eager: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        self.eager = eager
        self._key = self._input_key(example)
        with quiet_tracing(), torch.no_grad():
            self.traced = torch.jit.freeze(torch.jit.trace(eager, example, check_trace=False))

    @staticmethod
    def _input_key(x: torch.Tensor) -> tuple:
        return tuple(x.shape[1:]), x.dtype, x.device

    def forward(self, x: torch.Tensor) -> Any:
        if self._input_key(x) == self._key and not torch.is_grad_enabled():
            return self.traced(x)
        return self.eager(x)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("eager"), name)


def _example_input(model: nn.Module, example_input: torch.Tensor | None) -> torch.Tensor:
    if example_input is not None:
        return example_input
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    size = tuple(cfg.get("input_size", (first.in_channels, 224, 224)))
    p = next(model.parameters())
    return torch.zeros(1, first.in_channels, *size[-2:], dtype=p.dtype, device=p.device)


def optimize_for_inference(model: nn.Module, example_input: torch.Tensor | None = None,
                           compile: bool = False, torchscript: bool = False,
                           channels_last: bool = True) -> nn.Module:
    """A faster copy of `model` for inference with the same outputs (eval mode).

    Batch norm is folded into the convs, weights are channels_last and
    activations, SE gating and residual sums run in place when no gradient is
    recorded. The input model is not modified. `torchscript=True` freezes a
    trace for `example_input`'s shape (other shapes run eagerly);
    `compile=True` wraps the result in `torch.compile` (slow first call). Works
    with 'same' padding and features_only models: forward_features and the
    other methods stay available on the eager result.
    """
    if compile and torchscript:
        raise EffnetError("choose one of compile=True or torchscript=True, not both")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and (m.running_mean is None or m.running_var is None):
            raise EffnetError("optimize_for_inference needs batch norms with running statistics "
                             "(track_running_stats=True)")
    fast = _rewrite(copy.deepcopy(model)).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    if torchscript:
        example = _example_input(model, example_input)
        if channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        fast = TracedModel(fast, example)
    elif compile:
        fast = torch.compile(fast)
    return fast


class StaticPadConv(nn.Module):
    """A TF 'SAME' conv with its padding fixed for one input size: symmetric padding goes into
    the conv, the extra bottom/right pixel of stride-2 convs into one constant Pad before it
    (which ONNX Runtime fuses into the conv). No shape arithmetic is left in a traced graph."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]) -> None:
        super().__init__()
        top, bottom, left, right = pads
        inner = (min(top, bottom), min(left, right))
        self.pad = (left - inner[1], right - inner[1], top - inner[0], bottom - inner[0])
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                              conv.stride, inner, conv.dilation, conv.groups,
                              conv.bias is not None)
        self.conv.load_state_dict(conv.state_dict())
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad) if any(self.pad) else x)


def _fold_same_padding(model: nn.Module, example: torch.Tensor) -> None:
    """Replace, in place, every 'SAME' conv by a StaticPadConv for `example`'s size."""
    pads: dict[nn.Module, tuple[int, int, int, int]] = {}

    def record(mod: nn.Module, args: Any) -> None:
        pads[mod] = mod.same_pads(args[0])

    handles = [m.register_forward_pre_hook(record) for m in model.modules()
               if isinstance(m, Conv2dSame)]
    with torch.no_grad():
        model(example)
    for h in handles:
        h.remove()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if child in pads:
                setattr(parent, name, StaticPadConv(child, pads[child]))


def export_form(model: nn.Module, image_size: int | None = None) -> nn.Module:
    """The model as an exporter should trace it: BN folded into the convs, dropout gone, and
    none of the eager fast path's layout tricks (NCHW, 1x1 convs stay convs instead of
    transposes around a matrix product), so ONNX Runtime and OpenVINO see plain Conv nodes
    they can fuse, lay out and quantize per channel. With `image_size`, TF 'SAME' padding is
    fixed for that size (static pads: the exported file takes that size only, as any traced
    'SAME' export does). Same outputs as `model` in eval mode at that size.
    """
    folded = optimize_for_inference(model, channels_last=False)
    for m in folded.modules():
        if isinstance(m, FoldedConvAct):
            m.pointwise = False
    if image_size is not None and any(isinstance(m, Conv2dSame) for m in folded.modules()):
        example = _example_input(model, None)
        example = torch.zeros(1, example.shape[1], image_size, image_size, dtype=example.dtype,
                              device=example.device)
        _fold_same_padding(folded, example)
    return folded
