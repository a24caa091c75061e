"""`create_model` and `list_models`: the timm-shaped entry points."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
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
from .weights.read import PACKAGED
from .weights.resolve import FOLDER, RUN_FILE, ResolvedWeights, resolve_weights
from .zoo import (  # list_models: re-exported
    MODELS,
    ModelEntry,
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
    defaults to 1000, or to the class count the weights say they have.

    `pretrained` loads weights with `effnet.load_weights` (a file, a state
    dict, or 'packaged' for the Lite0 ImageNet weights; True means 'packaged'
    for lite0), which also sets the padding and BN eps the weights need. A
    folder written by `model.save_pretrained` (or a training run folder)
    restores that model: `name` may then be left out.

    `spec` builds any baseline instead of a named model: a
    :class:`~effnet.spec.NetworkSpec`, its dict, or the path of a spec.json
    (e.g. the baseline `effnet nas` found), at 224 px; with `phi` it is
    compound-scaled like B0 (paper Eq. 3).

    Resolve, then build: :func:`model_blueprint` resolves the weights once
    (`effnet.weights.resolve_weights`) and reads what to build from them or from the zoo;
    the built model gets the weights.
    """
    blueprint = model_blueprint(
        name, pretrained, num_classes, in_chans, drop_rate, drop_path_rate, features_only,
        out_indices, padding, bn_eps, phi, scaling, spec, **kwargs)
    model = build_model(blueprint.spec, **blueprint.build)
    if blueprint.weights is not None:
        load_weights(model, blueprint.weights)
    return model


@dataclass(frozen=True)
class ModelBlueprint:
    """What `create_model` builds: the network spec, build_model's other arguments, and the
    weights to load into it (resolved)."""

    spec: NetworkSpec
    build: dict[str, Any]
    weights: ResolvedWeights | None = None

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """The preprocessing the model will have (a folder's comes with its weights)."""
        cfg = self.build.get("pretrained_cfg")
        if cfg is None and self.weights is not None:
            cfg = self.weights.pretrained_cfg
        return dict(cfg or {})


def model_blueprint(name: str | None = None, pretrained: Any = None,
                    num_classes: int | None = None, in_chans: int = 3,
                    drop_rate: float | None = None, drop_path_rate: float | None = None,
                    features_only: bool = False, out_indices: Sequence[int] | None = None,
                    padding: str | None = None, bn_eps: float | None = None,
                    phi: float | None = None, scaling: CompoundScaling | None = None,
                    spec: NetworkSpec | dict | str | os.PathLike | None = None,
                    **kwargs: Any) -> ModelBlueprint:
    """`create_model`'s first half: the weights resolved and what to build, checked against
    the size limits, nothing built (the arguments are create_model's)."""
    _check_counts(num_classes, in_chans)
    if spec is not None and name is not None:
        raise EffnetError("give create_model a model name or spec=, not both")
    weights = _resolve(name, pretrained, custom=spec is not None)
    user = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                drop_path_rate=drop_path_rate, features_only=features_only,
                out_indices=out_indices)
    if spec is None and name is None and weights is not None and weights.kind == FOLDER:
        build = _folder_blueprint(weights, kwargs, **user)
    else:
        build = _zoo_blueprint(name, spec, weights, phi, scaling, padding, bn_eps, kwargs,
                               **user)
    return ModelBlueprint(build.pop("spec"), build, weights)


def _resolve(name: str | None, pretrained: Any, custom: bool) -> ResolvedWeights | None:
    """The weights to load (None for none); pretrained=True: the packaged ones, if any."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        if custom:
            raise EffnetError("no weights ship for a custom spec: pass "
                              "pretrained=<checkpoint file>")
        pretrained = _default_pretrained(name)
    return resolve_weights(pretrained)


def _unexpected(kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"create_model got unexpected arguments: {', '.join(kwargs)}")


def _check_padding(padding: str | None) -> str:
    padding = padding or "symmetric"
    if padding not in PADDING_MODES:
        raise EffnetError(f"unknown padding {padding!r}: use one of {', '.join(PADDING_MODES)}")
    return padding


def _zoo_spec(name: str | None, spec: Any, weights: ResolvedWeights | None, phi: float | None,
              scaling: CompoundScaling | None) -> tuple[ModelEntry, NetworkSpec, int | None, str]:
    """(zoo entry giving the defaults, network spec, scaled resolution or None, model name) of
    a named model, or of a custom spec (B0's defaults) with `spec`."""
    if spec is not None:
        entry = MODELS["b0"]
        spec = _as_spec(spec)
        if phi is None:
            return entry, spec, None, spec.name
        scaling = scaling or CompoundScaling()
        resolution = scaling.coefficients(phi, entry.resolution).resolution
        spec = scaling.scale(spec, phi)
        return entry, spec, resolution, spec.name
    if name is None and weights is not None and weights.kind == RUN_FILE:
        name = weights.model_name  # an older run's .safetensors names its model
    if name is None:
        raise EffnetError("create_model needs a model name (one of "
                          f"{', '.join(MODELS)}), or pretrained=<folder from save_pretrained>")
    entry = MODELS[canonical_name(name)]
    if phi is None:
        return entry, entry.spec, None, entry.name
    spec, resolution = compound_scaled(name, phi, scaling)
    return entry, spec, resolution, spec.name


def _as_spec(spec: NetworkSpec | dict | str | os.PathLike) -> NetworkSpec:
    """create_model(spec=...): a NetworkSpec, its dict, or a spec.json path."""
    from .spec import load_spec, spec_from_dict

    if isinstance(spec, dict):
        return spec_from_dict(spec)
    return spec if isinstance(spec, NetworkSpec) else load_spec(spec)


def _zoo_blueprint(name: str | None, spec: Any, weights: ResolvedWeights | None,
                   phi: float | None, scaling: CompoundScaling | None, padding: str | None,
                   bn_eps: float | None, kwargs: dict[str, Any], *, num_classes: int | None,
                   in_chans: int, drop_rate: float | None, drop_path_rate: float | None,
                   features_only: bool, out_indices: Sequence[int] | None) -> dict[str, Any]:
    """build_model's arguments for a named model or a custom spec: the zoo's defaults (B0's for
    a spec), the class count of weights that know theirs, the caller's choices over both."""
    entry, spec, resolution, model_name = _zoo_spec(name, spec, weights, phi, scaling)
    padding = _check_padding(padding)
    cfg = entry.pretrained_cfg()
    if resolution is not None:
        cfg["input_size"] = (3, resolution, resolution)
        cfg["crop_pct"] = eval_crop_pct(resolution)
    _unexpected(kwargs)
    if num_classes is None:
        num_classes = int(weights.num_classes) if weights is not None and \
            weights.names_model else 1000
    check_model_size(spec, cfg["input_size"][-1], in_chans, num_classes, activations=_real())
    cfg["num_classes"] = num_classes
    cfg["input_size"] = (in_chans,) + tuple(cfg["input_size"][1:])
    return dict(spec=spec, features_only=features_only, out_indices=out_indices,
                num_classes=num_classes, in_chans=in_chans,
                drop_rate=entry.dropout if drop_rate is None else drop_rate,
                drop_path_rate=0.2 if drop_path_rate is None else drop_path_rate,
                padding=padding, bn_eps=TF_BN_EPS if bn_eps is None else bn_eps,
                pretrained_cfg=cfg, model_name=model_name)


def _folder_blueprint(weights: ResolvedWeights, kwargs: dict[str, Any], *,
                      num_classes: int | None, in_chans: int, drop_rate: float | None,
                      drop_path_rate: float | None, features_only: bool,
                      out_indices: Sequence[int] | None) -> dict[str, Any]:
    """build_model's arguments that restore a save_pretrained folder's model (its full spec);
    its preprocessing comes with its weights (load_weights)."""
    _unexpected(kwargs)
    config = weights.config or {}
    spec = weights.network_spec()
    in_chans = config.get("in_chans", in_chans)
    _check_counts(config.get("num_classes", 1000), in_chans, " in config.json")
    num_classes = int(config.get("num_classes", 1000) if num_classes is None else num_classes)
    # A bare spec's model (a baseline built directly) saves no input size: check at 224 px.
    check_model_size(spec, weights.pretrained_cfg.get("input_size", (3, 224, 224))[-1],
                     in_chans, max(1, num_classes), activations=_real())
    return dict(
        spec=spec, features_only=features_only or bool(config.get("features_only", False)),
        out_indices=out_indices if out_indices is not None else config.get("out_indices"),
        num_classes=num_classes, in_chans=int(in_chans),
        drop_rate=float(config.get("drop_rate", 0.2) if drop_rate is None else drop_rate),
        drop_path_rate=float(config.get("drop_path_rate", 0.2) if drop_path_rate is None
                             else drop_path_rate),
        padding=config.get("padding", "symmetric"), bn_eps=float(config.get("bn_eps", TF_BN_EPS)),
        model_name=str(config.get("model_name", spec.name)))


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
