"""CPU inference engines behind one interface, each checked against the eager model.

An :class:`Engine` says whether it can run here (:meth:`Engine.missing`: a
one-line reason and the install command), prepares a :class:`Runner` for a model
and a :class:`Setting` (image size, batch, threads), and states the tolerance its
outputs must meet against eager PyTorch (:meth:`Engine.check`).

========================  ====================================================  ===========
engine                    what runs                                             file
========================  ====================================================  ===========
``eager``                 the model as built (PyTorch, NCHW)                    -
``fast``                  :func:`optimize_for_inference`: BN folded,            -
                          channels_last, in-place activations
``torchscript``           ``fast`` traced and frozen for one input shape        ``.pt``
``compile``               ``fast`` under torch.compile (inductor), with          -
                          ``freezing`` (weights constant-folded)
``onnxruntime``           ``fast`` exported to ONNX (SAME padding and BN         ``.onnx``
                          folded into static pads and conv weights), ORT with
                          every graph optimization, sequential, fixed threads
``openvino``              the same ONNX file in OpenVINO's CPU plugin, FP32,     ``.xml``
                          latency hint, fixed threads
``onnxruntime-int8``      INT8 QDQ file (:mod:`.quantize`) in ONNX Runtime      ``.onnx``
``openvino-int8``         the same INT8 file in OpenVINO                        ``.xml``
========================  ====================================================  ===========

``tuned=False`` gives an engine with its defaults instead (the model exported as it is,
default session options, no freezing) except the thread count: what a user of
another library gets, the reference `effnet bench deploy` compares with.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import EffnetError

ONNX_HINT = "pip install 'effnet[onnx]'"
OPENVINO_HINT = "pip install 'effnet[openvino]'"


@dataclass(frozen=True)
class Setting:
    """What an engine is prepared for: input (C, H, W), batch size and CPU threads."""

    image_size: int
    batch: int = 1
    threads: int = 1
    in_chans: int = 3

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_chans, self.image_size, self.image_size)


@dataclass
class Runner:
    """A prepared engine: `run(x)` gives logits; `bind(x)` a zero-argument call for timing."""

    engine: str
    run: Callable[[np.ndarray], np.ndarray]
    bind: Callable[[np.ndarray], Callable[[], Any]]
    save: Callable[[Path], list[Path]] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """An engine's outputs against eager's on the same inputs, and whether they pass: `allowed`
    bounds max |diff| (FP32) or the relative error (INT8)."""

    engine: str
    max_abs_diff: float
    allowed: float
    relative_error: float
    top1_agreement: float
    passed: bool
    int8: bool = False

    def describe(self) -> str:
        """The check in words: the criterion that decides first, with its limit."""
        diff = f"max |diff| {self.max_abs_diff:.2e}"
        rel = f"relative error {self.relative_error:.2e}"
        limit = f" (allowed {self.allowed:.2e})"
        first, second = (rel + limit, diff) if self.int8 else (diff + limit, rel)
        return (f"{self.engine}: {first}, {second}, top-1 agreement "
                f"{100 * self.top1_agreement:.1f}%")


# Each engine's preparation: (model, setting, workdir, tuned, calibration) -> Runner.
Prepare = Callable[[nn.Module, Setting, Path, bool, "np.ndarray | None"], Runner]


@dataclass(frozen=True)
class Engine:
    """One way to run a model on CPU, with the tolerance its outputs must meet against eager.

    FP32 engines pass when max |logit diff| <= atol + rtol * max |eager logit|; INT8 engines
    when the relative error ||int8 - eager|| / ||eager|| <= `max_relative_error` (their
    top-1 agreement is reported beside it).
    """

    name: str
    help: str
    prepare: Prepare
    requires: tuple[str, ...] = ()
    hint: str = ""
    suffix: str | None = None
    int8: bool = False
    atol: float = 1e-4
    rtol: float = 1e-4
    max_relative_error: float = 0.25

    def missing(self) -> str | None:
        """None when the engine can run here, else a one-line reason with the fix."""
        absent = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if absent:
            return f"engine {self.name} needs {', '.join(absent)}: {self.hint}"
        return None

    def check(self, ours: np.ndarray, ref: np.ndarray) -> Check:
        """Compare this engine's logits with eager's on the same inputs."""
        from .quantize import relative_error, top1_agreement

        ours, ref = np.asarray(ours, dtype=np.float32), np.asarray(ref, dtype=np.float32)
        if ours.shape != ref.shape:
            raise EffnetError(f"engine {self.name} gave outputs of shape {ours.shape}, eager "
                              f"{ref.shape}: report this as a bug")
        diff = float(np.abs(ours - ref).max()) if ref.size else 0.0
        rel = relative_error(ours, ref)
        agree = top1_agreement(ours, ref)
        allowed = (self.max_relative_error if self.int8 else
                   self.atol + self.rtol * float(np.abs(ref).max(initial=0.0)))
        passed = bool(np.isfinite(ours).all()) and (rel if self.int8 else diff) <= allowed
        return Check(self.name, diff, allowed, rel, agree, passed, self.int8)


# ---------------------------------------------------------------- torch engines
def _torch_runner(name: str, module: Callable[[torch.Tensor], torch.Tensor],
                  threads: int, channels_last: bool) -> Runner:
    torch.set_num_threads(threads)

    def bind(x: np.ndarray) -> Callable[[], Any]:
        t = torch.from_numpy(np.ascontiguousarray(x))
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)

        def call() -> torch.Tensor:
            with torch.inference_mode():
                return module(t)

        return call

    return Runner(name, lambda x: bind(x)().float().numpy(), bind)


def _prepare_eager(model: nn.Module, s: Setting, workdir: Path, tuned: bool,
                   calibration: np.ndarray | None) -> Runner:
    return _torch_runner("eager", model.eval(), s.threads, channels_last=False)


def _prepare_fast(model: nn.Module, s: Setting, workdir: Path, tuned: bool,
                  calibration: np.ndarray | None) -> Runner:
    from .optimize import optimize_for_inference

    return _torch_runner("fast", optimize_for_inference(model), s.threads, channels_last=True)


def _prepare_torchscript(model: nn.Module, s: Setting, workdir: Path, tuned: bool,
                         calibration: np.ndarray | None) -> Runner:
    from .export import export_torchscript
    from .optimize import optimize_for_inference

    example = torch.zeros(s.shape).contiguous(memory_format=torch.channels_last)
    fast = optimize_for_inference(model, example_input=example, torchscript=True)
    runner = _torch_runner("torchscript", fast, s.threads, channels_last=True)
    fast_eager = optimize_for_inference(model)

    def save(path: Path) -> list[Path]:
        return [export_torchscript(fast_eager, path, s.image_size)]

    runner.save = save
    return runner


def _prepare_compile(model: nn.Module, s: Setting, workdir: Path, tuned: bool,
                     calibration: np.ndarray | None) -> Runner:
    """torch.compile (inductor): tuned, of the fast model with `freezing` (constant weights
    folded, conv layouts chosen once); with defaults, of the model as it is."""
    import torch._inductor.config as inductor_config

    from .optimize import optimize_for_inference

    base = optimize_for_inference(model) if tuned else model.eval()
    compiled = torch.compile(base, dynamic=False)
    runner = _torch_runner("compile", compiled, s.threads, channels_last=tuned)
    warm = runner.bind(np.zeros(s.shape, dtype=np.float32))
    with inductor_config.patch(freezing=tuned):  # compiles now, for this shape
        warm()
    return runner


# ---------------------------------------------------------------- ONNX engines
def fp32_onnx(model: nn.Module, s: Setting, workdir: Path, tuned: bool = True) -> Path:
    """The model's FP32 ONNX file in `workdir`, written once: tuned, of the BN-folded fast
    model (effnet's export); with defaults, of the model as it is."""
    from .export import export_onnx
    from .optimize import export_form

    path = workdir / f"fp32-{'fast' if tuned else 'plain'}-{s.image_size}.onnx"
    if path.is_file():
        return path
    if tuned:
        export_onnx(export_form(model, s.image_size), path, s.image_size)
    else:
        plain_onnx(model, path, s)
    return path


def plain_onnx(model: nn.Module, path: Path, s: Setting) -> Path:
    """Any model exported as a user of another library would: torch.onnx.export (TorchScript
    exporter, opset 17, dynamic batch) of the model as it is, in eval mode."""
    from ..io_utils import atomic_path
    from .optimize import quiet_tracing

    with quiet_tracing(), atomic_path(path, suffix=".onnx") as tmp, torch.no_grad():
        torch.onnx.export(model.eval(), (torch.zeros(1, *s.shape[1:]),), str(tmp),
                          dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17)
    return path


def int8_onnx(model: nn.Module, s: Setting, workdir: Path, calibration: np.ndarray | None
              ) -> Path:
    """The INT8 QDQ file in `workdir` (:func:`~effnet.inference.quantize.quantize_model`, what
    `effnet export --int8` writes), written once from `calibration` (N, C, H, W); without
    calibration images, from random normal ones (enough for speed, not for accuracy)."""
    from .quantize import quantize_model

    path = workdir / f"int8-{s.image_size}.onnx"
    if not path.is_file():
        if calibration is None:
            g = np.random.default_rng(0)
            calibration = g.standard_normal((16, s.in_chans, s.image_size, s.image_size),
                                            dtype=np.float32)
        quantize_model(model, path, calibration, s.image_size)
    return path


def ort_session(path: Path, threads: int, tuned: bool = True) -> Any:
    """An ONNX Runtime CPU session: tuned, every graph optimization, one op at a time on
    `threads` threads; with defaults, only the thread count set."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if tuned:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort_runner(name: str, path: Path, s: Setting, tuned: bool) -> Runner:
    import shutil

    session = ort_session(path, s.threads, tuned)
    input_name = session.get_inputs()[0].name

    def bind(x: np.ndarray) -> Callable[[], Any]:
        feed = {input_name: np.ascontiguousarray(x, dtype=np.float32)}
        return lambda: session.run(None, feed)[0]

    def save(out: Path) -> list[Path]:
        from ..io_utils import atomic_path

        with atomic_path(out, suffix=".onnx") as tmp:
            shutil.copyfile(path, tmp)
        return [out]

    return Runner(name, lambda x: bind(x)(), bind, save)


def _prepare_ort(model: nn.Module, s: Setting, workdir: Path, tuned: bool,
                 calibration: np.ndarray | None) -> Runner:
    return _ort_runner("onnxruntime", fp32_onnx(model, s, workdir, tuned), s, tuned)


def _prepare_ort_int8(model: nn.Module, s: Setting, workdir: Path, tuned: bool,
                      calibration: np.ndarray | None) -> Runner:
    return _ort_runner("onnxruntime-int8", int8_onnx(model, s, workdir, calibration), s, tuned)


def _ov_runner(name: str, path: Path, s: Setting, tuned: bool) -> Runner:
    """OpenVINO's CPU plugin on an ONNX file: FP32 inference precision always (some CPUs
    default to bf16), the thread count; tuned adds the latency hint and one stream."""
    import openvino as ov

    core = ov.Core()
    ov_model = core.read_model(str(path))
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": s.threads,
                              "INFERENCE_PRECISION_HINT": "f32"}
    if tuned:
        config.update(PERFORMANCE_HINT="LATENCY", NUM_STREAMS=1)
    compiled = core.compile_model(ov_model, "CPU", config)
    request = compiled.create_infer_request()

    def bind(x: np.ndarray) -> Callable[[], Any]:
        feed = np.ascontiguousarray(x, dtype=np.float32)
        return lambda: request.infer({0: feed})[0]

    def save(out: Path) -> list[Path]:
        return save_openvino(ov_model, out)

    return Runner(name, lambda x: np.array(bind(x)()), bind, save)


def save_openvino(ov_model: Any, out: Path) -> list[Path]:
    """Write an OpenVINO model as IR (`out`.xml and `out`.bin, FP32 weights), each file
    complete or absent: written in a temporary folder beside them, fsynced, renamed."""
    import tempfile

    import openvino as ov

    xml, bin_ = out.with_suffix(".xml"), out.with_suffix(".bin")
    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=".effnet-openvino-") as tmp:
        staged = Path(tmp) / "model.xml"
        ov.save_model(ov_model, str(staged), compress_to_fp16=False)
        for src, dst in ((staged.with_suffix(".bin"), bin_), (staged, xml)):  # weights first
            with open(src, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(src, dst)
    return [xml, bin_]


def _prepare_ov(model: nn.Module, s: Setting, workdir: Path, tuned: bool,
                calibration: np.ndarray | None) -> Runner:
    return _ov_runner("openvino", fp32_onnx(model, s, workdir, tuned), s, tuned)


def _prepare_ov_int8(model: nn.Module, s: Setting, workdir: Path, tuned: bool,
                     calibration: np.ndarray | None) -> Runner:
    return _ov_runner("openvino-int8", int8_onnx(model, s, workdir, calibration), s, tuned)


_ONNX = ("onnx", "onnxruntime")
ENGINES: dict[str, Engine] = {e.name: e for e in (
    Engine("eager", "PyTorch eager, the model as built", _prepare_eager, atol=1e-5, rtol=1e-5),
    Engine("fast", "effnet.optimize_for_inference: BN folded, channels_last, in place",
           _prepare_fast),
    Engine("torchscript", "fast, traced and frozen for one input shape", _prepare_torchscript,
           suffix=".pt"),
    Engine("compile", "fast under torch.compile (inductor, freezing)", _prepare_compile),
    Engine("onnxruntime", "fast exported to ONNX, ONNX Runtime tuned", _prepare_ort,
           requires=_ONNX, hint=ONNX_HINT, suffix=".onnx"),
    Engine("openvino", "the ONNX file in OpenVINO's CPU plugin, FP32", _prepare_ov,
           requires=("onnx", "openvino"), hint=OPENVINO_HINT, suffix=".xml", atol=1e-3,
           rtol=1e-3),
    Engine("onnxruntime-int8", "INT8 QDQ (static, per-channel) in ONNX Runtime",
           _prepare_ort_int8, requires=_ONNX, hint=ONNX_HINT, suffix=".onnx", int8=True),
    Engine("openvino-int8", "the INT8 QDQ file in OpenVINO", _prepare_ov_int8,
           requires=("onnx", "onnxruntime", "openvino"), hint=OPENVINO_HINT, suffix=".xml",
           int8=True),
)}


def get_engine(name: str) -> Engine:
    """The engine called `name`, or a one-line error listing them."""
    if name not in ENGINES:
        raise EffnetError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}")
    return ENGINES[name]


def available_engines(names: Sequence[str] | None = None) -> tuple[list[Engine], dict[str, str]]:
    """The engines of `names` (default all) that can run here, and why each other cannot."""
    engines = [get_engine(n) for n in (names if names is not None else ENGINES)]
    missing = {e.name: reason for e in engines if (reason := e.missing()) is not None}
    return [e for e in engines if e.name not in missing], missing


def require(name: str) -> Engine:
    """The engine `name` if it can run here, else a one-line error with the install command."""
    engine = get_engine(name)
    reason = engine.missing()
    if reason is not None:
        raise EffnetError(reason)
    return engine


def check_inputs(s: Setting, seed: int = 0) -> np.ndarray:
    """The random normal inputs every engine is checked on, for a setting."""
    return np.random.default_rng(seed).standard_normal(s.shape, dtype=np.float32)


def eager_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The reference: the model in eval mode on `x`, float32."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()
    model.train(was_training)
    return out
