"""State-dict layouts of the EfficientNet implementations people have weights for.

Every layout holds the same tensors as effnet (stem conv and BN; per block the
expand, depthwise, SE and projection convs and BNs; head conv and BN;
classifier), only under other names. Each `to_effnet_*` function below renames
one layout's keys to effnet's, rule by rule:

=============  ==========================  ==============================  =====================
effnet         timm                        torchvision                     lukemelas (TF ports)
=============  ==========================  ==============================  =====================
stem.conv      conv_stem                   features.0.0                    _conv_stem
stem.bn        bn1                         features.0.1                    _bn0
blocks.S.B     blocks.S.B                  features.(S+1).B.block          _blocks.(flat index)
 .expand.conv   .conv_pw                    .0.0                            ._expand_conv
 .expand.bn     .bn1                        .0.1                            ._bn0
 .dw.conv       .conv_dw                    .1.0 (.0.0 without expand)      ._depthwise_conv
 .dw.bn         .bn2 (.bn1 without expand)  .1.1                            ._bn1
 .se.reduce     .se.conv_reduce             .2.fc1                          ._se_reduce
 .se.expand     .se.conv_expand             .2.fc2                          ._se_expand
 .project.conv  .conv_pwl (.conv_pw w/o e)  .3.0                            ._project_conv
 .project.bn    .bn3 (.bn2 without expand)  .3.1                            ._bn2
head.conv      conv_head                   features.(last).0               _conv_head
head.bn        bn2                         features.(last).1               _bn1
classifier     classifier                  classifier.1                    _fc
=============  ==========================  ==============================  =====================

Keys that no rule matches keep their name, so they show up as unexpected
tensors when the result is checked against the model.

The layouts differ in numerics too (see `origin_settings`): timm's
`efficientnet_*` and torchvision's b0..b4 use PyTorch padding and BN eps 1e-5;
TF ports (timm `tf_efficientnet_*`, lukemelas, the packaged Lite0, torchvision
b5..b7) use BN eps 1e-3, and all but torchvision's also TF 'same' padding.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import EffnetError

if TYPE_CHECKING:
    import torch

# Key families that `detect_layout` tells apart, and the layouts users may name.
# 'timm' and 'timm_tf' share keys: timm's own `efficientnet_*` vs its TF ports `tf_efficientnet_*`.
LAYOUTS = ("effnet", "timm", "timm_tf", "torchvision", "lukemelas")
FAMILY = {"effnet": "effnet", "timm": "timm", "timm_tf": "timm", "torchvision": "torchvision",
          "lukemelas": "lukemelas"}
# A key only this family has.
SIGNATURES = {
    "effnet": "stem.conv.weight",
    "timm": "conv_stem.weight",
    "torchvision": "features.0.0.weight",
    "lukemelas": "_conv_stem.weight",
}

TORCH_BN_EPS = 1e-5
TF_BN_EPS = 1e-3


def detect_layout(keys: Iterable[str]) -> str:
    """The key family of a state dict: 'effnet', 'timm', 'torchvision' or 'lukemelas'.

    timm's `efficientnet_*` and `tf_efficientnet_*` have the same keys; which
    one a checkpoint is cannot be read from its keys (see `load_weights`).
    """
    keys = set(keys)
    found = [family for family, key in SIGNATURES.items() if key in keys]
    if len(found) == 1:
        return found[0]
    first = ", ".join(sorted(keys)[:3]) or "none"
    raise EffnetError(
        f"cannot tell this checkpoint's layout (first keys: {first}): effnet reads timm, "
        "torchvision, lukemelas/TF-ported and effnet EfficientNet state dicts; is it an "
        "EfficientNet checkpoint?")


def origin_settings(layout: str, model_name: str) -> tuple[str | None, float | None]:
    """(padding, BN eps) the weights of `layout` were trained with; None keeps the model's.

    torchvision's b5..b7 weights are TF ports (eps 1e-3) used with PyTorch
    padding; its b0..b4 come from timm (eps 1e-5).
    """
    if layout == "timm":
        return "symmetric", TORCH_BN_EPS
    if layout in ("timm_tf", "lukemelas"):
        return "same", TF_BN_EPS
    if layout == "torchvision":
        return "symmetric", TF_BN_EPS if model_name in ("b5", "b6", "b7") else TORCH_BN_EPS
    return None, None


def _split_param(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    return module, param


# --------------------------------------------------------------------------------------------
# timm

_TIMM_TOP = {"conv_stem": "stem.conv", "bn1": "stem.bn", "conv_head": "head.conv",
             "bn2": "head.bn", "classifier": "classifier"}
# Inverted residual (expand ratio > 1) and depthwise-separable (expand ratio 1) blocks.
_TIMM_IR = {"conv_pw": "expand.conv", "bn1": "expand.bn", "conv_dw": "dw.conv", "bn2": "dw.bn",
            "se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand",
            "conv_pwl": "project.conv", "bn3": "project.bn"}
_TIMM_DS = {"conv_dw": "dw.conv", "bn1": "dw.bn", "se.conv_reduce": "se.reduce",
            "se.conv_expand": "se.expand", "conv_pw": "project.conv", "bn2": "project.bn"}
_TIMM_BLOCK = re.compile(r"blocks\.(\d+)\.(\d+)\.(.+)$")


def to_effnet_timm(keys: Iterable[str]) -> dict[str, str]:
    """Source key -> effnet key for timm's `efficientnet_*` / `tf_efficientnet_*`."""
    keys = list(keys)
    has_pwl = {m.group(1, 2) for k in keys if (m := _TIMM_BLOCK.match(k)) and
               m.group(3).startswith("conv_pwl.")}
    names = {}
    for key in keys:
        module, param = _split_param(key)
        if m := _TIMM_BLOCK.match(key):
            stage, block = m.group(1, 2)
            table = _TIMM_IR if (stage, block) in has_pwl else _TIMM_DS
            inner = _split_param(m.group(3))[0]
            if inner in table:
                names[key] = f"blocks.{stage}.{block}.{table[inner]}.{param}"
        elif module in _TIMM_TOP:
            names[key] = f"{_TIMM_TOP[module]}.{param}"
    return names


# --------------------------------------------------------------------------------------------
# torchvision

_TV_BLOCK = re.compile(r"features\.(\d+)\.(\d+)\.block\.(\d+)\.(.+)$")
_TV_PLAIN = re.compile(r"features\.(\d+)\.([01])\.(\w+)$")
_TV_CONV_BN = {"0": "conv", "1": "bn"}
_TV_SE = {"fc1": "reduce", "fc2": "expand"}


def _tv_roles(keys: list[str]) -> dict[tuple[str, str], dict[int, str]]:
    """(stage, block) -> {sub-layer index: expand, dw, project or se} of torchvision keys."""
    sublayers: dict[tuple[str, str], set[int]] = defaultdict(set)
    se_index: dict[tuple[str, str], int] = {}
    for key in keys:
        if m := _TV_BLOCK.match(key):
            sublayers[m.group(1, 2)].add(int(m.group(3)))
            if m.group(4).startswith("fc1."):
                se_index[m.group(1, 2)] = int(m.group(3))
    roles: dict[tuple[str, str], dict[int, str]] = {}
    for block, indices in sublayers.items():
        convs = sorted(i for i in indices if i != se_index.get(block))
        names = ("expand", "dw", "project")[-len(convs):] if len(convs) in (2, 3) else ()
        roles[block] = dict(zip(convs, names, strict=False))
        if block in se_index:
            roles[block][se_index[block]] = "se"
    return roles


def to_effnet_torchvision(keys: Iterable[str]) -> dict[str, str]:
    """Source key -> effnet key for torchvision's `efficientnet_b*`.

    Inside `features.i.j.block`, the sub-layers are numbered in order: the one
    holding `fc1` is SE; the others are (expand, dw, project), or (dw, project)
    when the block has no expand conv.
    """
    keys = list(keys)
    roles = _tv_roles(keys)
    plain = [int(m.group(1)) for k in keys if (m := _TV_PLAIN.match(k))]
    head = str(max(plain)) if plain else None
    names = {}
    for key in keys:
        if m := _TV_BLOCK.match(key):
            stage, block, sub, rest = m.groups()
            role = roles[(stage, block)].get(int(sub))
            inner, param = _split_param(rest)
            if role == "se" and inner in _TV_SE:
                part = f"se.{_TV_SE[inner]}"
            elif role in ("expand", "dw", "project") and inner in _TV_CONV_BN:
                part = f"{role}.{_TV_CONV_BN[inner]}"
            else:
                continue
            names[key] = f"blocks.{int(stage) - 1}.{block}.{part}.{param}"
        elif m := _TV_PLAIN.match(key):
            index, layer, param = m.groups()
            where = "stem" if index == "0" else "head" if index == head else None
            if where:
                names[key] = f"{where}.{_TV_CONV_BN[layer]}.{param}"
        elif key.startswith("classifier.1."):
            names[key] = "classifier." + key[len("classifier.1."):]
    return names


# --------------------------------------------------------------------------------------------
# lukemelas / EfficientNet-PyTorch (TF-ported checkpoints, the packaged Lite0)

_LM_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv",
           "_bn1": "head.bn", "_fc": "classifier"}
_LM_BLOCK_PARTS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn",
                   "_depthwise_conv": "dw.conv", "_bn1": "dw.bn", "_se_reduce": "se.reduce",
                   "_se_expand": "se.expand", "_project_conv": "project.conv",
                   "_bn2": "project.bn"}
_LM_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def to_effnet_lukemelas(keys: Iterable[str], block_ids: list[str]) -> dict[str, str]:
    """Source key -> effnet key for lukemelas' layout.

    lukemelas numbers blocks flat (`_blocks.0` .. `_blocks.15` in B0); the n-th
    becomes `blocks.S.B` by the model's stage repeats (`block_ids[n]` = "S.B").
    """
    names = {}
    for key in keys:
        if m := _LM_BLOCK.match(key):
            flat, part, param = m.groups()
            if int(flat) < len(block_ids) and part in _LM_BLOCK_PARTS:
                names[key] = f"blocks.{block_ids[int(flat)]}.{_LM_BLOCK_PARTS[part]}.{param}"
        else:
            module, param = _split_param(key)
            if module in _LM_TOP:
                names[key] = f"{_LM_TOP[module]}.{param}"
    return names


# --------------------------------------------------------------------------------------------


def block_ids(model: torch.nn.Module) -> list[str]:
    """'S.B' for every block of the model's full spec, in order."""
    return [f"{s}.{b}" for s, stage in enumerate(model.spec.stages) for b in range(stage.repeats)]


def key_map(layout: str, keys: Iterable[str], model: torch.nn.Module) -> dict[str, str]:
    """Source key -> effnet key for a layout (keys no rule matches are left out)."""
    family = FAMILY[layout]
    keys = list(keys)
    if family == "effnet":
        return {k: k for k in keys}
    if family == "timm":
        return to_effnet_timm(keys)
    if family == "torchvision":
        return to_effnet_torchvision(keys)
    return to_effnet_lukemelas(keys, block_ids(model))
