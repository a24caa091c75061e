"""Export a model to ONNX (dynamic batch) or TorchScript, and run ONNX files in onnxruntime.

Models with TF 'same' padding compute their padding from the input size; a
traced export records it for the export resolution, so exported files take
that one image size (ONNX declares it; any batch size works).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import EffnetError, ParameterError
from ..io_utils import atomic_path, atomic_write_bytes, atomic_write_json, cache_dir, first_line
from ..weights.pretrained import model_config
from ..weights.read import PACKAGED, WEIGHTS_NAME, packaged_weights_path
from .optimize import quiet_tracing

FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17
OPSETS = (7, 20)  # what torch's TorchScript-based ONNX exporter writes
ONNX_HINT = "pip install onnxruntime (or pip install 'effnet[onnx]')"


def _input_shape(model: nn.Module, image_size: int | None) -> tuple[int, int, int]:
    cfg = model.pretrained_cfg
    chans, *_ = cfg.get("input_size", (model.stem.conv.in_channels, 224, 224))
    size = int(image_size or cfg.get("input_size", (3, 224, 224))[-1])
    if size < 32:
        raise EffnetError(f"image size {size} is too small: use at least 32 px (the network "
                          "downsamples 32x)")
    return int(chans), size, size




def check_opset(opset: int) -> None:
    """Refuse an opset torch cannot export to, before any tracing (one line, no IR dump)."""
    if not OPSETS[0] <= opset <= OPSETS[1]:
        raise ParameterError(f"opset {opset} is not supported: use {OPSETS[0]}..{OPSETS[1]} "
                             f"(default {DEFAULT_OPSET})", "opset")


def export_onnx(model: nn.Module, path: str | os.PathLike, image_size: int | None = None,
                opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` (eval mode) as ONNX with a dynamic batch axis; returns the path.

    Input `input` (N, C, H, W) float32, output `logits` (N, num_classes).
    """
    path = Path(path)
    check_opset(opset)
    was_training = model.training
    model.eval()
    shape = _input_shape(model, image_size)
    example = torch.zeros(1, *shape)
    outputs = (["logits"] if not model.features_only else
               [f"features_{i}" for i in range(len(model.feature_info))])
    axes: dict[str, Any] = {"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    try:
        with quiet_tracing(), atomic_path(path, suffix=".onnx") as tmp:
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, input_names=["input"],
                              output_names=outputs, dynamic_axes=axes, opset_version=opset)
    finally:
        model.train(was_training)
    return path


def export_torchscript(model: nn.Module, path: str | os.PathLike,
                       image_size: int | None = None) -> Path:
    """Write `model` (eval mode) as a traced TorchScript file with its config as an extra file."""
    path = Path(path)
    was_training = model.training
    model.eval()
    example = torch.zeros(1, *_input_shape(model, image_size))
    extra = {"effnet_config.json": json.dumps(model_config(model))}
    try:
        with quiet_tracing(), torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(model, example))
        buf = io.BytesIO()  # in memory first: TorchScript aborts the process on a full disk
        with quiet_tracing():
            torch.jit.save(traced, buf, _extra_files=extra)
        atomic_write_bytes(path, buf.getvalue(), suffix=".pt")
    finally:
        model.train(was_training)
    return path


def export(model: nn.Module, path: str | os.PathLike, fmt: str = "onnx",
           image_size: int | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """Export to 'onnx' or 'torchscript'."""
    if fmt == "onnx":
        return export_onnx(model, path, image_size, opset)
    if fmt == "torchscript":
        return export_torchscript(model, path, image_size)
    raise EffnetError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")


def onnx_session(path: str | os.PathLike, threads: int | None = None,
                 fix: str = "export it again with `effnet export`"):
    """An onnxruntime CPU inference session for an ONNX file; `fix` ends the error message."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EffnetError(f"the onnxruntime runtime needs onnxruntime: {ONNX_HINT}") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own error types
        raise EffnetError(f"onnxruntime cannot load {path} ({first_line(err)}): {fix}") from None


def max_onnx_difference(model: nn.Module, path: str | os.PathLike, image_size: int | None = None,
                        batch: int = 2, seed: int = 0) -> float:
    """Largest |logit difference| between onnxruntime and PyTorch on random inputs."""
    shape = _input_shape(model, image_size)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))
    session = onnx_session(path)
    ours = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ref = model(x)
    model.train(was_training)
    return float(np.abs(ours - ref.numpy()).max())


def weights_file(weights: Any) -> Path | None:
    """The file `weights` (a path, a save_pretrained folder or 'packaged') reads, or None."""
    if isinstance(weights, str | os.PathLike):
        if str(weights) == PACKAGED:
            return packaged_weights_path()
        path = Path(weights)
        return path / WEIGHTS_NAME if path.is_dir() and (path / WEIGHTS_NAME).is_file() else path
    return None


def _content_key(source: Path, tag: str) -> str:
    """sha256 of the weights file, its folder's config.json (if any) and the export settings."""
    h = hashlib.sha256(f"{tag}|opset{DEFAULT_OPSET}|torch{torch.__version__}".encode())
    files = [source] + ([source.parent / "config.json"] if source.name == WEIGHTS_NAME else [])
    for f in files:
        if f.is_file():
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


CACHE_RECORD = ".effnet-onnx-cache.json"  # the exports the cache wrote in a folder


def _plain_name(name: str) -> str:
    """`name` as a plain file-name part: letters, digits, '-' and '_' (model names are data)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:64] or "model"


def onnx_cache_path(model: nn.Module, weights: Any, image_size: int) -> Path:
    """The cached ONNX file for (weights' content, model, image size): next to the weights if
    writable. Its name holds a hash of the weights and export settings, so replaced weights
    (even with an older modification time) never reuse another model's export. The model's
    name (read from a file) enters it only as letters, digits, '-' and '_'."""
    tag = (f"{_plain_name(str(model.model_name))}-{int(model.num_classes)}c-{int(image_size)}px-"
           f"{_plain_name(str(model.padding))}")
    source = weights_file(weights)
    if source is None:
        raise EffnetError("the onnxruntime runtime needs weights from a file or folder "
                          "(to cache the ONNX export next to them)")
    key = _content_key(source, tag)
    stem = _plain_name(source.stem)
    if str(weights) != PACKAGED and os.access(source.parent, os.W_OK):
        return source.parent / f"{stem}.{tag}.{key}.onnx"
    digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "onnx" / f"{stem}-{digest}.{tag}.{key}.onnx"


def _recorded(folder: Path) -> list[str]:
    """Names of the exports the cache recorded in `folder` (plain .onnx names only)."""
    try:
        names = json.loads((folder / CACHE_RECORD).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str) and n.endswith(".onnx")
            and n == Path(n).name and not n.startswith(".")]


def cached_onnx(model: nn.Module, weights: Any, image_size: int) -> Path:
    """Export `model` to ONNX once per (weights content, settings); the cache's own older
    exports of the same weights and settings go (it deletes only files it recorded)."""
    path = onnx_cache_path(model, weights, image_size)
    if path.is_file():
        return path
    prefix = path.name.rsplit(".", 2)[0] + "."  # without KEY.onnx
    kept = []
    for name in _recorded(path.parent):
        old = path.parent / name
        if name.startswith(prefix) and name != path.name:
            if old.is_file() and not old.is_symlink():
                old.unlink(missing_ok=True)
        elif old.is_file():
            kept.append(name)
    export_onnx(model, path, image_size)
    atomic_write_json(path.parent / CACHE_RECORD, {"files": [*kept, path.name]})
    return path
