"""The feature extractor: stem and stages only, returning a list of feature maps.

What `create_model(..., features_only=True)` returns, as timm's
`EfficientNetFeatures`: a backbone for detection and segmentation heads.
Its state-dict keys are those of the classifier model without head and
classifier, so a full checkpoint loads into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import EffnetError
from ..spec import NetworkSpec
from .layers import TF_BN_EPS, TF_BN_MOMENTUM
from .model import FeatureInfo, Trunk, feature_take_indices, init_weights


class EfficientNetFeatures(Trunk):
    """Feature maps at the strides of `feature_info`, picked by `out_indices`.

    B0 has five levels, at strides 2, 4, 8, 16 and 32. Stages after the last
    level asked for are not built.
    """

    features_only = True
    num_classes = 0
    drop_rate = 0.0

    def __init__(self, spec: NetworkSpec, out_indices: Sequence[int] | None = None,
                 in_chans: int = 3, drop_path_rate: float = 0.2, padding: str = "symmetric",
                 bn_eps: float = TF_BN_EPS, bn_momentum: float = TF_BN_MOMENTUM,
                 pretrained_cfg: dict[str, Any] | None = None,
                 model_name: str | None = None) -> None:
        super().__init__(spec, in_chans, drop_path_rate, padding, bn_eps, bn_momentum)
        levels = self.feature_info
        try:
            take, _ = feature_take_indices(len(levels), list(out_indices) if out_indices
                                           is not None else None)
        except EffnetError as err:
            raise EffnetError(f"out_indices: {err}") from None
        self.out_indices = tuple(take)
        self.feature_info = FeatureInfo(levels[i] for i in take)
        self._out_stages = [int(f["stage"]) for f in self.feature_info]
        self.blocks = self.blocks[: max(self._out_stages) + 1]
        self.model_name = model_name or spec.name
        self.pretrained_cfg = dict(pretrained_cfg or {})
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps of `out_indices`, shallowest first."""
        x = self.stem(x)
        out: list[torch.Tensor] = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self._out_stages:
                out.append(x)
        return out
