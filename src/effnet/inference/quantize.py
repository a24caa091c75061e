"""INT8 post-training static quantization of an exported model, calibrated on the user's images.

EfficientNet-Lite was designed for integer inference: no squeeze-excitation and
ReLU6 instead of Swish, whose unbounded, curved range does not survive 8 bits
(Lite's model card: TFLite Lite0 INT8 lost 0.7 points of ImageNet top-1 at 1.85x
the speed). Here the BN-folded model (:func:`~effnet.inference.optimize.export_form`)
is exported to ONNX and quantized with ONNX Runtime's static quantizer
(`onnxruntime.quantization.quantize_static`): QDQ format, int8 weights per output
channel, uint8 activations whose ranges come from running the float model on
calibration images preprocessed exactly as the model's own `pretrained_cfg` says.
The QDQ file runs in ONNX Runtime and in OpenVINO.

Before export the weights are put on the quantizer's own per-channel grid by
:func:`prepare_weights`: rounding that keeps each output channel's weight sum, then
empirical bias correction (Nagel et al., "Data-Free Quantization through Weight
Equalization and Bias Correction", ICCV 2019): the mean output shift the rounding causes on
the calibration images is taken out of the bias. Measured on the packaged Lite0 (photo
views, two-fold calibration), this is what lifts INT8's top-1 agreement with FP32 from about
60% to the figure in ``results/int8/photos.json``: its first depthwise convolution holds
edge filters whose taps nearly cancel, and plain rounding moves their sum.

Swish (SiLU) models are refused unless ``allow_swish=True``: their measured cost is
in :data:`SWISH_INT8_TOP1_DROP`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.images import IMG_EXTENSIONS, load_image
from ..data.transforms import eval_transform
from ..errors import EffnetError, ParameterError
from ..io_utils import atomic_path, first_line
from ..machine import cpu_flags
from ..nn.layers import activation_name

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 8

# Top-1 points a Swish model lost under this quantizer, measured by results/int8/run.sh
# (results/int8/b0.json: B0 trained from scratch on Fashion-MNIST at 32 px, 3 epochs, test set,
# FP32 87.17% -> INT8 87.06% in ONNX Runtime, 500 calibration images, 2026-12-08, AMD EPYC).
# Small here; Swish models at ImageNet scale (224 px and up) are not measured on this machine.
SWISH_INT8_TOP1_DROP: float | None = 0.11
SWISH_INT8_SOURCE = "results/int8/b0.json: B0 trained on Fashion-MNIST at 32 px"


def uses_swish(model: nn.Module) -> bool:
    """Whether any activation of `model` is Swish / SiLU (B-models; Lite uses ReLU6)."""
    return any(activation_name(m) == "silu" or isinstance(m, nn.SiLU) for m in model.modules())


def check_int8_allowed(model: nn.Module, allow_swish: bool = False) -> None:
    """Refuse INT8 for a Swish model unless `allow_swish`: Swish's unbounded, curved range is
    reported to lose accuracy under 8 bits (why Lite uses ReLU6); the cost measured here is
    :data:`SWISH_INT8_TOP1_DROP`, on a small model only."""
    if allow_swish or not uses_swish(model):
        return
    cost = ("a cost not yet measured here" if SWISH_INT8_TOP1_DROP is None else
            f"{SWISH_INT8_TOP1_DROP:.2f} points of top-1 measured in {SWISH_INT8_SOURCE}; "
            "not measured at ImageNet scale")
    name = getattr(model, "model_name", "this model")
    raise ParameterError(f"{name} uses Swish (SiLU), which INT8 is not designed for ({cost}); "
                         "Lite models (lite0..lite4, ReLU6) are built for INT8: use one, or pass "
                         "allow_swish=True to quantize anyway and check it on your images",
                         "allow_swish")


def calibration_files(folder: str | os.PathLike, limit: int = DEFAULT_CALIBRATION_IMAGES
                      ) -> list[Path]:
    """Up to `limit` image files under `folder` (any depth), evenly spread over the sorted list."""
    if limit < 1:
        raise ParameterError(f"calibration_images {limit} must be >= 1", "calibration_images")
    root = Path(folder)
    if not root.is_dir():
        raise ParameterError(f"calibration folder {root} not found: give a folder of images like "
                             "those the model will see (a few hundred are enough)", "calibration")
    files = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
    if not files:
        raise ParameterError(f"no image files under {root} ({', '.join(IMG_EXTENSIONS)}): give "
                             "calibration a folder of images like those the model will see",
                             "calibration")
    if len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files


def calibration_batch(model: nn.Module, folder: str | os.PathLike, image_size: int | None = None,
                      limit: int = DEFAULT_CALIBRATION_IMAGES) -> np.ndarray:
    """The calibration images under `folder`, preprocessed by the model's `pretrained_cfg`:
    float32 (N, C, H, W). Undecodable files are skipped; none decodable is an error."""
    cfg = dict(model.pretrained_cfg)
    transform = eval_transform(cfg, image_size)
    images: list[torch.Tensor] = []
    bad: list[str] = []
    for path in calibration_files(folder, limit):
        try:
            images.append(transform(load_image(path)))
        except EffnetError:
            bad.append(str(path))
    if not images:
        raise EffnetError(f"none of the {len(bad)} calibration images under {folder} could be "
                          f"decoded (first: {bad[0]}): give readable images")
    return torch.stack(images).numpy().astype(np.float32, copy=False)


def has_vnni() -> bool:
    """Whether the CPU has VNNI (AVX512-VNNI or AVX-VNNI): int8 dot products without saturation."""
    flags = set(cpu_flags().split())
    return bool(flags & {"avx512_vnni", "avx_vnni"})


def _reduce(reduce_range: bool | None) -> bool:
    """7-bit weights unless asked otherwise: the default on CPUs without VNNI, where uint8 x
    int8 products can saturate (ONNX Runtime's quantization guide)."""
    return (not has_vnni()) if reduce_range is None else reduce_range


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an array, `batch` images at a time."""

    def __init__(self, name: str, data: np.ndarray, batch: int) -> None:
        self._batches = iter([{name: data[i:i + batch]} for i in range(0, len(data), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if name not in methods:
        raise ParameterError(f"unknown calibration method {name!r}: use one of "
                             f"{', '.join(CALIBRATION_METHODS)}", "method")
    return methods[name]


def _flush_every(batches: int) -> int:
    """How many batches ONNX Runtime's calibrator holds before folding them into its ranges:
    about 4 (memory), but never a divisor of `batches`: when the last batch lands on a flush,
    it finds nothing left and fails with "No data is collected" (256 images = 32 batches of 8,
    the default, did)."""
    return next(k for k in itertools.count(4) if batches % k)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs a line per op and suggests pre-processing we do: keep its info quiet."""
    import logging

    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def weight_levels(reduce_range: bool) -> int:
    """The largest |q| of ONNX Runtime's symmetric int8 weight grid: 127, or 64 with
    `reduce_range` (its 7-bit range [-64, 64])."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.INT8, reduce_range, symmetric=True)
    return int(round((float(qmax) - float(qmin)) / 2))


def _round_keeping_sum(v: torch.Tensor, levels: int) -> torch.Tensor:
    """Round each row of `v` (weights in units of the row's scale, |v| <= levels) to integers
    whose sum is the nearest integer to the row's sum: the taps closest to rounding the other
    way are moved, never beyond +-levels."""
    q = v.round()
    need = (v.sum(1) - q.sum(1)).round()
    frac = v - q
    for row in torch.nonzero(need).flatten().tolist():
        k = int(need[row])
        step = 1.0 if k > 0 else -1.0
        order = torch.argsort(frac[row], descending=k > 0).tolist()
        movable = [i for i in order if abs(float(q[row, i]) + step) <= levels]
        q[row, movable[:abs(k)]] += step
    return q


def _input_means(model: nn.Module, data: np.ndarray, batch: int = 32
                 ) -> dict[nn.Module, torch.Tensor]:
    """Per-input-channel mean of what each conv / linear layer of `model` sees on `data`
    (padding included: the layer's true input), for the layers actually called."""
    sums: dict[nn.Module, torch.Tensor] = {}
    counts: dict[nn.Module, int] = {}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach()
        total = x.sum((0, 2, 3) if x.dim() == 4 else (0,), dtype=torch.float64)
        sums[module] = sums.get(module, 0) + total
        counts[module] = counts.get(module, 0) + x.numel() // x.shape[1]

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            for i in range(0, len(data), batch):
                model(torch.from_numpy(np.ascontiguousarray(data[i:i + batch])))
    finally:
        for h in handles:
            h.remove()
    return {m: sums[m] / counts[m] for m in sums}


def prepare_weights(model: nn.Module, calibration: np.ndarray, reduce_range: bool) -> nn.Module:
    """Put every conv / linear weight of the BN-folded `model` on ONNX Runtime's per-channel
    symmetric int8 grid (scale = max|w| / levels per output channel, as its quantizer computes
    it, so quantizing again changes nothing), rounding so that each output channel keeps its
    weight sum, then correct each bias by the mean output shift on `calibration` (empirical
    bias correction, Nagel et al. 2019). In place; returns `model`."""
    levels = weight_levels(reduce_range)
    means = _input_means(model, calibration)
    for layer, mean in means.items():
        w = layer.weight.detach().double()
        rows = w.reshape(w.shape[0], -1)
        absmax = rows.abs().amax(1)
        live = absmax > 1e-30
        scale = (absmax / levels).to(torch.float32).double()  # as ONNX Runtime stores it
        q = rows.clone()
        q[live] = _round_keeping_sum(rows[live] / scale[live, None], levels) * scale[live, None]
        new = q.reshape(w.shape)
        shift = new - w  # (out, in / groups, kh, kw) or (out, in)
        if layer.bias is not None:
            per_in = shift.reshape(shift.shape[0], shift.shape[1], -1).sum(-1)
            groups = getattr(layer, "groups", 1)  # each output channel reads its group's inputs
            seen = mean.reshape(groups, -1).repeat_interleave(shift.shape[0] // groups, dim=0)
            layer.bias.data -= (per_in * seen).sum(1).to(layer.bias.dtype)
        layer.weight.data = new.to(layer.weight.dtype)
    return model


def quantize_onnx(fp32_path: str | os.PathLike, output: str | os.PathLike,
                  calibration: np.ndarray, method: str = "minmax",
                  reduce_range: bool | None = None) -> Path:
    """Quantize an FP32 ONNX file to INT8 (QDQ, per-channel int8 weights, uint8 activations),
    with activation ranges from `calibration` (N, C, H, W float32); written atomically.

    `reduce_range` (7-bit weights) defaults to True on CPUs without VNNI, where uint8 x int8
    products can saturate (ONNX Runtime's quantization guide).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate = _method(method)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise EffnetError(f"calibration data must be images (N, C, H, W), got shape "
                          f"{calibration.shape}")
    output = Path(output)
    reduce = _reduce(reduce_range)
    with tempfile.TemporaryDirectory(prefix="effnet-int8-") as tmp, _quiet_quantizer():
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        except Exception as err:  # onnx / onnxruntime's own error types
            raise EffnetError(f"cannot prepare {fp32_path} for quantization "
                              f"({first_line(err)}): export it again with `effnet export`"
                              ) from None
        import onnx

        name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
        # the histogram calibrators cannot merge batches of different sizes: one image each
        batch = CALIBRATION_BATCH if method == "minmax" else 1
        reader = _Reader(name, calibration, batch)
        with atomic_path(output, suffix=".onnx") as out:
            quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=reduce,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calibrate,
                            extra_options={"CalibMaxIntermediateOutputs": _flush_every(
                                -(-len(calibration) // batch))})
    return output


def export_int8(model: nn.Module, output: str | os.PathLike, calibration: np.ndarray | str
                | os.PathLike, image_size: int | None = None, method: str = "minmax",
                allow_swish: bool = False, reduce_range: bool | None = None,
                calibration_images: int = DEFAULT_CALIBRATION_IMAGES) -> Path:
    """Export `model` (eval mode) as an INT8 ONNX file calibrated on `calibration`: a folder of
    images (preprocessed by the model's pretrained_cfg) or an array (N, C, H, W).

    The BN-folded model, its weights rounded and biases corrected on the calibration images
    (:func:`prepare_weights`), is exported (dynamic batch) and quantized by
    :func:`quantize_onnx`. Swish models need `allow_swish` (:func:`check_int8_allowed`).
    """
    check_int8_allowed(model, allow_swish)
    _method(method)
    size = int(image_size or model.pretrained_cfg["input_size"][-1])
    data = (np.asarray(calibration, dtype=np.float32) if isinstance(calibration, np.ndarray)
            else calibration_batch(model, calibration, size, calibration_images))
    if data.shape[-1] != size or data.shape[-2] != size:
        raise EffnetError(f"calibration images are {data.shape[-2]}x{data.shape[-1]} but the "
                          f"export is {size}x{size}: preprocess them at the export size")
    return quantize_model(model, output, data, size, method, reduce_range)


def quantize_model(model: nn.Module, output: str | os.PathLike, data: np.ndarray, size: int,
                   method: str = "minmax", reduce_range: bool | None = None) -> Path:
    """The INT8 file of `model` at `size` px, calibrated on `data` (N, C, size, size): its
    BN-folded export form with weights prepared by :func:`prepare_weights`, exported to ONNX
    and quantized by :func:`quantize_onnx`. No checks: see :func:`export_int8`."""
    from .export import export_onnx
    from .optimize import export_form

    reduce = _reduce(reduce_range)
    with tempfile.TemporaryDirectory(prefix="effnet-int8-") as tmp:
        form = prepare_weights(export_form(model.eval(), size), data, reduce)
        fp32 = export_onnx(form, Path(tmp) / "fp32.onnx", size)
        return quantize_onnx(fp32, output, data, method, reduce)


def top1_agreement(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Fraction of rows whose arg-max class is the same in `a` and `b` (logits)."""
    a, b = np.asarray(a), np.asarray(b)
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def relative_error(ours: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    """||ours - ref|| / ||ref|| over all logits (the INT8 check: quantization noise vs signal)."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-12))


__all__: Sequence[str] = ["CALIBRATION_METHODS", "SWISH_INT8_TOP1_DROP", "calibration_batch",
                          "calibration_files", "check_int8_allowed", "export_int8",
                          "prepare_weights", "quantize_model", "quantize_onnx", "relative_error",
                          "top1_agreement", "uses_swish", "weight_levels"]
