"""Pick the fastest engine for a model on this machine, by measurement (`effnet export
--format best`).

Every candidate engine that can run here is prepared for the model at the
requested batch size and thread count, checked against eager PyTorch on the
same inputs (an engine outside its tolerance is dropped, and the pick says so),
then timed alternately by a `timer`; the fastest median wins. The timer is a
parameter so that a test can pass a fake one and see the pick follow it.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..errors import EffnetError
from .engines import ENGINES, Check, Runner, Setting, available_engines, check_inputs, eager_logits

# (engine name -> zero-argument call) -> engine name -> median seconds per call.
Timer = Callable[[dict[str, Callable[[], Any]]], dict[str, float]]


def alternate(calls: dict[str, Callable[[], Any]], rounds: int, min_time: float, warmup: int,
              sync: Callable[[], None] = lambda: None,
              progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each function, `rounds` rounds, the order rotated each round; each
    measurement repeats a call until it lasts `min_time` seconds (`sync` waits for a device
    before each clock read). `effnet bench` times with this too."""
    repeat: dict[str, int] = {}
    for name, call in calls.items():
        for _ in range(warmup):
            call()
        sync()
        t0 = time.perf_counter()
        call()
        sync()
        repeat[name] = max(1, math.ceil(min_time / max(time.perf_counter() - t0, 1e-6)))
    names = list(calls)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            sync()
            t0 = time.perf_counter()
            for _ in range(repeat[name]):
                calls[name]()
            sync()
            seconds[name].append((time.perf_counter() - t0) / repeat[name])
        if progress:
            progress(f"round {r + 1}/{rounds}")
    return seconds


def alternating_timer(rounds: int = 5, min_time: float = 0.2, warmup: int = 2) -> Timer:
    """A timer: the median per call of :func:`alternate`."""

    def timer(calls: dict[str, Callable[[], Any]]) -> dict[str, float]:
        return {n: statistics.median(v)
                for n, v in alternate(calls, rounds, min_time, warmup).items()}

    return timer


def exportable(int8: bool = False) -> list[str]:
    """The engines that write a file (candidates of --format best), FP32 or INT8."""
    return [e.name for e in ENGINES.values() if e.suffix is not None and e.int8 == int8]


@dataclass
class Pick:
    """The measured choice: the winner, every candidate's median, and why others were left out."""

    engine: str
    setting: Setting
    seconds: dict[str, float]
    checks: dict[str, Check]
    skipped: dict[str, str] = field(default_factory=dict)
    runners: dict[str, Runner] = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        """Which engine won and why: the times, each as a ratio to the winner's."""
        s = self.setting
        best = self.seconds[self.engine]
        lines = [f"fastest: {self.engine} at batch {s.batch}, {s.threads} thread(s), "
                 f"{s.image_size}px: {1e3 * best:.2f} ms per batch "
                 f"({s.batch / best:.1f} img/s), measured on this machine"]
        for name, sec in sorted(self.seconds.items(), key=lambda kv: kv[1]):
            lines.append(f"  {name:<18}{1e3 * sec:9.2f} ms  {sec / best:5.2f}x the winner's "
                         f"time; {self.checks[name].describe()}")
        lines += [f"  {name:<18}skipped: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def pick_fastest(model: nn.Module, setting: Setting, engines: Sequence[str] | None = None,
                 int8: bool = False, calibration: np.ndarray | None = None,
                 timer: Timer | None = None, workdir: str | Path | None = None) -> Pick:
    """Measure the candidate engines (default: every exportable one of that precision) for
    `model` at `setting` and return the fastest that passes its check against eager.

    The prepared runners (and the files they save) are kept in the pick only when
    `workdir` is given: it holds their files.
    """
    names = list(engines) if engines is not None else exportable(int8)
    usable, skipped = available_engines(names)
    x = check_inputs(setting)
    ref = eager_logits(model, x)
    runners: dict[str, Runner] = {}
    checks: dict[str, Check] = {}
    with tempfile.TemporaryDirectory(prefix="effnet-best-") as tmp:
        work = Path(workdir or tmp)
        for engine in usable:
            runner = engine.prepare(model, setting, work, True, calibration)
            check = engine.check(runner.run(x), ref)
            if check.passed:
                runners[engine.name], checks[engine.name] = runner, check
            else:
                skipped[engine.name] = f"outputs off eager: {check.describe()}"
        if not runners:
            why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "none given"
            raise EffnetError(f"no engine can run this model here ({why})")
        seconds = (timer or alternating_timer())({n: r.bind(x) for n, r in runners.items()})
        missing = set(runners) - set(seconds)
        if missing:
            raise EffnetError(f"the timer measured no time for {sorted(missing)}")
        winner = min(runners, key=lambda n: seconds[n])
        pick = Pick(winner, setting, {n: seconds[n] for n in runners}, checks, skipped, runners)
        if workdir is None:  # their files went with the temporary folder
            pick.runners = {}
        return pick


def export_fastest(model: nn.Module, output: str | Path, setting: Setting,
                   engines: Sequence[str] | None = None, int8: bool = False,
                   calibration: np.ndarray | None = None,
                   timer: Timer | None = None, force: bool = False) -> tuple[Pick, list[Path]]:
    """Pick the fastest engine (:func:`pick_fastest`) and write its file: `output` with the
    engine's suffix (.onnx, .xml + .bin, .pt); an existing file is replaced only with
    `force`. Returns the pick and the files written."""
    with tempfile.TemporaryDirectory(prefix="effnet-best-") as tmp:
        pick = pick_fastest(model, setting, engines, int8, calibration, timer, workdir=tmp)
        engine = ENGINES[pick.engine]
        save = pick.runners[pick.engine].save
        if save is None or engine.suffix is None:
            raise EffnetError(f"engine {pick.engine} writes no file: leave it out of the "
                              "candidates")
        target = Path(output).with_suffix(engine.suffix)
        if target.exists() and not force:
            raise EffnetError(f"{target} exists ({pick.engine} was fastest): add --force to "
                              "replace it, or give another --output")
        files = save(target)
    return pick, files
