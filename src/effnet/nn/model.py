"""The EfficientNet classifier: stem, stages of blocks, head, pooling and classifier.

The module follows timm's model contract (`forward_features`, `forward_head`,
`forward_intermediates`, `prune_intermediate_layers`, `reset_classifier`,
`group_matcher`, `set_grad_checkpointing`), so code written for timm's
EfficientNet runs on it unchanged. The feature-extractor variant
(`features_only=True` in `create_model`) is :class:`~effnet.nn.features.EfficientNetFeatures`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import EffnetError, check_int
from ..spec import NetworkSpec
from .blocks import BLOCKS
from .efficient import set_grad_checkpointing, set_memory_efficient
from .layers import TF_BN_EPS, TF_BN_MOMENTUM, ConvBNAct


class FeatureInfo(list):
    """Per feature level: channels (`num_chs`), stride (`reduction`), module and stage.

    `stage` is the index of the producing stage in `model.blocks`; `index` is
    the level's position among all levels (timm's `feature_info` entries).
    """

    def channels(self) -> list[int]:
        """Channels of each level."""
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        """Stride of each level relative to the input."""
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        """Name of the module producing each level."""
        return [f["module"] for f in self]

    def get_dicts(self) -> list[dict[str, Any]]:
        """The levels as plain dicts (timm's FeatureInfo.get_dicts)."""
        return [dict(f) for f in self]


def feature_take_indices(num_levels: int, indices: int | Sequence[int] | None
                         ) -> tuple[list[int], int]:
    """Absolute level indices to return and the largest one, with timm's conventions.

    None takes every level, an int n the last n, a sequence the listed levels
    (negative ones count from the end).
    """
    if indices is None:
        indices = num_levels
    if isinstance(indices, int):
        if not 0 < indices <= num_levels:
            raise EffnetError(f"indices={indices} takes the last n levels: use 1..{num_levels}")
        take = list(range(num_levels - indices, num_levels))
    else:
        take = [num_levels + i if i < 0 else int(i) for i in indices]
        bad = [i for i in take if not 0 <= i < num_levels]
        if bad or not take:
            raise EffnetError(f"feature indices {list(indices)} out of range: this model has "
                              f"{num_levels} feature levels (0..{num_levels - 1})")
    return take, max(take)


class Trunk(nn.Module):
    """Stem and stages of blocks built from a spec: the part classifier and feature model share.

    Block i of N (0-based) gets stochastic-depth rate `drop_path_rate * i / N`.
    """

    def __init__(self, spec: NetworkSpec, in_chans: int = 3, drop_path_rate: float = 0.2,
                 padding: str = "symmetric", bn_eps: float = TF_BN_EPS,
                 bn_momentum: float = TF_BN_MOMENTUM) -> None:
        super().__init__()
        if in_chans < 1:
            raise EffnetError(f"in_chans must be >= 1, got {in_chans}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise EffnetError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.spec = spec
        self.in_chans = in_chans
        self.drop_path_rate = float(drop_path_rate)
        self.padding = padding
        self.bn_eps = bn_eps
        self.grad_checkpointing = False
        norm = {"padding": padding, "bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.stem = ConvBNAct(in_chans, spec.stem_channels, spec.stem_kernel, spec.stem_stride,
                              act=spec.activation, **norm)
        in_ch, reduction, idx = spec.stem_channels, spec.stem_stride, 0
        stages, info = [], FeatureInfo()
        for s_idx, st in enumerate(spec.stages):
            blocks = []
            for r in range(st.repeats):
                blocks.append(BLOCKS[st.block](
                    in_ch, st.out_channels, st.kernel, st.stride if r == 0 else 1,
                    st.expand_ratio, se_ratio=st.se_ratio, act=spec.activation,
                    drop_path_rate=drop_path_rate * idx / spec.num_blocks, **norm))
                in_ch, idx = st.out_channels, idx + 1
            reduction *= st.stride
            stages.append(nn.Sequential(*blocks))
            level = {"num_chs": in_ch, "reduction": reduction, "module": f"blocks.{s_idx}",
                     "stage": s_idx}
            if info and info[-1]["reduction"] == reduction:
                info[-1] = level  # a level is the last stage at its stride
            else:
                info.append(level)
        for i, level in enumerate(info):
            level["index"] = i
        self.blocks = nn.Sequential(*stages)
        self.feature_info = info
        self.trunk_channels = in_ch

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay, as timm's EfficientNet has them."""
        return {"stem": r"^stem\.",
                "blocks": [(r"^blocks\.(\d+)" if coarse else r"^blocks\.(\d+)\.(\d+)", None),
                           (r"^head\.", (99999,))]}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> nn.Module:
        """Activation checkpointing per stage: keep stage inputs, recompute the rest in backward."""
        set_grad_checkpointing(self.blocks, enable)
        self.grad_checkpointing = enable
        return self

    @torch.jit.ignore
    def set_memory_efficient(self, enable: bool = True) -> nn.Module:
        """Recompute BN, activations and SE gating in backward instead of storing them.

        Same outputs, gradients and state dict; see :mod:`effnet.nn.efficient`.
        """
        return set_memory_efficient(self, enable)

    @torch.jit.ignore
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write weights (model.safetensors) and config.json to `directory`, atomically.

        `effnet.create_model(pretrained=directory)` rebuilds the model from it.
        """
        from ..weights.pretrained import save_pretrained

        return save_pretrained(self, directory)


class EfficientNet(Trunk):
    """A ConvNet built from a :class:`~effnet.spec.NetworkSpec`, returning logits.

    Stem conv (stride 2), stages of blocks, 1x1 head conv, global average
    pooling, dropout and a linear classifier (paper Table 1).
    `pretrained_cfg` is the preprocessing (timm's dict: input_size, mean,
    std, crop_pct, interpolation, num_classes, ...); `model_name` defaults to
    the spec's name.
    """

    features_only = False
    __jit_unused_properties__ = ["default_cfg"]  # TorchScript skips it

    def __init__(self, spec: NetworkSpec, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.2, drop_path_rate: float = 0.2, padding: str = "symmetric",
                 bn_eps: float = TF_BN_EPS, bn_momentum: float = TF_BN_MOMENTUM,
                 pretrained_cfg: dict[str, Any] | None = None,
                 model_name: str | None = None) -> None:
        super().__init__(spec, in_chans, drop_path_rate, padding, bn_eps, bn_momentum)
        if num_classes < 0:
            raise EffnetError(f"num_classes must be >= 0, got {num_classes}")
        if not 0.0 <= drop_rate < 1.0:
            raise EffnetError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.model_name = model_name or spec.name
        self.pretrained_cfg = dict(pretrained_cfg or {})
        self.stage_ends = [f["stage"] + 1 for f in self.feature_info]  # 0 is the stem
        self.num_features = spec.head_channels or self.trunk_channels
        self.head_hidden_size = self.num_features
        self.head = (ConvBNAct(self.trunk_channels, spec.head_channels, 1, act=spec.activation,
                               padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum)
                     if spec.head_channels else nn.Identity())
        self.global_pool = "avg"
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = True
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = self._new_classifier(num_classes)
        init_weights(self)

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name for `pretrained_cfg`."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg

    def _new_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, blocks and head conv: the last feature map before pooling."""
        return self.head(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooling, dropout and classifier; `pre_logits` stops before the classifier."""
        x = self.pool(x)
        if self.flatten:
            x = x.flatten(1)
        x = self.dropout(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes); pooled features when num_classes is 0."""
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps at `indices` (levels of `feature_info`), and the final features.

        timm's semantics: None takes every level, an int n the last n;
        `stop_early` skips the stages after the last level taken; with
        `intermediates_only` only the list comes back, else (final, list),
        where `final` is `forward_features(x)` when every stage ran.
        """
        if output_fmt != "NCHW":
            raise EffnetError(f"output_fmt={output_fmt!r} is not supported: use 'NCHW'")
        take, last = feature_take_indices(len(self.stage_ends), indices)
        wanted = {self.stage_ends[i] for i in take}
        stages = self.blocks[: self.stage_ends[last]] if stop_early else self.blocks
        x = self.stem(x)
        out = [x] if 0 in wanted else []
        done = 0
        for done, stage in enumerate(stages, start=1):
            x = stage(x)
            if done in wanted:
                out.append(x)
        if intermediates_only:
            return out
        if done == len(self.blocks):
            x = self.head(x)
        return x, out

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last level in `indices`, and the head (timm's semantics).

        The head conv goes when stages are cut or `prune_head`/`prune_norm`
        asks; the classifier and pooling go with `prune_head`. Returns the
        absolute level indices kept.
        """
        take, last = feature_take_indices(len(self.stage_ends), indices)
        end = self.stage_ends[last]
        prune_end = prune_norm or prune_head or end < len(self.blocks)
        self.blocks = self.blocks[:end]
        if prune_end:
            self.head = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The final linear layer (nn.Identity when num_classes is 0)."""
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for `num_classes` (0 removes it); `global_pool` 'avg' or ''."""
        num_classes = check_int(num_classes, "num_classes", 0)
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise EffnetError(f"global_pool={global_pool!r} is not supported: use 'avg' "
                                  "or '' (no pooling)")
            self.global_pool = global_pool
            self.pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
            self.flatten = bool(global_pool)
        self.num_classes = num_classes
        p = next(self.parameters(), None)
        self.classifier = self._new_classifier(num_classes)
        if num_classes:
            init_weights(self.classifier)
            if p is not None:
                self.classifier.to(device=p.device, dtype=p.dtype)
        self.classifier.train(self.training)


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
