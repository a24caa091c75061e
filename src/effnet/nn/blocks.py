"""The blocks a stage repeats: MBConv (EfficientNet, MobileNetV2) and the ResNet bottleneck."""

from __future__ import annotations

import torch
from torch import nn

from .layers import (
    TF_BN_EPS,
    TF_BN_MOMENTUM,
    ConvBNAct,
    DropPath,
    SqueezeExcite,
    make_activation,
)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation (paper Table 1, Sec. 4).

    1x1 expand (skipped when expand_ratio is 1), kxk depthwise, SE reduced from
    the block's input channels, 1x1 linear projection, and an identity skip
    with stochastic depth when stride is 1 and channels are unchanged.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand_ratio: float,
                 se_ratio: float = 0.25, act: str = "silu", drop_path_rate: float = 0.0,
                 padding: str = "symmetric", bn_eps: float = TF_BN_EPS,
                 bn_momentum: float = TF_BN_MOMENTUM) -> None:
        super().__init__()
        bn = {"padding": padding, "bn_eps": bn_eps, "bn_momentum": bn_momentum}
        mid = int(round(in_ch * expand_ratio))
        self.expand = (ConvBNAct(in_ch, mid, 1, act=act, **bn) if expand_ratio != 1
                       else nn.Identity())
        self.dw = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act, **bn)
        reduced = max(1, int(in_ch * se_ratio))
        self.se = SqueezeExcite(mid, reduced, act) if se_ratio > 0 else nn.Identity()
        self.project = ConvBNAct(mid, out_ch, 1, act="identity", **bn)
        self.has_skip = stride == 1 and in_ch == out_ch
        self.drop_path = DropPath(drop_path_rate) if self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        if self.has_skip:
            y = self.drop_path(y) + x
        return y


class Bottleneck(nn.Module):
    """ResNet bottleneck (He et al. 2016): 1x1 reduce, kxk (strided), 1x1 expand, residual.

    `reduction` is the inner width as a fraction of `out_ch` (0.25 in ResNet-50).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, reduction: float,
                 se_ratio: float = 0.0, act: str = "relu", drop_path_rate: float = 0.0,
                 padding: str = "symmetric", bn_eps: float = TF_BN_EPS,
                 bn_momentum: float = TF_BN_MOMENTUM) -> None:
        super().__init__()
        bn = {"padding": padding, "bn_eps": bn_eps, "bn_momentum": bn_momentum}
        mid = max(1, int(round(out_ch * reduction)))
        self.reduce = ConvBNAct(in_ch, mid, 1, act=act, **bn)
        self.conv = ConvBNAct(mid, mid, kernel, stride, act=act, **bn)
        self.se = SqueezeExcite(mid, max(1, int(in_ch * se_ratio)), act) if se_ratio > 0 \
            else nn.Identity()
        self.expand = ConvBNAct(mid, out_ch, 1, act="identity", **bn)
        self.shortcut = (ConvBNAct(in_ch, out_ch, 1, stride, act="identity", **bn)
                         if stride != 1 or in_ch != out_ch else nn.Identity())
        self.drop_path = DropPath(drop_path_rate)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(self.se(self.conv(self.reduce(x))))
        return self.act(self.drop_path(y) + self.shortcut(x))


BLOCKS = {"mbconv": MBConv, "bottleneck": Bottleneck}
