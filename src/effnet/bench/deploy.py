"""`effnet bench deploy`: every CPU engine head to head, against timm with its defaults.

For each model (default B0, Lite0, B3 at their resolutions), batch size and thread
count, every row below runs in its own process (its thread pools, memory and
compile caches isolated), all on the same weights (effnet's initialisation with
random BN statistics, copied into timm tensor by tensor):

* effnet's engines (:mod:`effnet.inference.engines`): ``eager``, ``fast``,
  ``torchscript``, ``compile``, ``onnxruntime``, ``openvino`` and the INT8 ones,
  each tuned as effnet runs it;
* the reference rows, timm's model with each engine's defaults (only the thread
  count set): ``timm-eager``, ``timm-compile``, ``timm-onnxruntime``, ``timm-openvino``.

Every row's logits are checked against effnet eager on the same inputs before any
timing (an FP32 row outside its tolerance, or an INT8 row whose relative error is
too large, is reported and not timed). Then the rows are timed in alternating
rounds (the order rotated each round; only one process runs at a time), and medians
are reported with images/s, GFLOP/s (2 x MACs per image), the share of the
machine's matmul peak at that thread count, and ratios against timm eager and the
best default engine. INT8 rows are calibrated on random inputs: they measure speed;
their accuracy cost is measured on real data by results/int8/run.sh.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EffnetError
from ..io_utils import first_line
from .records import DeployRow
from .results import DeployResult

DEPLOY_MODELS = ("b0", "lite0", "b3")
REFERENCE = "timm-eager"
# row -> (weights' library, engine, tuned). timm's rows use each engine's defaults.
ROWS: dict[str, tuple[str, str, bool]] = {
    "timm-eager": ("timm", "eager", False),
    "timm-compile": ("timm", "compile", False),
    "timm-onnxruntime": ("timm", "onnxruntime", False),
    "timm-openvino": ("timm", "openvino", False),
    "eager": ("effnet", "eager", True),
    "fast": ("effnet", "fast", True),
    "torchscript": ("effnet", "torchscript", True),
    "compile": ("effnet", "compile", True),
    "onnxruntime": ("effnet", "onnxruntime", True),
    "openvino": ("effnet", "openvino", True),
    "onnxruntime-int8": ("effnet", "onnxruntime-int8", True),
    "openvino-int8": ("effnet", "openvino-int8", True),
}


def model_resolution(model: str) -> int:
    """The model's own resolution (paper Table 2; Lite's release)."""
    from ..zoo import MODELS, canonical_name

    return int(MODELS[canonical_name(model)].resolution)


def all_threads() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---------------------------------------------------------------- one row's process
class RowSession:
    """One row for one model: prepares its engine per (batch, threads), checks, times."""

    def __init__(self, model: str, row: str, workdir: str, resolution: int | None = None
                 ) -> None:
        from ..inference.engines import get_engine
        from .references import reference_models

        source, engine, self.tuned = ROWS[row]
        self.engine = get_engine(engine)
        self.net = reference_models(model, (source,))[source].eval()
        self.resolution = resolution or model_resolution(model)
        self.workdir = Path(workdir)
        self.call: Callable[[], Any] | None = None

    def prepare(self, batch: int, threads: int) -> tuple[np.ndarray, float]:
        """Prepare the engine for (batch, threads); its logits on the check inputs, seconds."""
        from ..inference.engines import Setting, check_inputs

        setting = Setting(self.resolution, batch, threads)
        t0 = time.perf_counter()
        runner = self.engine.prepare(self.net, setting, self.workdir, self.tuned, None)
        x = check_inputs(setting)
        out = np.asarray(runner.run(x), dtype=np.float32)
        self.call = runner.bind(x)
        return out, time.perf_counter() - t0

    def calls_for(self, min_time: float, warmup: int = 2) -> int:
        """How many calls last `min_time` seconds (after `warmup` calls)."""
        assert self.call is not None
        for _ in range(warmup):
            self.call()
        t0 = time.perf_counter()
        self.call()
        return max(1, int(np.ceil(min_time / max(time.perf_counter() - t0, 1e-6))))

    def time(self, calls: int) -> float:
        """Seconds per call over `calls` calls."""
        assert self.call is not None
        t0 = time.perf_counter()
        for _ in range(calls):
            self.call()
        return (time.perf_counter() - t0) / calls


def _serve(conn: Any, model: str, row: str, workdir: str, resolution: int | None) -> None:
    """A row's process: build the session, then answer (method, args) until None."""
    try:
        session = RowSession(model, row, workdir, resolution)
        conn.send(("ok", None))
    except Exception as err:
        conn.send(("error", f"{type(err).__name__}: {first_line(err)}"))
        return
    while (msg := conn.recv()) is not None:
        method, args = msg
        try:
            conn.send(("ok", getattr(session, method)(*args)))
        except Exception as err:
            tb = traceback.format_exc(limit=-2).strip().splitlines()[-1]
            conn.send(("error", f"{type(err).__name__}: {first_line(err)} ({tb})"))


class RemoteRow:
    """A :class:`RowSession` in its own process (spawned: nothing shared with this one)."""

    def __init__(self, model: str, row: str, workdir: str, resolution: int | None = None
                 ) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, model, row, workdir, resolution),
                                 daemon=True)
        self._proc.start()
        child.close()
        self._reply()

    def _reply(self) -> Any:
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"the row's process died (exit code {self._proc.exitcode})"
                               ) from None
        if status != "ok":
            raise RuntimeError(value)
        return value

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self._conn.send((method, args))
            return self._reply()

        return call

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


# ---------------------------------------------------------------- the benchmark
def _rows(names: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """The rows to run (default all) and why each other cannot run here."""
    from ..inference.engines import get_engine

    names = list(names) if names is not None else list(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise EffnetError(f"unknown engine row(s) {unknown}: use {', '.join(ROWS)}")
    skipped = {}
    for n in names:
        reason = get_engine(ROWS[n][1]).missing()
        if reason is None and ROWS[n][0] == "timm":
            import importlib.util

            reason = None if importlib.util.find_spec("timm") else "timm rows need timm"
        if reason is not None:
            skipped[n] = reason
    return [n for n in names if n not in skipped], skipped


def _check_setting(models: Sequence[str], batches: Sequence[int], threads: Sequence[int],
                   rounds: int) -> None:
    from ..zoo import canonical_name

    for m in models:
        canonical_name(m)
    if not batches or min(batches) < 1 or not threads or min(threads) < 1 or rounds < 1:
        raise EffnetError("batch sizes, thread counts and rounds must be >= 1")


def deploy(models: Sequence[str] = DEPLOY_MODELS, batches: Sequence[int] = (1, 32),
           threads: Sequence[int] | None = None, rows: Sequence[str] | None = None,
           rounds: int = 7, min_time: float = 0.3, isolate: bool = True,
           resolution: int | None = None,
           peak_size: int = 2048, progress: Callable[[str], None] | None = None,
           command: str = "") -> DeployResult:
    """Time every engine row for each model, batch size and thread count (module docstring)."""
    from ..inference.engines import Setting, check_inputs, eager_logits
    from ..profiling import count_macs
    from .harness import num_threads
    from .limits import matmul_peak
    from .references import reference_models

    threads = list(threads or (1, all_threads()))
    threads = sorted(set(threads), key=threads.index)
    _check_setting(models, batches, threads, rounds)
    names, skipped = _rows(rows)
    say = progress or (lambda _msg: None)
    peaks = {}
    for t in threads:
        with num_threads(t):
            peaks[t] = matmul_peak(peak_size, repeats=max(3, min(rounds, 5)))
        say(f"matmul peak, {t} thread(s): {peaks[t]:.1f} GFLOP/s")
    out: list[DeployRow] = []
    info: dict[str, dict[str, int]] = {}
    for model in models:
        ref_net = reference_models(model, ("effnet",))["effnet"].eval()
        res = resolution or model_resolution(model)
        with num_threads(1):
            macs = count_macs(ref_net, res)
        info[model] = {"resolution": res, "macs_per_image": int(macs)}
        with tempfile.TemporaryDirectory(prefix="effnet-deploy-") as work:
            sessions = _start(model, names, work, isolate, res, skipped, say)
            try:
                for batch in batches:
                    for t in threads:
                        x = check_inputs(Setting(res, batch, t))
                        with num_threads(t):
                            ref = eager_logits(ref_net, x)
                        group = _measure(model, sessions, ref, batch, t, rounds, min_time, say)
                        out += _finish(group, macs, peaks[t])
            finally:
                for s in sessions.values():
                    if isinstance(s, RemoteRow):
                        s.close()
    return DeployResult(info, peaks, tuple(out), skipped, command, _versions())


def _start(model: str, names: Sequence[str], work: str, isolate: bool, resolution: int,
           skipped: dict[str, str], say: Callable[[str], None]) -> dict[str, Any]:
    """A session per row (its own process when `isolate`); rows that fail to start are skipped."""
    sessions: dict[str, Any] = {}
    for name in names:
        say(f"{model}: starting {name}")
        try:
            sessions[name] = (RemoteRow if isolate else RowSession)(model, name, work,
                                                                    resolution)
        except Exception as err:
            skipped[f"{model}/{name}"] = first_line(err)
    return sessions


def _measure(model: str, sessions: dict[str, Any], ref: np.ndarray, batch: int, threads: int,
             rounds: int, min_time: float, say: Callable[[str], None]) -> list[DeployRow]:
    """Prepare and check every row, then time those that passed in alternating rounds."""
    from ..inference.engines import get_engine

    rows: dict[str, DeployRow] = {}
    calls: dict[str, int] = {}
    for name, session in sessions.items():
        engine = get_engine(ROWS[name][1])
        say(f"{model} batch {batch} threads {threads}: preparing {name}")
        try:
            logits, prep_s = session.prepare(batch, threads)
        except Exception as err:
            rows[name] = _row(model, name, batch, threads, None, (), error=first_line(err))
            continue
        check = engine.check(logits, ref)
        rows[name] = _row(model, name, batch, threads, check, (), prepare_s=prep_s)
        if check.passed:
            calls[name] = session.calls_for(min_time)
    seconds: dict[str, list[float]] = {n: [] for n in calls}
    order = list(calls)
    for r in range(rounds):
        k = r % max(len(order), 1)
        for name in order[k:] + order[:k]:
            seconds[name].append(sessions[name].time(calls[name]))
        say(f"{model} batch {batch} threads {threads}: round {r + 1}/{rounds}")
    return [_replace(rows[n], seconds=tuple(seconds.get(n, ()))) for n in rows]


def _row(model: str, name: str, batch: int, threads: int, check: Any,
         seconds: tuple[float, ...], prepare_s: float = 0.0, error: str = "") -> DeployRow:
    from ..inference.engines import get_engine

    source, engine, tuned = ROWS[name]
    int8 = get_engine(engine).int8
    return DeployRow(model, name, engine, source, tuned, int8, batch, threads, seconds,
                     check and check.max_abs_diff, check and check.allowed,
                     check and check.relative_error, check and check.top1_agreement,
                     bool(check and check.passed), prepare_s=prepare_s, error=error)


def _replace(row: DeployRow, **changes: Any) -> DeployRow:
    from dataclasses import replace

    return replace(row, **changes)


def _finish(rows: list[DeployRow], macs: int, peak: float) -> list[DeployRow]:
    """GFLOP/s, share of the matmul peak and ratio to timm eager, for the timed rows."""
    ref = next((r for r in rows if r.row == REFERENCE and r.seconds), None)
    out = []
    for r in rows:
        if not r.seconds:
            out.append(r)
            continue
        gflops = 2 * macs * r.images_per_s / 1e9
        out.append(_replace(r, gflops=gflops, share_of_peak=gflops / peak,
                            x_timm_eager=(ref.median_s / r.median_s) if ref else None))
    return out


def _versions() -> dict[str, str]:
    """Versions of the engines' libraries that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "timm", "onnx", "onnxruntime", "openvino"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out
