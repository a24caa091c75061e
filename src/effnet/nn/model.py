"""The EfficientNet module: stem, stages of blocks, head, pooling and classifier."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..spec import NetworkSpec
from .blocks import BLOCKS
from .layers import TF_BN_EPS, TF_BN_MOMENTUM, ConvBNAct


class FeatureInfo(list):
    """Per feature map: channels (`num_chs`), stride (`reduction`) and the producing module."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


class EfficientNet(nn.Module):
    """A ConvNet built from a :class:`~effnet.spec.NetworkSpec`.

    Stem conv (stride 2), stages of blocks, 1x1 head conv, global average
    pooling, dropout and a linear classifier (paper Table 1). With
    `features_only`, the head is dropped and `forward` returns the feature
    maps at strides 2, 4, 8, 16 and 32 (picked by `out_indices`).
    """

    def __init__(self, spec: NetworkSpec, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.2, drop_path_rate: float = 0.2, padding: str = "symmetric",
                 bn_eps: float = TF_BN_EPS, bn_momentum: float = TF_BN_MOMENTUM,
                 features_only: bool = False, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        if num_classes < 0 or in_chans < 1:
            raise ValueError("num_classes must be >= 0 and in_chans >= 1")
        if not 0.0 <= drop_rate < 1.0 or not 0.0 <= drop_path_rate < 1.0:
            raise ValueError("drop_rate and drop_path_rate must be in [0, 1)")
        self.spec = spec
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.padding = padding
        self.bn_eps = bn_eps
        norm = {"padding": padding, "bn_eps": bn_eps, "bn_momentum": bn_momentum}
        act = spec.activation

        self.stem = ConvBNAct(in_chans, spec.stem_channels, spec.stem_kernel, spec.stem_stride,
                              act=act, **norm)
        in_ch, reduction, idx = spec.stem_channels, spec.stem_stride, 0
        total = spec.num_blocks
        stages, info = [], FeatureInfo()
        for s_idx, st in enumerate(spec.stages):
            block_cls = BLOCKS[st.block]
            blocks = []
            for r in range(st.repeats):
                stride = st.stride if r == 0 else 1
                blocks.append(block_cls(in_ch, st.out_channels, st.kernel, stride, st.expand_ratio,
                                        se_ratio=st.se_ratio, act=act,
                                        drop_path_rate=drop_path_rate * idx / total, **norm))
                in_ch, idx = st.out_channels, idx + 1
            reduction *= st.stride
            stages.append(nn.Sequential(*blocks))
            entry = {"num_chs": in_ch, "reduction": reduction, "module": f"blocks.{s_idx}",
                     "stage": s_idx}
            if info and info[-1]["reduction"] == reduction:
                info[-1] = entry
            else:
                info.append(entry)
        self.blocks = nn.Sequential(*stages)
        self.features_only = features_only
        if features_only:
            out_indices = tuple(range(len(info))) if out_indices is None else tuple(out_indices)
            bad = [i for i in out_indices if not -len(info) <= i < len(info)]
            if bad or not out_indices:
                raise ValueError(f"out_indices {list(out_indices)} out of range: this model has "
                                 f"{len(info)} feature levels (0..{len(info) - 1})")
            self.out_indices = tuple(i % len(info) for i in out_indices)
            self.feature_info = FeatureInfo(info[i] for i in self.out_indices)
            self._last_stage = max(f["stage"] for f in self.feature_info)
            self.blocks = self.blocks[: self._last_stage + 1]
            self.head = nn.Identity()
            self.num_features = 0
        else:
            self.feature_info = info
            self.num_features = spec.head_channels or in_ch
            self.head = (ConvBNAct(in_ch, spec.head_channels, 1, act=act, **norm)
                         if spec.head_channels else nn.Identity())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(drop_rate)
            self.classifier = (nn.Linear(self.num_features, num_classes) if num_classes
                               else nn.Identity())
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, blocks and head conv: the last feature map before pooling."""
        return self.head(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooling, dropout and classifier; `pre_logits` stops before the classifier."""
        x = self.dropout(self.pool(x).flatten(1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self._forward_feature_maps(x)
        return self.forward_head(self.forward_features(x))

    def _forward_feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        wanted = {f["stage"] for f in self.feature_info}
        x = self.stem(x)
        out = []
        for s_idx, stage in enumerate(self.blocks):
            x = stage(x)
            if s_idx in wanted:
                out.append(x)
        return out

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write weights (model.safetensors) and config.json to `directory`, atomically.

        `effnet.create_model(pretrained=directory)` rebuilds the model from it.
        """
        from ..weights.io import save_pretrained

        return save_pretrained(self, directory)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for `num_classes` (0 removes it)."""
        if self.features_only:
            raise ValueError("a features_only model has no classifier")
        self.num_classes = num_classes
        self.classifier = (nn.Linear(self.num_features, num_classes) if num_classes
                           else nn.Identity())
        if num_classes:
            init_weights(self.classifier)

    def set_memory_efficient(self, enable: bool = True) -> EfficientNet:
        """Recompute BN, activations and SE gating in backward instead of storing them.

        Same outputs, gradients and state dict; see :mod:`effnet.nn.efficient`.
        """
        from .efficient import set_memory_efficient

        return set_memory_efficient(self, enable)

    def set_grad_checkpointing(self, enable: bool = True) -> EfficientNet:
        """Activation checkpointing per stage: keep stage inputs, recompute the rest in backward."""
        from .efficient import set_grad_checkpointing

        set_grad_checkpointing(self.blocks, enable)
        return self


def init_weights(module: nn.Module) -> None:
    """Initialise as the reference TF code does.

    Convs: normal(0, sqrt(2 / fan_out)) with fan_out = k*k*out/groups; the
    classifier: uniform(+-1/sqrt(num_classes)); biases 0; BN weight 1, bias 0.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
