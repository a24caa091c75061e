"""Building layers: convolution + batch norm + activation, SE, stochastic depth."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EffnetError
from .depthwise import depthwise_conv2d

PADDING_MODES = ("symmetric", "same")

# TF BatchNormalization momentum 0.99 is PyTorch momentum 0.01 (paper Section 5.2).
TF_BN_MOMENTUM = 0.01
TF_BN_EPS = 1e-3


# The one list of activations a spec may name (paper: SiLU/swish for EfficientNet, ReLU6 for
# Lite and MobileNetV2, ReLU for ResNet).
ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu6": nn.ReLU6, "relu": nn.ReLU,
                                           "identity": nn.Identity}


def make_activation(name: str) -> nn.Module:
    """The activation module for a spec's activation name."""
    if name not in ACTIVATIONS:
        raise EffnetError(f"unknown activation {name!r}: use {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def activation_name(module: nn.Module) -> str | None:
    """The name of an activation module of ACTIVATIONS (None for any other module)."""
    return next((n for n, cls in ACTIVATIONS.items() if type(module) is cls), None)


def apply_activation(name: str, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """The activation `name` as a function, optionally in place."""
    if name == "silu":
        return F.silu(x, inplace=inplace)
    if name == "relu6":
        return F.hardtanh(x, 0.0, 6.0, inplace=inplace)
    if name == "relu":
        return F.relu(x, inplace=inplace)
    return x


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) for one spatial dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A Conv2d with TensorFlow 'SAME' padding, computed from each input's size.

    TF pads the extra pixel after (bottom/right) when the total is odd, which
    differs from PyTorch's symmetric padding on stride-2 convs at even sizes.
    """

    def same_pads(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) TF 'SAME' padding for input `x`."""
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0],
                                   self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1],
                                   self.dilation[1])
        return top, bottom, left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._same_forward(x)

    def _same_forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.same_pads(x)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return self._conv_forward(x, self.weight, self.bias)


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise nn.Conv2d (groups = channels) run by :func:`depthwise_conv2d`.

    Same parameters, state-dict keys and outputs as nn.Conv2d; taps that only
    meet padding are skipped and, on CPU, the weight gradient is computed
    directly where that is faster (`effnet.nn.depthwise`). TorchScript gets
    nn.Conv2d's forward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._conv_forward(x, self.weight, self.bias)
        return self._depthwise(x)

    @torch.jit.unused
    def _depthwise(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding  # type: ignore[misc]
        return depthwise_conv2d(x, self.weight, self.bias, self.stride,  # type: ignore[arg-type]
                                (ph, ph, pw, pw))


class DepthwiseConv2dSame(Conv2dSame):
    """A depthwise Conv2dSame (TF 'SAME' padding) run by :func:`depthwise_conv2d`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._same_forward(x)
        return self._depthwise(x)

    @torch.jit.unused
    def _depthwise(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, self.stride,  # type: ignore[arg-type]
                                self.same_pads(x))


def make_conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
              bias: bool = False, padding: str = "symmetric") -> nn.Conv2d:
    """A 2D convolution with symmetric or TF 'same' padding.

    With 'same', only strided convs need per-input padding; stride-1 convs with
    odd kernels pad symmetrically in both modes. Depthwise convs (groups = in =
    out channels, kernel > 1) are :class:`DepthwiseConv2d` /
    :class:`DepthwiseConv2dSame`.
    """
    if padding not in PADDING_MODES:
        raise EffnetError(f"unknown padding {padding!r}: use one of {PADDING_MODES}")
    depthwise = groups == in_ch == out_ch and kernel > 1
    if padding == "same" and stride > 1:
        cls = DepthwiseConv2dSame if depthwise else Conv2dSame
        return cls(in_ch, out_ch, kernel, stride, padding=0, groups=groups, bias=bias)
    cls = DepthwiseConv2d if depthwise else nn.Conv2d
    return cls(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, groups=groups,
               bias=bias)


class ConvBNAct(nn.Sequential):
    """Convolution, batch norm and an optional activation."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: str = "silu", padding: str = "symmetric", bn_eps: float = TF_BN_EPS,
                 bn_momentum: float = TF_BN_MOMENTUM) -> None:
        super().__init__()
        self.conv = make_conv(in_ch, out_ch, kernel, stride, groups, padding=padding)
        self.bn = nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum)
        self.act = make_activation(act)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as used in MBConv.

    Global average pool, 1x1 reduce, activation, 1x1 expand, sigmoid gate. The
    reduced width comes from the block's input channels, not the expanded ones.
    """

    def __init__(self, channels: int, reduced: int, act: str = "silu") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = make_activation(act)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.expand(self.act(self.reduce(s)))
        return x * torch.sigmoid(s)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): drop whole samples' residual branches.

    Survivors are divided by the keep probability, as in the reference code.
    """
    if p <= 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"
