"""Inference images/s at given batch sizes (paper Sec. 1: "smaller and faster")."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import EffnetError
from ..inference.optimize import optimize_for_inference
from ..model_factory import create_model
from ..profiling import count_macs
from .harness import _autocast, _max_diff, describe_device, num_threads, time_alternating
from .impls import INFERENCE_IMPLS, OPTIONAL_INFERENCE_IMPLS
from .records import InferenceRow
from .references import BASELINE, _sources_for, reference_models
from .results import InferenceResult


def _onnx_runner(model: nn.Module, resolution: int, threads: int | None
                 ) -> Callable[[torch.Tensor], Callable[[], Any]]:
    from ..inference.export import export_onnx, onnx_session

    path = Path(tempfile.mkdtemp(prefix="effnet-bench-")) / "model.onnx"
    export_onnx(model, path, image_size=resolution)
    session = onnx_session(path, threads=threads or torch.get_num_threads())
    name = session.get_inputs()[0].name

    def make(x: torch.Tensor) -> Callable[[], Any]:
        arr = x.cpu().numpy()
        return lambda: session.run(None, {name: arr})[0]

    return make


def inference(name: str = "b0", batches: Sequence[int] = (1, 32),
              impls: Sequence[str] = INFERENCE_IMPLS, resolution: int | None = None,
              repeats: int = 7, min_time: float = 0.5, threads: int | None = None,
              device: str = "cpu", amp: bool = False,
              progress: Callable[[str], None] | None = None) -> InferenceResult:
    """Images/s of each implementation at each batch size, same weights, same outputs.

    Outputs of every implementation are compared with timm's on the timed input
    (`max_abs_diff`). On CUDA every model runs channels_last, with bf16 autocast
    when `amp`.
    """
    dev = torch.device(device)
    impls = _available(impls, dev)
    sources = reference_models(name, _sources_for(impls))
    res = resolution or create_model(name).pretrained_cfg["input_size"][-1]
    macs = count_macs(sources["effnet"], res)
    rows: list[InferenceRow] = []
    with num_threads(threads):
        models = _placed(impls, sources, dev)
        for batch in batches:
            x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(batch))
            x = x.to(dev)
            fns = {impl: _runner(impl, models, sources, x, dev, amp, res, threads)
                   for impl in impls}
            outputs = {impl: fn() for impl, fn in fns.items()}
            ref = outputs.get(BASELINE, next(iter(outputs.values())))
            times = time_alternating(fns, repeats, min_time, device=dev, progress=progress)
            batch_rows = {impl: _row(impl, batch, times[impl], _max_diff(outputs[impl], ref),
                                     macs) for impl in impls}
            rows += [r.against(batch_rows.get(BASELINE)) for r in batch_rows.values()]
    return InferenceResult(model=name, resolution=res, device=describe_device(dev), amp=amp,
                           threads=threads or torch.get_num_threads(), macs_per_image=macs,
                           baseline=BASELINE, rows=tuple(rows))


def _available(impls: Sequence[str], dev: torch.device) -> Sequence[str]:
    """`impls`, checked; onnxruntime only on CPU."""
    unknown = set(impls) - set(INFERENCE_IMPLS) - set(OPTIONAL_INFERENCE_IMPLS)
    if unknown:
        raise EffnetError(f"unknown implementation(s) {sorted(unknown)}: choose from "
                          f"{', '.join(INFERENCE_IMPLS + OPTIONAL_INFERENCE_IMPLS)}")
    if "onnxruntime" in impls and dev.type != "cpu":
        return [i for i in impls if i != "onnxruntime"]
    return impls


def _placed(impls: Sequence[str], sources: dict[str, nn.Module],
            dev: torch.device) -> dict[str, Any]:
    """The eager models on `dev` (channels_last on CUDA; timm-cl always)."""
    models: dict[str, Any] = {}
    cl = dev.type == "cuda"
    for impl in impls:
        if impl in ("timm", "torchvision", "effnet"):
            m = sources[impl].eval().to(dev)
            models[impl] = m.to(memory_format=torch.channels_last) if cl else m
        elif impl == "timm-cl":
            models[impl] = copy.deepcopy(sources["timm"]).eval().to(dev).to(
                memory_format=torch.channels_last)
    return models


def _runner(impl: str, models: dict[str, Any], sources: dict[str, nn.Module], x: torch.Tensor,
            dev: torch.device, amp: bool, res: int, threads: int | None) -> Callable[[], Any]:
    """One timed call of `impl` on `x`; optimised models are made once, in `models` (the
    TorchScript one per input, it is traced on it)."""
    if impl == "onnxruntime":
        if "onnx_make" not in models:
            models["onnx_make"] = _onnx_runner(sources["effnet"].eval(), res, threads)
        return models["onnx_make"](x)
    if impl == "effnet-fast":
        m = models.setdefault(impl, optimize_for_inference(sources["effnet"].to(dev)))
    elif impl == "effnet-ts":
        m = optimize_for_inference(sources["effnet"].to(dev), example_input=x, torchscript=True)
    elif impl == "effnet-compile":
        m = models.setdefault(impl, optimize_for_inference(sources["effnet"].to(dev),
                                                           compile=True))
    else:
        m = models[impl]
    return _inference_call(m, x, dev, amp)


def _row(impl: str, batch: int, seconds: Sequence[float], max_abs_diff: float,
         macs: int) -> InferenceRow:
    """A row whose GFLOP/s is 2 x MACs per image x images/s."""
    plain = InferenceRow(impl, batch, tuple(seconds), max_abs_diff, gflops=0.0)
    return replace(plain, gflops=2 * macs * plain.images_per_s / 1e9)


def _inference_call(model: nn.Module, x: torch.Tensor, dev: torch.device,
                    amp: bool) -> Callable[[], Any]:
    def call() -> Any:
        with torch.inference_mode(), _autocast(dev, amp):
            return model(x)

    return call


