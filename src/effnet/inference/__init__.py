"""Running trained models: the fused fast path, export, prediction and evaluation.

* :mod:`.optimize`: :func:`optimize_for_inference`, the same function computed faster
  (BN folded, channels_last);
* :mod:`.export`: ONNX (cached per weights) and TorchScript files, run in onnxruntime;
* :mod:`.predict`: :func:`prepare_model`, the one way predict and eval turn (model,
  weights, runtime) into logits; image decoding and top-k;
* :mod:`.evaluate`: top-1 / top-5 accuracy on an ImageFolder tree;
* :mod:`.engines`: every CPU engine (eager, fast, TorchScript, torch.compile, ONNX Runtime,
  OpenVINO, INT8) behind one interface, each checked against eager;
* :mod:`.quantize`: INT8 post-training static quantization calibrated on an image folder;
* :mod:`.fastest`: the engine measured fastest here (`effnet export --format best`).

The names below load their module on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "optimize_for_inference": "optimize",
    "export_form": "optimize",
    "export_int8": "quantize",
    "export_fastest": "fastest",
    "pick_fastest": "fastest",
    "ENGINES": "engines",
    "export_onnx": "export",
    "export_torchscript": "export",
    "PreparedModel": "predict",
    "prepare_model": "predict",
    "EvalResult": "evaluate",
}

__all__ = ["ENGINES", "EvalResult", "PreparedModel", "export_fastest", "export_form",
           "export_int8", "export_onnx", "export_torchscript", "optimize_for_inference",
           "pick_fastest", "prepare_model"]

if TYPE_CHECKING:
    from .engines import ENGINES
    from .evaluate import EvalResult
    from .export import export_onnx, export_torchscript
    from .fastest import export_fastest, pick_fastest
    from .optimize import export_form, optimize_for_inference
    from .predict import PreparedModel, prepare_model
    from .quantize import export_int8

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
