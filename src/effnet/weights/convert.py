"""Weights out: an effnet model's tensors in timm's or torchvision's key layout.

The key tables are those of :mod:`.layouts`, read the other way. The numerics
must fit the target architecture too:

* timm's `efficientnet_*` / `efficientnet_lite*` use PyTorch padding and BN eps
  1e-5; its `tf_efficientnet_*` TF ports use TF 'same' padding and eps 1e-3.
  A model with 'same' padding becomes a `tf_` model, any other an `efficientnet_` one.
* torchvision's `efficientnet_b0..b4` use eps 1e-5, `b5..b7` eps 1e-3 (they are
  TF ports), all with PyTorch padding; it has no 'same' padding and no Lite models.

Where the model's BN eps differs from the target's, the running variances are
shifted by the difference: in eval mode BN divides by sqrt(var + eps), so
var + eps_model - eps_target gives the same outputs under the target's eps.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import EffnetError, ParameterError
from ..io_utils import atomic_path
from ..zoo import MODELS
from .layouts import _TIMM_DS, _TIMM_IR, _TIMM_TOP, TF_BN_EPS, TORCH_BN_EPS, key_map

TARGETS = ("timm", "torchvision")
_TV_PART = {"conv": "0", "bn": "1"}
_TV_SE = {"reduce": "fc1", "expand": "fc2"}


def _named_model(model: nn.Module) -> str:
    """The zoo name of `model`, if it is exactly a named model (else an EffnetError)."""
    name = str(model.model_name)
    entry = MODELS.get(name)
    if entry is None or entry.spec.with_(name=model.spec.name) != model.spec:
        raise EffnetError(f"model {name!r} is not one of the named models ({', '.join(MODELS)}):"
                          " timm and torchvision only have those architectures")
    if model.features_only:
        raise EffnetError("convert the full model, not a features_only one")
    return name


def target_architecture(model: nn.Module, to: str) -> tuple[str, float]:
    """The timm or torchvision model name that fits `model`, and that model's BN eps."""
    if to not in TARGETS:
        raise EffnetError(f"unknown target {to!r}: use one of {', '.join(TARGETS)}")
    name = _named_model(model)
    same = model.padding == "same"
    if to == "timm":
        return (f"tf_efficientnet_{name}", TF_BN_EPS) if same else \
            (f"efficientnet_{name}", TORCH_BN_EPS)
    if same:
        raise ParameterError("torchvision has no TF 'same' padding: convert this model with "
                             "to='timm' (a tf_efficientnet_* model) instead", "to")
    if name not in {f"b{i}" for i in range(8)}:
        raise ParameterError(f"torchvision has no EfficientNet-{name}: it has b0..b7; use "
                             "to='timm'", "to")
    return f"efficientnet_{name}", TF_BN_EPS if name in ("b5", "b6", "b7") else TORCH_BN_EPS


def _timm_key(key: str, has_expand: set[str]) -> str:
    parts = key.split(".")
    if parts[0] != "blocks":
        module, param = ".".join(parts[:-1]), parts[-1]
        inverse = {v: k for k, v in _TIMM_TOP.items()}
        return f"{inverse[module]}.{param}"
    block, inner, param = ".".join(parts[:3]), ".".join(parts[3:-1]), parts[-1]
    table = _TIMM_IR if block in has_expand else _TIMM_DS
    inverse = {v: k for k, v in table.items()}
    return f"{block}.{inverse[inner]}.{param}"


def _torchvision_key(key: str, has_expand: set[str], has_se: set[str], num_stages: int) -> str:
    parts = key.split(".")
    if parts[0] == "classifier":
        return f"classifier.1.{parts[-1]}"
    if parts[0] in ("stem", "head"):
        index = 0 if parts[0] == "stem" else num_stages + 1
        return f"features.{index}.{_TV_PART[parts[1]]}.{parts[2]}"
    stage, b, role, layer, param = int(parts[1]), parts[2], parts[3], parts[4], parts[5]
    block = f"blocks.{stage}.{b}"
    order = [r for r, present in (("expand", block in has_expand), ("dw", True),
                                  ("se", block in has_se), ("project", True)) if present]
    sub = _TV_SE[layer] if role == "se" else _TV_PART[layer]
    return f"features.{stage + 1}.{b}.block.{order.index(role)}.{sub}.{param}"


def foreign_state_dict(model: nn.Module, to: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(architecture name, state dict) of `model` for timm's or torchvision's EfficientNet.

    The result loads strictly into `timm.create_model(name)` or
    `torchvision.models.<name>()` and gives the same outputs in eval mode.
    """
    arch, eps = target_architecture(model, to)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for k in [k for k in state if k.endswith("running_var")]:
        state[k] = state[k] + (float(model.bn_eps) - eps)
        if (state[k] < 0).any():
            raise ParameterError(f"{k} holds variances below {eps - model.bn_eps:g}, which the "
                                 f"target's BN eps {eps:g} cannot express: convert with "
                                 "to='timm' instead", "to")
    blocks = {".".join(k.split(".")[:3]) for k in state if k.startswith("blocks.")}
    has_expand = {b for b in blocks if f"{b}.expand.conv.weight" in state}
    has_se = {b for b in blocks if f"{b}.se.reduce.weight" in state}
    if to == "timm":
        out = {_timm_key(k, has_expand): v for k, v in state.items()}
    else:
        out = {_torchvision_key(k, has_expand, has_se, len(model.spec.stages)): v
               for k, v in state.items()}
    # The reading side must map every key back to where it came from.
    back = key_map(to, out, model)
    if len(out) != len(state) or any(back.get(new) != old for old, new in
                                     zip(state, out, strict=True)):
        raise AssertionError(f"the {to} key map does not invert: report this as a bug")
    return arch, out


def save_foreign(model: nn.Module, directory: str | os.PathLike, to: str) -> Path:
    """Write `model` for timm or torchvision as DIRECTORY/<architecture>.safetensors; the path.

    timm: `timm.create_model(arch, pretrained=True, num_classes=...,
    pretrained_cfg_overlay=dict(file=path))`; torchvision:
    `torchvision.models.<arch>(num_classes=...).load_state_dict(safetensors.torch.load_file(path))`.
    """
    from safetensors.torch import save_file

    arch, state = foreign_state_dict(model, to)
    path = Path(directory) / f"{arch}.safetensors"
    if path.parent.exists() and not path.parent.is_dir():
        raise EffnetError(f"{path.parent} is a file: give a folder to write into")
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"format": "pt", "architecture": arch, "library": to})
    return path
