"""effnet's own weight format: a folder with model.safetensors and config.json.

`save_pretrained` writes it (atomically), `create_model(pretrained=folder)`
rebuilds the model from the config's full network spec. The config also
records phi and the compound-scaling coefficients, padding, BN eps and the
preprocessing (timm's pretrained_cfg). Nothing here imports effnet's modules.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import EffnetError, check_number
from ..io_utils import atomic_write_bytes, atomic_write_json, first_line
from .read import CONFIG_NAME, PACKAGED, WEIGHTS_NAME, read_json

FORMAT_NAME = "effnet"
FORMAT_VERSION = 1


def effnet_config(source: Any) -> dict[str, Any] | None:
    """The config.json of a folder written by `save_pretrained` (effnet config + weights), read
    once; None when `source` is not such a folder."""
    if not isinstance(source, str | os.PathLike) or str(source) == PACKAGED:
        return None
    path = Path(source)
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        return None
    config = read_json(path / CONFIG_NAME)
    return config if config.get("format") == FORMAT_NAME else None


def is_pretrained_dir(source: Any) -> bool:
    """True when `source` is a folder written by `save_pretrained` (effnet config + weights)."""
    return effnet_config(source) is not None


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The effnet config.json of a `save_pretrained` folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise EffnetError(f"{directory} has no {CONFIG_NAME}: give a folder written by "
                          "model.save_pretrained() or `effnet convert`")
    config = read_json(path)
    if config.get("format") != FORMAT_NAME:
        raise EffnetError(f"{path} is not an effnet config (no \"format\": \"effnet\"): "
                          "convert the checkpoint with `effnet convert`")
    return config


def model_config(model: torch.nn.Module) -> dict[str, Any]:
    """The config.json content describing how to rebuild `model`.

    The network spec is written by the spec's one serialiser (`effnet.spec.spec_to_dict`);
    phi, the base and the coefficients also stand at the top, for people reading the file
    (readers take them from the spec)."""
    from .. import __version__
    from ..spec import spec_to_dict

    spec = model.spec
    cfg = dict(model.pretrained_cfg)
    config: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "effnet_version": __version__,
        "model_name": model.model_name,
        "num_classes": model.num_classes,
        "in_chans": model.stem.conv.in_channels,
        "padding": model.padding,
        "bn_eps": model.bn_eps,
        "drop_rate": model.drop_rate,
        "drop_path_rate": model.drop_path_rate,
        "features_only": model.features_only,
    }
    if spec.phi is not None:
        config["phi"] = spec.phi
        config["base"] = spec.base
        if spec.coefficients is not None:
            config["scaling"] = dict(zip(("alpha", "beta", "gamma"), spec.coefficients,
                                         strict=True))
    if model.features_only:
        config["out_indices"] = list(model.out_indices)
    config["pretrained_cfg"] = _jsonable(cfg)
    config["spec"] = _jsonable(spec_to_dict(spec))
    return config


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    return str(obj)


def spec_from_config(config: Mapping[str, Any]):
    """Rebuild the NetworkSpec stored in a config.json (with the spec's one parser,
    `effnet.spec.spec_from_fields`; phi and base of effnet <= 0.1's "meta" restored)."""
    from ..spec import spec_from_fields

    try:
        fields = dict(config["spec"])
        legacy = fields.pop("meta", None) or {}  # effnet <= 0.1 kept phi and base in a dict
        for key in ("phi", "base"):
            fields.setdefault(key, legacy.get(key))
        return spec_from_fields(fields)
    except (KeyError, TypeError, ValueError) as err:
        raise EffnetError(f"the config's network spec is damaged ({first_line(err)}): save the "
                          "model again with model.save_pretrained()") from None


def pretrained_cfg_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocessing dict of a config.json, with tuples restored; its types and lengths
    checked (mean and std: one number, or one per input channel)."""
    raw = config.get("pretrained_cfg", {})
    if not isinstance(raw, Mapping):
        raise EffnetError(f"pretrained_cfg in config.json must be an object, got "
                          f"{type(raw).__name__}: save the model again with save_pretrained()")
    cfg = dict(raw)
    chans = config.get("in_chans", 3)
    for key, lengths in (("input_size", {3}), ("mean", {1, 3, chans}), ("std", {1, 3, chans})):
        if key not in cfg:
            continue
        value = cfg[key]
        if not isinstance(value, list | tuple) or len(value) not in lengths:
            raise EffnetError(f"pretrained_cfg.{key} in config.json must be a list of "
                              f"{' or '.join(map(str, sorted(lengths)))} numbers, got {value!r}")
        for v in value:
            check_number(v, f"pretrained_cfg.{key}", -float("inf"))
        cfg[key] = tuple(value)
    for key in ("crop_pct",):
        if key in cfg:
            check_number(cfg[key], f"pretrained_cfg.{key}", -float("inf"))
    return cfg


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike) -> Path:
    """Write `model` to `directory` as model.safetensors plus config.json; returns the folder.

    The config holds the model name, num_classes, phi (for compound-scaled
    models), padding, BN eps, the full network spec and the preprocessing
    (pretrained_cfg), so `effnet.create_model(pretrained=directory)` rebuilds
    it without a name.
    """
    from safetensors.torch import save

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise EffnetError(f"{directory} is a file: save_pretrained needs a folder path")
    config = model_config(model)
    # One id in both files: a folder whose two files come from different saves (a kill between
    # the two renames) is refused on load instead of running weights under another config.
    config["save_id"] = uuid.uuid4().hex
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "effnet_format": FORMAT_NAME, "model_name": config["model_name"],
                "padding": model.padding, "bn_eps": repr(float(model.bn_eps)),
                "effnet_save_id": config["save_id"]}
    weights = directory / WEIGHTS_NAME
    with _old_weights_kept(weights):
        atomic_write_bytes(weights, save(tensors, metadata=metadata), suffix=".safetensors")
        atomic_write_json(directory / CONFIG_NAME, config)
    return directory


@contextlib.contextmanager
def _old_weights_kept(weights: Path) -> Iterator[None]:
    """Keep a hard link to the weights file being replaced; put it back if the body fails
    (the config could not be written): the folder keeps its old pair."""
    backup = weights.parent / f".{weights.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.old.tmp"
    if weights.is_file():
        try:
            os.link(weights, backup)
        except OSError:
            shutil.copy2(weights, backup)
    try:
        yield
    except BaseException:
        if backup.exists():
            os.replace(backup, weights)
        raise
    finally:
        backup.unlink(missing_ok=True)
