"""`create_model` and `list_models`: the timm-shaped entry points."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from .nn.layers import PADDING_MODES, TF_BN_EPS
from .nn.model import EfficientNet
from .scaling import CompoundScaling, scale
from .zoo import MODELS, canonical_name


def list_models(pattern: str = "*") -> list[str]:
    """Names of the named models (b0..b8, l2, lite0..lite4), filtered by a glob pattern."""
    return [n for n in MODELS if fnmatch.fnmatch(n, pattern)]


def create_model(name: str, pretrained: Any = None, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float | None = None, drop_path_rate: float | None = None,
                 features_only: bool = False, out_indices: Sequence[int] | None = None,
                 padding: str | None = None, bn_eps: float | None = None,
                 phi: float | None = None, scaling: CompoundScaling | None = None,
                 **kwargs: Any) -> EfficientNet:
    """Build a named EfficientNet, or a compound-scaled one with `phi` (paper Eq. 3).

    `name` is b0..b8, l2 or lite0..lite4 (an 'efficientnet_' prefix is
    accepted). With `phi`, the model is `name`'s baseline scaled by
    `scaling.coefficients(phi)` (default alpha=1.2, beta=1.1, gamma=1.15).
    `padding` is 'symmetric' (default, PyTorch style) or 'same' (TensorFlow
    SAME, for TF-ported weights). `bn_eps` defaults to TF's 1e-3; timm's
    `efficientnet_*` and torchvision's b0..b4 weights use 1e-5. `pretrained`
    loads weights (a path, a state dict, or 'packaged').
    """
    entry = MODELS[canonical_name(name)]
    padding = padding or "symmetric"
    if padding not in PADDING_MODES:
        raise ValueError(f"unknown padding {padding!r}: use one of {', '.join(PADDING_MODES)}")
    cfg = entry.pretrained_cfg()
    if phi is not None:
        if entry.width_mult != 1.0 or entry.depth_mult != 1.0:
            raise ValueError(f"phi scales a baseline: use name='b0' or 'lite0', not {name!r}")
        coeffs = (scaling or CompoundScaling()).coefficients(phi, entry.resolution)
        spec = scale(entry.base, coeffs.width_mult, coeffs.depth_mult).with_(
            name=f"{entry.name}-phi{phi:g}")
        spec.meta.update(phi=float(phi), base=entry.name)
        cfg["input_size"] = (3, coeffs.resolution, coeffs.resolution)
        cfg["crop_pct"] = round(coeffs.resolution / (coeffs.resolution + 32), 3)
    else:
        spec = entry.spec
    if kwargs:
        raise TypeError(f"create_model got unexpected arguments: {', '.join(kwargs)}")
    model = EfficientNet(
        spec, num_classes=num_classes, in_chans=in_chans,
        drop_rate=entry.dropout if drop_rate is None else drop_rate,
        drop_path_rate=0.2 if drop_path_rate is None else drop_path_rate,
        padding=padding, bn_eps=TF_BN_EPS if bn_eps is None else bn_eps,
        features_only=features_only, out_indices=out_indices)
    cfg["num_classes"] = num_classes
    if in_chans != 3:
        cfg["input_size"] = (in_chans,) + tuple(cfg["input_size"][1:])
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    model.model_name = entry.name if phi is None else spec.name
    if pretrained is not None and pretrained is not False:
        from .weights import load_weights

        load_weights(model, pretrained)
    return model
