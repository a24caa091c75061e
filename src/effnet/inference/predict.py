"""Classify images with a trained model: model preparation, image decoding, top-k.

`prepare_model` is the one place where predict and eval turn (model name,
weights, runtime) into something that maps a batch of preprocessed images to
logits; both commands go through it.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..data.images import IMG_EXTENSIONS, load_image
from ..data.transforms import eval_transform
from ..errors import EffnetError, ParameterError
from ..limits import check_resolution
from ..model_factory import create_model
from ..weights.resolve import RUN_FILE, resolve_weights

RUNTIMES = ("torch", "onnxruntime")
MIN_IMAGE_SIZE = 32


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard index order (package data)."""
    text = resources.files("effnet").joinpath("data/imagenet_classes.txt").read_text()
    return tuple(line for line in text.splitlines() if line)


@cache
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids (n01440764, ...); index i is class i (sorted order)."""
    text = resources.files("effnet").joinpath("data/imagenet_synsets.txt").read_text()
    return tuple(line for line in text.splitlines() if line)


def model_from_weights(name: str | None, weights: Any) -> torch.nn.Module:
    """create_model(name, pretrained=weights), where weights may also be a training run folder
    or an older run's .safetensors (its stored class count, channels and preprocessing are
    used); `weights` is resolved once (`effnet.weights.resolve_weights`).

    For inference (predict, eval, export): weights whose classifier does not fit the model
    (another class count or shape, which training would re-initialise) are refused, and so
    is a model without a classifier.
    """
    resolved = resolve_weights(weights)
    weights = resolved.source
    kwargs: dict[str, Any] = {}
    if resolved.kind == RUN_FILE:  # the run's classes and channels, over a given name's
        kwargs.update(num_classes=resolved.num_classes, in_chans=resolved.in_chans)
        if resolved.padding is not None:
            kwargs["padding"] = resolved.padding
    with _trained_classifier(weights):
        model = create_model(name, pretrained=resolved, **kwargs)
    if not model.num_classes:
        raise EffnetError(f"the model of {weights} has no classifier (num_classes 0): predict, "
                          "eval and export need one; set num_classes in its config.json to the "
                          "class count it was trained with")
    return check_finite(model, weights)


@contextlib.contextmanager
def _trained_classifier(weights: Any) -> Iterator[None]:
    """Turn load_weights' 'classifier re-initialised' notice into an error (random outputs);
    other notices pass through."""
    from ..weights import WeightsAdaptedWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WeightsAdaptedWarning)
        yield
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, WeightsAdaptedWarning) and "classifier" in text:
            raise EffnetError(f"{text}; inference needs the trained classifier (a new one "
                              f"gives random outputs): make num_classes in {weights}'s config "
                              "match the weights, or fine-tune with `effnet train --pretrained`")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def check_finite(model: torch.nn.Module, source: Any) -> torch.nn.Module:
    """Refuse weights holding NaN or infinite values (a diverged run, a damaged file)."""
    bad = [k for k, v in model.state_dict().items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise EffnetError(f"weights {source} hold NaN or infinite values ({len(bad)} tensors, "
                          f"e.g. {bad[0]}): the run diverged or the file is damaged; use other "
                          "weights")
    return model


@dataclass
class PreparedModel:
    """A model ready for inference: preprocessing, the runtime that computes logits, labels."""

    model_name: str
    pretrained_cfg: dict[str, Any]
    image_size: int
    num_classes: int
    runtime: str
    run: Callable[[torch.Tensor], torch.Tensor]
    transform: Callable[[Image.Image], torch.Tensor]
    labels: Sequence[str] | None = None
    module: torch.nn.Module | None = field(default=None, repr=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels else f"class {index}"


def prepare_model(model: str | None, weights: Any, runtime: str = "torch",
                  image_size: int | None = None, device: str = "cpu",
                  optimize: bool = True) -> PreparedModel:
    """Build `model` with `weights` for inference on `runtime` ('torch' or 'onnxruntime').

    `weights` is anything `effnet.load_weights` reads; `model` may be None when
    `weights` (or `model` itself) is a save_pretrained folder. With
    'onnxruntime', the model is exported to ONNX once and cached next to the
    weights (see `effnet.inference.export.cached_onnx`). With 'torch', `optimize` runs
    `effnet.optimize_for_inference` (BN folded, channels_last; same outputs).
    """
    if runtime not in RUNTIMES:
        raise EffnetError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if weights is None and model is not None and resolve_weights(model).names_model:
        model, weights = None, model
    if weights is None:
        raise ParameterError("inference needs trained weights: pass weights FILE|DIR|packaged",
                             "weights")
    resolved = resolve_weights(weights)
    weights = resolved.source
    if image_size is not None and image_size < MIN_IMAGE_SIZE:
        raise ParameterError(f"image_size {image_size} is too small: use at least "
                             f"{MIN_IMAGE_SIZE} px (the network downsamples 32x)", "image_size")
    if model is None and not resolved.names_model:
        raise ParameterError(f"model is needed for {weights}: only folders written by "
                             "save_pretrained / `effnet convert` and effnet train's weights "
                             "name the network they hold", "model")
    net = model_from_weights(model, resolved).eval()
    cfg = dict(net.pretrained_cfg)
    size = int(image_size or cfg["input_size"][-1])
    if size < MIN_IMAGE_SIZE:
        raise ParameterError(f"image size {size} (from {weights}) is too small: pass image_size "
                             f"{MIN_IMAGE_SIZE} or more", "image_size")
    check_resolution(net, size)
    names = cfg.get("label_names")
    labels = (list(names) if names and len(names) == net.num_classes else
              imagenet_class_names() if net.num_classes == 1000 else None)
    if runtime == "onnxruntime":
        from .export import cached_onnx, onnx_session

        cache = cached_onnx(net, weights, size)
        session = onnx_session(cache, fix=f"delete {cache} (a damaged cached export; it is "
                                          "rebuilt on the next run)")
        input_name = session.get_inputs()[0].name

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {input_name: x.numpy()})[0])
    else:
        net = net.to(device)
        if optimize:
            from .optimize import optimize_for_inference

            net = optimize_for_inference(net)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return net(x.to(device)).float().cpu()

    return PreparedModel(model_name=str(net.model_name),
                         pretrained_cfg=cfg, image_size=size, num_classes=net.num_classes,
                         runtime=runtime, run=run,
                         transform=eval_transform(cfg, size),
                         labels=labels, module=net)


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image: (class index, label, probability), best first."""

    path: str
    top: list[tuple[int, str, float]]


@dataclass(frozen=True)
class Failure:
    """An image that could not be decoded."""

    path: str
    error: str


def predict(prepared: PreparedModel, paths: Iterable[str | os.PathLike], topk: int = 5,
            batch_size: int = 16) -> Iterator[Prediction | Failure]:
    """Classify images in batches; undecodable files come back as `Failure` in their place."""
    if topk < 1:
        raise EffnetError(f"topk must be >= 1, got {topk}")
    k = min(topk, prepared.num_classes)
    pending: list[tuple[str, torch.Tensor]] = []

    def flush() -> Iterator[Prediction]:
        batch = torch.stack([x for _, x in pending])
        probs = prepared(batch).softmax(dim=-1)
        values, indices = probs.topk(k, dim=-1)
        for (path, _), vals, idxs in zip(pending, values.tolist(), indices.tolist(), strict=True):
            yield Prediction(path, [(i, prepared.label(i), p) for i, p in zip(idxs, vals,
                                                                              strict=True)])
        pending.clear()

    for path in paths:
        try:
            x = prepared.transform(load_image(path))
        except EffnetError as err:
            yield from flush() if pending else ()
            yield Failure(str(path), str(err))
            continue
        pending.append((str(path), x))
        if len(pending) >= batch_size:
            yield from flush()
    if pending:
        yield from flush()


def image_paths(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files given on the command line; folders expand to the image files inside them."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
        else:
            out.append(path)
    return out
