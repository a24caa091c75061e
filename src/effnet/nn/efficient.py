"""Memory-efficient training: recompute cheap elementwise work in backward.

A plain training step keeps, per MBConv block, the conv outputs (batch-norm
inputs), the batch-norm outputs (SiLU inputs), the SiLU outputs (inputs of the
next conv) and the SE-gated tensor (input of the projection conv): about seven
tensors of the expanded width. Only the conv outputs are needed: everything
else is an elementwise function of them and the per-channel batch statistics.

The autograd Functions here save only the conv output `z` (and per-channel
statistics) and recompute `act(bn(z))`, the SE-gated product and the
activation derivative in backward, calling the same ATen kernels a plain step
uses (`native_batch_norm_backward`, `silu_backward`, `convolution_backward`).
Outputs, gradients and running statistics equal the plain model's.

:func:`set_memory_efficient` switches a model's blocks to these forms and
:func:`set_grad_checkpointing` recomputes whole stages in backward
(Chen et al. 2016); both keep every parameter, buffer and state-dict key, so
weights move freely between the plain and the memory-efficient model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import MBConv
from .depthwise import depthwise_backward, depthwise_forward
from .layers import (
    Conv2dSame,
    ConvBNAct,
    DepthwiseConv2d,
    DepthwiseConv2dSame,
    SqueezeExcite,
    activation_name,
    apply_activation,
)


def _act_name(module: nn.Module) -> str | None:
    return activation_name(module)


def _act_(name: str, x: torch.Tensor) -> torch.Tensor:
    """The activation, in place (its input is never needed again)."""
    return apply_activation(name, x, inplace=True)


def _act_backward(name: str, grad: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """d act(u) / du times grad, with the kernels autograd itself uses."""
    if name == "silu":
        return torch.ops.aten.silu_backward(grad, u)
    if name == "relu":
        return torch.ops.aten.threshold_backward(grad, u, 0)
    if name == "relu6":
        return torch.ops.aten.hardtanh_backward(grad, u, 0, 6)
    return grad


def _autocast_dtype(t: torch.Tensor) -> torch.dtype | None:
    dev = t.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None


def _conv_operands(dt: torch.dtype | None, weight: torch.Tensor, bias: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Conv weight and bias in the autocast dtype `dt` (unchanged when autocast is off)."""
    if dt is None:
        return weight, bias
    return weight.to(dt), None if bias is None else bias.to(dt)


def _bn_train(z: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, ...]:
    """Batch norm in training mode as nn.BatchNorm2d does it, returning batch stats too."""
    if z.numel() == z.shape[1]:  # as F.batch_norm checks
        raise ValueError(f"Expected more than 1 value per channel when training, got input "
                         f"size {z.shape}")
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    with torch.autocast(z.device.type, enabled=False):
        return torch.native_batch_norm(z, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                       True, momentum, bn.eps)


def _recompute_bn(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                  invstd: torch.Tensor) -> torch.Tensor:
    """bn(z) from the saved batch statistics, in float32 or wider."""
    scale = weight * invstd
    shift = bias - mean * scale
    shape = (1, -1) + (1,) * (z.ndim - 2)
    dt = torch.promote_types(z.dtype, torch.float32)
    return torch.addcmul(shift.to(dt).view(shape), z.to(dt), scale.to(dt).view(shape))


def _bn_backward(grad: torch.Tensor, z: torch.Tensor, weight: torch.Tensor,
                 mean: torch.Tensor, invstd: torch.Tensor, eps: float,
                 mask: list[bool]) -> tuple[torch.Tensor | None, ...]:
    if not any(mask):
        return None, None, None
    return torch.ops.aten.native_batch_norm_backward(grad.to(z.dtype), z, weight, None, None,
                                                     mean, invstd, True, eps, mask)


class _ConvGeometry:
    """How a conv module pads and strides its input, for `convolution_backward`.

    Depthwise convs go through `effnet.nn.depthwise` (kernel cropping, the
    direct weight gradient), as they do outside the memory-efficient path.
    """

    def __init__(self, conv: nn.Conv2d, x: torch.Tensor) -> None:
        self.stride, self.dilation, self.groups = conv.stride, conv.dilation, conv.groups
        self.pad: tuple[int, int, int, int] | None = None
        if isinstance(conv, Conv2dSame):
            top, bottom, left, right = conv.same_pads(x)
            if top or bottom or left or right:
                self.pad = (left, right, top, bottom)
            self.padding = (0, 0)
        else:
            if isinstance(conv.padding, str):
                raise ValueError("memory-efficient convs need numeric padding")
            self.padding = conv.padding
        self.has_bias = conv.bias is not None
        self.depthwise = isinstance(conv, DepthwiseConv2d | DepthwiseConv2dSame)
        left, right, top, bottom = self.pad or (self.padding[1],) * 2 + (self.padding[0],) * 2
        self.pads = (top, bottom, left, right)

    def forward(self, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        if self.depthwise:
            return depthwise_forward(x, weight, bias, self.stride, self.pads)
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def backward(self, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                 mask: list[bool]) -> tuple[torch.Tensor | None, ...]:
        if self.depthwise:
            return depthwise_backward(grad, x, weight, self.stride, self.pads,
                                      (mask[0], mask[1], mask[2] and self.has_bias))
        if self.pad is not None:
            x = F.pad(x, self.pad)
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[0]] if self.has_bias else None, list(self.stride),
            list(self.padding), list(self.dilation), False, [0, 0], self.groups, mask)
        if gx is not None and self.pad is not None:
            left, right, top, bottom = self.pad
            gx = gx[..., top:gx.shape[-2] - bottom, left:gx.shape[-1] - right]
        return gx, gw, gb


class _BNAct(torch.autograd.Function):
    """a = act(bn(z)) in training mode, saving z and the batch statistics only."""

    @staticmethod
    def forward(ctx, z, weight, bias, bn, act):  # type: ignore[override]
        out, mean, invstd = _bn_train(z, bn)
        out = _act_(act, out)
        ctx.save_for_backward(z, weight, bias, mean, invstd)
        ctx.act, ctx.eps = act, bn.eps
        ctx.mark_non_differentiable(mean, invstd)
        return out, mean, invstd

    @staticmethod
    def backward(ctx, grad, _gmean, _ginvstd):  # type: ignore[override]
        z, weight, bias, mean, invstd = ctx.saved_tensors
        u = _recompute_bn(z, weight, bias, mean, invstd)
        gu = _act_backward(ctx.act, grad.to(u.dtype), u)
        gz, gw, gb = _bn_backward(gu, z, weight, mean, invstd, ctx.eps,
                                  list(ctx.needs_input_grad[:3]))
        return gz, gw, gb, None, None


class _BNActConv(torch.autograd.Function):
    """y = conv(act(bn(z))), saving z and the batch statistics, not act(bn(z))."""

    @staticmethod
    def forward(ctx, z, weight, bias, conv_weight, conv_bias, bn, act, geom):  # type: ignore[override]
        a, mean, invstd = _bn_train(z, bn)
        a = _act_(act, a)
        dt = _autocast_dtype(z)
        with torch.autocast(z.device.type, enabled=False):
            if dt is not None:
                a = a.to(dt)
            cw, cb = _conv_operands(dt, conv_weight, conv_bias)
            y = geom.forward(a, cw, cb)
        ctx.save_for_backward(z, weight, bias, mean, invstd, conv_weight)
        ctx.act, ctx.eps, ctx.geom, ctx.conv_dtype = act, bn.eps, geom, a.dtype
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        z, weight, bias, mean, invstd, conv_weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        u = _recompute_bn(z, weight, bias, mean, invstd)
        a = F.silu(u) if ctx.act == "silu" else _act_(ctx.act, u.clone())
        a = a.to(ctx.conv_dtype)
        bn_mask = list(need[:3])
        ga, gcw, gcb = ctx.geom.backward(grad.to(ctx.conv_dtype), a,
                                         conv_weight.to(ctx.conv_dtype),
                                         [any(bn_mask), need[3], need[4]])
        del a
        gz = gw = gb = None
        if any(bn_mask):
            gu = _act_backward(ctx.act, ga.to(u.dtype), u)
            gz, gw, gb = _bn_backward(gu, z, weight, mean, invstd, ctx.eps, bn_mask)
        if gcw is not None:
            gcw = gcw.to(conv_weight.dtype)
        if gcb is not None:
            gcb = gcb.to(conv_weight.dtype)
        return gz, gw, gb, gcw, gcb, None, None, None


class _GateConv(torch.autograd.Function):
    """y = conv(a * g) for the SE gate g, recomputing a = act(bn(z)) and a * g in backward.

    `a` itself is not saved: only z (already kept by the batch norm before it),
    the batch statistics and the per-sample, per-channel gate g.
    """

    @staticmethod
    def forward(ctx, a, g, z, weight, bias, mean, invstd, conv_weight, conv_bias, act,  # type: ignore[override]
                geom):
        dt = _autocast_dtype(a)
        with torch.autocast(a.device.type, enabled=False):
            gated = a * g
            if dt is not None:
                gated = gated.to(dt)
            cw, cb = _conv_operands(dt, conv_weight, conv_bias)
            y = geom.forward(gated, cw, cb)
        ctx.save_for_backward(g, z, weight, bias, mean, invstd, conv_weight)
        ctx.act, ctx.geom, ctx.a_dtype, ctx.conv_dtype = act, geom, a.dtype, gated.dtype
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        g, z, weight, bias, mean, invstd, conv_weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        u = _recompute_bn(z, weight, bias, mean, invstd)
        a = _act_(ctx.act, u).to(ctx.a_dtype)
        del u
        gated = (a * g).to(ctx.conv_dtype)
        ggated, gcw, gcb = ctx.geom.backward(grad.to(ctx.conv_dtype), gated,
                                             conv_weight.to(ctx.conv_dtype),
                                             [need[0] or need[1], need[7], need[8]])
        del gated
        ga = gg = None
        if ggated is not None:
            ggated = ggated.to(ctx.a_dtype)
            if need[1]:
                gg = (ggated * a).sum((2, 3), keepdim=True).to(g.dtype)
            if need[0]:
                ga = ggated * g
        if gcw is not None:
            gcw = gcw.to(conv_weight.dtype)
        if gcb is not None:
            gcb = gcb.to(conv_weight.dtype)
        return ga, gg, None, None, None, None, None, gcw, gcb, None, None


def _bn_ok(bn: nn.Module) -> bool:
    return (isinstance(bn, nn.BatchNorm2d) and bn.training and bn.affine
            and bn.track_running_stats)


def _efficient_ok(x: torch.Tensor, *units: nn.Module) -> bool:
    """Use the recomputing path only in training with grad, on units it understands."""
    if not (torch.is_grad_enabled() and x.ndim == 4):
        return False
    for u in units:
        if isinstance(u, ConvBNAct) and not (_bn_ok(u.bn) and _act_name(u.act) is not None
                                             and not isinstance(u.conv.padding, str)):
            return False
    return True


def bn_act(unit: ConvBNAct, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """act(bn(z)) of a ConvBNAct unit, keeping only z for backward; also the batch stats."""
    return _BNAct.apply(z, unit.bn.weight, unit.bn.bias, unit.bn, _act_name(unit.act))


def bn_act_conv(unit: ConvBNAct, z: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv(act(bn(z))) for `unit`'s norm and activation, keeping only z for backward."""
    return _BNActConv.apply(z, unit.bn.weight, unit.bn.bias, conv.weight, conv.bias, unit.bn,
                            _act_name(unit.act), _ConvGeometry(conv, z))


class MemoryEfficientConvBNAct(ConvBNAct):
    """ConvBNAct whose batch norm + activation keep only the conv output for backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _efficient_ok(x, self):
            return super().forward(x)
        return bn_act(self, self.conv(x))[0]


class MemoryEfficientMBConv(MBConv):
    """MBConv that keeps the block input and the two pre-norm conv outputs for backward.

    Saved per block: x (by the expand conv), z1 = expand(x), z2 = dw(a1) and the
    projection output, instead of about seven expanded-width tensors. a1, a2 and
    the SE-gated tensor are recomputed from z1, z2 in backward. In this path the
    block calls its convs and norms directly, so forward hooks registered on the
    inner expand / dw / se units do not fire (hooks on the block itself do).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        units = [m for m in (self.expand, self.dw, self.project) if isinstance(m, ConvBNAct)]
        se_ok = isinstance(self.se, nn.Identity) or (
            type(self.se) is SqueezeExcite and _act_name(self.se.act) is not None)
        if not (se_ok and _efficient_ok(x, *units) and _bn_ok(self.project.bn)):
            return super().forward(x)
        if isinstance(self.expand, ConvBNAct):
            z2 = bn_act_conv(self.expand, self.expand.conv(x), self.dw.conv)
        else:
            z2 = self.dw.conv(x)
        dw = self.dw
        if isinstance(self.se, SqueezeExcite):
            a2, mean, invstd = bn_act(dw, z2)
            se = self.se
            s = se.expand(se.act(se.reduce(a2.mean((2, 3), keepdim=True))))
            gate = torch.sigmoid(s)
            proj = self.project.conv
            z3 = _GateConv.apply(a2, gate, z2, dw.bn.weight, dw.bn.bias, mean, invstd,
                                 proj.weight, proj.bias, _act_name(dw.act),
                                 _ConvGeometry(proj, a2))
        else:
            z3 = bn_act_conv(dw, z2, self.project.conv)
        y = self.project.act(self.project.bn(z3))
        if self.has_skip:
            y = self.drop_path(y) + x
        return y


_SWAPS: dict[type, type] = {ConvBNAct: MemoryEfficientConvBNAct, MBConv: MemoryEfficientMBConv}
_UNSWAPS: dict[type, type] = {v: k for k, v in _SWAPS.items()}


def set_memory_efficient(model: nn.Module, enable: bool = True) -> nn.Module:
    """Switch every ConvBNAct and MBConv of `model` to (or back from) the memory-efficient form.

    Only the classes change: parameters, buffers and state-dict keys stay, and
    the memory-efficient forward falls back to the plain one outside training.
    """
    table = _SWAPS if enable else _UNSWAPS
    for m in model.modules():
        new = table.get(type(m))
        if new is not None:
            m.__class__ = new
    return model


@contextlib.contextmanager
def _keep_bn_stats(module: nn.Module) -> Iterator[None]:
    """Undo batch-norm running-stat updates made inside (the recomputed forward)."""
    saved = [(b, b.clone()) for m in module.modules() if isinstance(m, nn.BatchNorm2d)
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


class CheckpointedStage(nn.Sequential):
    """A stage of blocks recomputed in backward: only its input is kept (activation checkpointing).

    Batch-norm running statistics are updated once, as without checkpointing,
    and stochastic-depth masks are replayed from the saved RNG state.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return super().forward(x)
        return checkpoint(super().forward, x, use_reentrant=False,
                          context_fn=lambda: (contextlib.nullcontext(), _keep_bn_stats(self)))


def set_grad_checkpointing(stages: nn.Sequential, enable: bool = True) -> None:
    """Make each stage (an nn.Sequential of blocks) of `stages` checkpointed, or plain again."""
    for stage in stages:
        if type(stage) in (nn.Sequential, CheckpointedStage):
            stage.__class__ = CheckpointedStage if enable else nn.Sequential
