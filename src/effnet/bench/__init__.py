"""Benchmarks: effnet against timm and torchvision on the same weights, in one process.

Every comparison builds the implementations once, copies one set of weights
into all of them (their state dicts list the same tensors in the same order),
checks that they compute the same outputs, then times them alternately,
rotating the order each round, and reports medians over rounds. Ratios are
against timm's eager model, the library people use today.

* :mod:`.references` - the reference models and the implementations compared;
* :mod:`.results` - the typed result each benchmark returns (a frozen dataclass that
  formats itself with `format()` / `str()` and gives its JSON with `as_dict()`);
* :mod:`.records` - the typed rows and parts those results are made of;
* :mod:`.harness` - alternating timing, thread control, `format_table` and `write_json`;
* :mod:`.inference` - images/s at given batch sizes (paper Sec. 1: "smaller and faster");
* :mod:`.training` - training-step images/s, bytes kept for backward and peak memory;
* :mod:`.memory` - what a training step keeps for backward, op by op, and its peak memory;
* :mod:`.table4` - paper Table 4: EfficientNet-B1 against ResNet-152, batch 1, one core;
* :mod:`.limits` - the matmul peak (GFLOP/s), copy bandwidth and the bytes-moved bound of
  the depthwise convolutions;
* :mod:`.deploy` - every CPU engine (effnet.inference.engines) head to head, each in its own
  process, against timm with each engine's defaults.

Peak memory on CPU is measured in a fresh child process per implementation
(see :mod:`.memory`); on CUDA the allocator's own peak statistics are used.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "BASELINE": "references",
    "BenchResult": "results",
    "DeployResult": "results",
    "DeployRow": "records",
    "DepthwiseBound": "records",
    "DepthwiseLayer": "records",
    "IMPL_HELP": "impls",
    "INFERENCE_IMPLS": "impls",
    "InferenceResult": "results",
    "InferenceRow": "records",
    "LimitsResult": "results",
    "MemoryResult": "results",
    "OPTIONAL_INFERENCE_IMPLS": "impls",
    "PAPER_TABLE4": "references",
    "PeakFraction": "records",
    "REFERENCE_BN_EPS": "references",
    "Record": "records",
    "Row": "records",
    "TRAINING_IMPLS": "impls",
    "Table4Result": "results",
    "TrainingResult": "results",
    "TrainingRow": "records",
    "copy_bandwidth": "limits",
    "copy_weights_by_order": "references",
    "deploy": "deploy",
    "depthwise_bound": "limits",
    "describe_device": "harness",
    "format_table": "harness",
    "inference": "inference",
    "machine_limits": "limits",
    "matmul_peak": "limits",
    "memory_report": "memory",
    "num_threads": "harness",
    "peak_step_memory": "memory",
    "randomize_bn": "references",
    "reference_models": "references",
    "saved_bytes": "memory",
    "saved_tensors_by_op": "memory",
    "table4": "table4",
    "time_alternating": "harness",
    "training": "training",
    "write_json": "harness",
}

__all__ = ["BASELINE", "IMPL_HELP", "INFERENCE_IMPLS", "OPTIONAL_INFERENCE_IMPLS", "PAPER_TABLE4",
           "REFERENCE_BN_EPS", "TRAINING_IMPLS", "BenchResult", "DeployResult", "DeployRow",
           "DepthwiseBound",
           "DepthwiseLayer", "InferenceResult", "InferenceRow", "LimitsResult", "MemoryResult",
           "PeakFraction", "Record", "Row", "Table4Result", "TrainingResult", "TrainingRow",
           "copy_bandwidth", "copy_weights_by_order", "deploy",
           "depthwise_bound", "describe_device", "format_table", "inference", "machine_limits",
           "matmul_peak", "memory_report", "num_threads", "peak_step_memory", "randomize_bn",
           "reference_models", "saved_bytes", "saved_tensors_by_op", "table4",
           "time_alternating", "training", "write_json"]

if TYPE_CHECKING:
    from .deploy import deploy
    from .harness import describe_device, format_table, num_threads, time_alternating, write_json
    from .impls import IMPL_HELP, INFERENCE_IMPLS, OPTIONAL_INFERENCE_IMPLS, TRAINING_IMPLS
    from .inference import inference
    from .limits import copy_bandwidth, depthwise_bound, machine_limits, matmul_peak
    from .memory import memory_report, peak_step_memory, saved_bytes, saved_tensors_by_op
    from .records import (
        DeployRow,
        DepthwiseBound,
        DepthwiseLayer,
        InferenceRow,
        PeakFraction,
        Record,
        Row,
        TrainingRow,
    )
    from .references import (
        BASELINE,
        PAPER_TABLE4,
        REFERENCE_BN_EPS,
        copy_weights_by_order,
        randomize_bn,
        reference_models,
    )
    from .results import (
        BenchResult,
        DeployResult,
        InferenceResult,
        LimitsResult,
        MemoryResult,
        Table4Result,
        TrainingResult,
    )
    from .table4 import table4
    from .training import training

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
