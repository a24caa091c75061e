"""`create_model` and `list_models`: the timm-shaped entry points."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from .errors import EffnetError, check_int
from .limits import check_model_size
from .nn.features import EfficientNetFeatures
from .nn.layers import PADDING_MODES, TF_BN_EPS
from .nn.model import EfficientNet
from .scaling import CompoundScaling, eval_crop_pct
from .spec import NetworkSpec
from .weights.load import load_weights
from .weights.pretrained import (
    is_pretrained_dir,
    pretrained_cfg_from_config,
    read_config,
    spec_from_config,
)
from .weights.read import PACKAGED
from .zoo import (  # list_models: re-exported
    MODELS,
    canonical_name,
    compound_scaled,
    list_models,  # noqa: F401
)

Model = EfficientNet | EfficientNetFeatures


def create_model(name: str | None = None, pretrained: Any = None, num_classes: int | None = None,
                 in_chans: int = 3,
                 drop_rate: float | None = None, drop_path_rate: float | None = None,
                 features_only: bool = False, out_indices: Sequence[int] | None = None,
                 padding: str | None = None, bn_eps: float | None = None,
                 phi: float | None = None, scaling: CompoundScaling | None = None,
                 spec: NetworkSpec | dict | str | os.PathLike | None = None,
                 **kwargs: Any) -> Model:
    """Build a named EfficientNet, or a compound-scaled one with `phi` (paper Eq. 3).

    `name` is b0..b8, l2 or lite0..lite4 (an 'efficientnet_' prefix is
    accepted). With `phi`, the model is `name`'s baseline scaled by
    `scaling.coefficients(phi)` (default alpha=1.2, beta=1.1, gamma=1.15).
    `padding` is 'symmetric' (default, PyTorch style) or 'same' (TensorFlow
    SAME, for TF-ported weights). `bn_eps` defaults to TF's 1e-3; timm's
    `efficientnet_*` and torchvision's b0..b4 weights use 1e-5. `num_classes`
    defaults to 1000.

    `pretrained` loads weights with `effnet.load_weights` (a file, a state
    dict, or 'packaged' for the Lite0 ImageNet weights; True means 'packaged'
    for lite0), which also sets the padding and BN eps the weights need. A
    folder written by `model.save_pretrained` restores that model: `name`
    may then be left out.

    `spec` builds any baseline instead of a named model: a
    :class:`~effnet.spec.NetworkSpec`, its dict, or the path of a spec.json
    (e.g. the baseline `effnet nas` found), at 224 px; with `phi` it is
    compound-scaled like B0 (paper Eq. 3).
    """
    _check_counts(num_classes, in_chans)
    if spec is not None:
        if name is not None:
            raise EffnetError("give create_model a model name or spec=, not both")
        return _from_spec(spec, pretrained=pretrained, num_classes=num_classes,
                          in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                          features_only=features_only, out_indices=out_indices,
                          padding=padding, bn_eps=bn_eps, phi=phi, scaling=scaling, **kwargs)
    if pretrained is True:
        pretrained = _default_pretrained(name)
    if pretrained is not None and pretrained is not False and is_pretrained_dir(pretrained):
        config = read_config(pretrained)
        if name is None:
            return _restore(pretrained, config, num_classes=num_classes, in_chans=in_chans,
                            drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                            features_only=features_only, out_indices=out_indices, **kwargs)
        if num_classes is None:
            num_classes = int(config.get("num_classes", 1000))
    if name is None:
        raise EffnetError("create_model needs a model name (one of "
                         f"{', '.join(MODELS)}), or pretrained=<folder from save_pretrained>")
    num_classes = 1000 if num_classes is None else num_classes
    entry = MODELS[canonical_name(name)]
    padding = padding or "symmetric"
    if padding not in PADDING_MODES:
        raise EffnetError(f"unknown padding {padding!r}: use one of {', '.join(PADDING_MODES)}")
    cfg = entry.pretrained_cfg()
    if phi is not None:
        spec, resolution = compound_scaled(name, phi, scaling)
        cfg["input_size"] = (3, resolution, resolution)
        cfg["crop_pct"] = eval_crop_pct(resolution)
    else:
        spec = entry.spec
    if kwargs:
        raise TypeError(f"create_model got unexpected arguments: {', '.join(kwargs)}")
    check_model_size(spec, cfg["input_size"][-1], in_chans, num_classes, activations=_real())
    cfg["num_classes"] = num_classes
    if in_chans != 3:
        cfg["input_size"] = (in_chans,) + tuple(cfg["input_size"][1:])
    model = build_model(
        spec, features_only=features_only, out_indices=out_indices,
        num_classes=num_classes, in_chans=in_chans,
        drop_rate=entry.dropout if drop_rate is None else drop_rate,
        drop_path_rate=0.2 if drop_path_rate is None else drop_path_rate,
        padding=padding, bn_eps=TF_BN_EPS if bn_eps is None else bn_eps,
        pretrained_cfg=cfg, model_name=entry.name if phi is None else spec.name)
    if pretrained is not None and pretrained is not False:
        load_weights(model, pretrained)
    return model


def _from_spec(spec: NetworkSpec | dict | str | os.PathLike, pretrained: Any = None,
               num_classes: int | None = None, in_chans: int = 3,
               drop_rate: float | None = None, drop_path_rate: float | None = None,
               padding: str | None = None, bn_eps: float | None = None,
               phi: float | None = None, scaling: CompoundScaling | None = None,
               **kwargs: Any) -> Model:
    """create_model(spec=...): a baseline given as data, B0's preprocessing, optional phi."""
    from .spec import load_spec, spec_from_dict

    if isinstance(spec, dict):
        spec = spec_from_dict(spec)
    elif not isinstance(spec, NetworkSpec):
        spec = load_spec(spec)
    padding = padding or "symmetric"
    if padding not in PADDING_MODES:
        raise EffnetError(f"unknown padding {padding!r}: use one of {', '.join(PADDING_MODES)}")
    entry = MODELS["b0"]
    cfg = entry.pretrained_cfg()
    name = spec.name
    if phi is not None:
        scaling = scaling or CompoundScaling()
        resolution = scaling.coefficients(phi, entry.resolution).resolution
        spec = scaling.scale(spec, phi)
        name = spec.name
        cfg["input_size"] = (3, resolution, resolution)
        cfg["crop_pct"] = eval_crop_pct(resolution)
    features_only = bool(kwargs.pop("features_only", False))
    out_indices = kwargs.pop("out_indices", None)
    if kwargs:
        raise TypeError(f"create_model got unexpected arguments: {', '.join(kwargs)}")
    num_classes = 1000 if num_classes is None else num_classes
    check_model_size(spec, cfg["input_size"][-1], in_chans, num_classes, activations=_real())
    cfg["num_classes"] = num_classes
    cfg["input_size"] = (in_chans,) + tuple(cfg["input_size"][1:])
    model = build_model(
        spec, features_only=features_only, out_indices=out_indices, num_classes=num_classes,
        in_chans=in_chans, drop_rate=entry.dropout if drop_rate is None else drop_rate,
        drop_path_rate=0.2 if drop_path_rate is None else drop_path_rate, padding=padding,
        bn_eps=TF_BN_EPS if bn_eps is None else bn_eps, pretrained_cfg=cfg, model_name=name)
    if pretrained is not None and pretrained is not False and pretrained is not True:
        load_weights(model, pretrained)
    elif pretrained is True:
        raise EffnetError("no weights ship for a custom spec: pass pretrained=<checkpoint file>")
    return model


def _check_counts(num_classes: Any, in_chans: Any, where: str = "") -> None:
    """num_classes (None or >= 0) and in_chans (>= 1) must be whole numbers."""
    if num_classes is not None:
        check_int(num_classes, f"num_classes{where}", 0)
    check_int(in_chans, f"in_chans{where}", 1)


def _real() -> bool:
    """False while building on the meta device (shapes only: activations cost nothing)."""
    return torch.get_default_device().type != "meta"


def build_model(spec: NetworkSpec, features_only: bool = False,
                out_indices: Sequence[int] | None = None, num_classes: int = 1000,
                drop_rate: float = 0.2, **kwargs: Any) -> Model:
    """The module for `spec`: an EfficientNet classifier, or the feature extractor.

    `kwargs` go to both constructors (in_chans, drop_path_rate, padding,
    bn_eps, bn_momentum, pretrained_cfg, model_name).
    """
    if features_only:
        return EfficientNetFeatures(spec, out_indices=out_indices, **kwargs)
    return EfficientNet(spec, num_classes=num_classes, drop_rate=drop_rate, **kwargs)


def _default_pretrained(name: str | None) -> str:
    """pretrained=True: the only weights effnet can find offline are the packaged Lite0 ones."""
    if name is not None and canonical_name(name) == "lite0":
        return PACKAGED
    raise EffnetError(f"no weights ship for {name!r}: pass pretrained=<checkpoint file> "
                     "(timm, torchvision, TF-ported or effnet), or use 'lite0' with "
                     "pretrained='packaged'")


def _restore(directory: Any, config: dict, num_classes: int | None = None, in_chans: int = 3,
             drop_rate: float | None = None, drop_path_rate: float | None = None,
             features_only: bool = False, out_indices: Sequence[int] | None = None,
             **kwargs: Any) -> Model:
    """Rebuild a model from a save_pretrained folder's config (its full spec) and load it."""
    if kwargs:
        raise TypeError(f"create_model got unexpected arguments: {', '.join(kwargs)}")
    spec = spec_from_config(config)
    cfg = pretrained_cfg_from_config(config)
    in_chans = config.get("in_chans", in_chans)
    _check_counts(config.get("num_classes", 1000), in_chans, " in config.json")
    num_classes = int(config.get("num_classes", 1000) if num_classes is None else num_classes)
    # A bare spec's model (a baseline built directly) saves no input size: check at 224 px.
    check_model_size(spec, cfg.get("input_size", (3, 224, 224))[-1], in_chans,
                     max(1, num_classes), activations=_real())
    features_only = features_only or bool(config.get("features_only", False))
    cfg["num_classes"] = 0 if features_only else num_classes
    model = build_model(
        spec, features_only=features_only,
        out_indices=out_indices if out_indices is not None else config.get("out_indices"),
        num_classes=num_classes, in_chans=int(in_chans),
        drop_rate=float(config.get("drop_rate", 0.2) if drop_rate is None else drop_rate),
        drop_path_rate=float(config.get("drop_path_rate", 0.2) if drop_path_rate is None
                             else drop_path_rate),
        padding=config.get("padding", "symmetric"), bn_eps=float(config.get("bn_eps", TF_BN_EPS)),
        pretrained_cfg=cfg, model_name=str(config.get("model_name", spec.name)))
    load_weights(model, directory)
    return model
