"""Running trained models: the fused fast path, export, prediction and evaluation.

* :mod:`.optimize`: :func:`optimize_for_inference`, the same function computed faster
  (BN folded, channels_last);
* :mod:`.export`: ONNX (cached per weights) and TorchScript files, run in onnxruntime;
* :mod:`.predict`: :func:`prepare_model`, the one way predict and eval turn (model,
  weights, runtime) into logits; image decoding and top-k;
* :mod:`.evaluate`: top-1 / top-5 accuracy on an ImageFolder tree.

The names below load their module on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "optimize_for_inference": "optimize",
    "export_onnx": "export",
    "export_torchscript": "export",
    "PreparedModel": "predict",
    "prepare_model": "predict",
    "EvalResult": "evaluate",
}

__all__ = ["EvalResult", "PreparedModel", "export_onnx", "export_torchscript",
           "optimize_for_inference", "prepare_model"]

if TYPE_CHECKING:
    from .evaluate import EvalResult
    from .export import export_onnx, export_torchscript
    from .optimize import optimize_for_inference
    from .predict import PreparedModel, prepare_model

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
