"""Typed benchmark results: what each benchmark function returns, formatting itself.

A result is a frozen :class:`~.records.Record` with a `task` (the JSON's "task"):
`format()` is the table `effnet bench` prints (also `str(result)`), `as_dict()`
the JSON it writes.

* :class:`InferenceResult` - images/s at each batch size (`bench.inference`);
* :class:`TrainingResult` - step images/s, saved and peak memory (`bench.training`);
* :class:`Table4Result` - paper Table 4, B1 against ResNet-152 (`bench.table4`);
* :class:`LimitsResult` - matmul peak, copy bandwidth, the depthwise bound (`bench.machine_limits`);
* :class:`MemoryResult` - bytes kept for backward by op and role (`bench.memory_report`);
* :class:`DeployResult` - every CPU engine at every setting, matmul peaks (`bench.deploy`).

No torch here.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .records import (
    DeployRow,
    DepthwiseBound,
    InferenceRow,
    PeakFraction,
    Record,
    TrainingRow,
    _mib,
)


@dataclass(frozen=True)
class InferenceResult(Record):
    """Images/s of each implementation at each batch size (see `bench.inference`)."""

    task: ClassVar[str] = "inference"
    model: str
    resolution: int
    device: str
    amp: bool
    threads: int
    macs_per_image: int
    baseline: str
    rows: tuple[InferenceRow, ...]

    def format(self) -> str:
        b = self.baseline
        lines = [f"{self.model} inference @{self.resolution}px on {self.device}, "
                 f"{self.threads} threads{', bf16 autocast' if self.amp else ''}; medians",
                 f"{'impl':<16}{'batch':>6}{'img/s':>10}{'x ' + b:>9}{'GFLOP/s':>9}"
                 f"{'max|diff|':>11}"]
        return "\n".join(lines + [r.format() for r in self.rows])


@dataclass(frozen=True)
class TrainingResult(Record):
    """Training-step images/s, saved and peak memory per implementation (`bench.training`)."""

    task: ClassVar[str] = "training"
    model: str
    resolution: int
    device: str
    amp: bool
    channels_last: bool
    threads: int
    baseline: str
    optimizer: str
    rows: tuple[TrainingRow, ...]

    def format(self) -> str:
        b = self.baseline
        lines = [f"{self.model} training step @{self.resolution}px, batch "
                 f"{self.rows[0].batch}, on {self.device}, {self.threads} threads"
                 f"{', bf16 autocast' if self.amp else ''}"
                 f"{', channels_last' if self.channels_last else ''}; medians",
                 f"{'impl':<20}{'img/s':>8}{'x ' + b:>9}{'saved MiB':>11}{'x ' + b:>9}"
                 f"{'peak MiB':>10}{'x ' + b:>9}"]
        return "\n".join(lines + [r.format() for r in self.rows])


@dataclass(frozen=True)
class Table4Result(Record):
    """Paper Table 4 here: seconds per round of each model, batch 1 (`bench.table4`)."""

    task: ClassVar[str] = "table4"
    threads: int
    device: str
    seconds: Mapping[str, tuple[float, ...]]
    b1_macs: int
    resnet152_macs: int
    paper: Mapping[str, float]

    @property
    def latency_s(self) -> dict[str, float]:
        """Median seconds of each model."""
        return {k: statistics.median(v) for k, v in self.seconds.items()}

    @property
    def speedup_eager(self) -> float:
        """ResNet-152's latency over B1's, both eager."""
        lat = self.latency_s
        return lat["resnet152"] / lat["b1"]

    @property
    def speedup_optimized(self) -> float:
        """ResNet-152 traced over B1's faster fast path."""
        lat = self.latency_s
        return lat["resnet152-ts"] / min(lat["b1-fast"], lat["b1-ts"])

    def format(self) -> str:
        p = self.paper
        lines = [f"Paper Table 4 on {self.device}, batch 1, {self.threads} thread(s); "
                 "median latency"]
        lines += [f"  {k:<14}{v * 1e3:>9.1f} ms" for k, v in self.latency_s.items()]
        lines.append(f"  ResNet-152 / B1, both eager:     {self.speedup_eager:.2f}x")
        lines.append(f"  ResNet-152 / B1, both optimized: {self.speedup_optimized:.2f}x")
        lines.append(f"  paper: {p['resnet152_s']} s / {p['b1_s']} s = {p['speedup']}x "
                     f"(MACs ratio {self.resnet152_macs / self.b1_macs:.1f}x)")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "threads": self.threads, "device": self.device,
                "latency_s": self.latency_s,
                "seconds": {k: list(v) for k, v in self.seconds.items()},
                "speedup_eager": self.speedup_eager, "speedup_optimized": self.speedup_optimized,
                "paper": dict(self.paper),
                "macs": {"b1": self.b1_macs, "resnet152": self.resnet152_macs}}


@dataclass(frozen=True)
class LimitsResult(Record):
    """Matmul peak, copy bandwidth, the depthwise bound and fractions of the peak."""

    task: ClassVar[str] = "limits"
    threads: int
    device: str
    matmul_gflops: float
    copy_gbs: float
    depthwise: DepthwiseBound
    fraction_of_peak: tuple[PeakFraction, ...] = ()

    def format(self) -> str:
        lines = [f"Machine limits on {self.device}, {self.threads} threads",
                 f"  matmul peak (2048^3 fp32):  {self.matmul_gflops:.1f} GFLOP/s",
                 f"  copy bandwidth:             {self.copy_gbs:.1f} GB/s",
                 self.depthwise.format()]
        return "\n".join(lines + [r.format() for r in self.fraction_of_peak])

    def as_dict(self) -> dict[str, Any]:
        d = {"task": self.task, "threads": self.threads, "device": self.device,
             "matmul_gflops": self.matmul_gflops, "copy_gbs": self.copy_gbs,
             "depthwise": self.depthwise.as_dict()}
        if self.fraction_of_peak:
            d["fraction_of_peak"] = [r.as_dict() for r in self.fraction_of_peak]
        return d


@dataclass(frozen=True)
class MemoryResult(Record):
    """Bytes kept for backward, by op and by role, per implementation (`bench.memory_report`).

    `impls[impl]` is `saved_tensors_by_op`'s report: {"by_op": [...], "by_role": [...]}.
    """

    task: ClassVar[str] = "memory"
    model: str
    batch: int
    resolution: int
    impls: Mapping[str, Mapping[str, list[dict[str, Any]]]]

    def total(self, impl: str, key: str = "by_op") -> int:
        """All bytes `impl` keeps (the same by op and by role)."""
        return sum(r["bytes"] for r in self.impls[impl][key])

    def format(self) -> str:
        lines = [f"Kept for backward by one training forward of {self.model} "
                 f"@{self.resolution}px, batch {self.batch} (MiB)"]
        impls = list(self.impls)
        for key, label in (("by_op", "op"), ("by_role", "role")):
            table: dict[str, dict[str, int]] = {}
            for impl in impls:
                for r in self.impls[impl][key]:
                    table.setdefault(r[label], {})[impl] = r["bytes"]
            lines.append(f"{label:<34}" + "".join(f"{i:>16}" for i in impls))
            for k in sorted(table, key=lambda k: -max(table[k].values())):
                lines.append(f"{k[:33]:<34}" + "".join(f"{_mib(table[k].get(i)):>16}"
                                                       for i in impls))
            lines.append(f"{'total':<34}" + "".join(f"{_mib(self.total(i, key)):>16}"
                                                    for i in impls))
            lines.append("")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "model": self.model, "batch": self.batch,
                "resolution": self.resolution,
                "impls": {k: {kk: [dict(r) for r in vv] for kk, vv in v.items()}
                          for k, v in self.impls.items()}}


BenchResult = InferenceResult | TrainingResult | Table4Result | LimitsResult | MemoryResult


@dataclass(frozen=True)
class DeployResult(Record):
    """Every row at every setting, the matmul peaks, and the summary ratios."""

    task: ClassVar[str] = "deploy"
    models: dict[str, dict[str, int]]
    peaks_gflops: dict[int, float]
    rows: tuple[DeployRow, ...]
    skipped: dict[str, str]
    command: str = ""
    versions: dict[str, str] | None = None

    def groups(self) -> dict[tuple[str, int, int], list[DeployRow]]:
        out: dict[tuple[str, int, int], list[DeployRow]] = {}
        for r in self.rows:
            out.setdefault((r.model, r.batch, r.threads), []).append(r)
        return out

    def summary(self) -> list[dict[str, Any]]:
        """Per setting: effnet's best FP32 row against the best default (timm) row, and each
        INT8 row against its engine's FP32 row."""
        out = []
        for (model, batch, threads), rows in self.groups().items():
            timed = {r.row: r for r in rows if r.seconds}
            ours = [r for r in timed.values() if r.source == "effnet" and not r.int8]
            theirs = [r for r in timed.values() if r.source != "effnet"]
            s: dict[str, Any] = {"model": model, "batch": batch, "threads": threads}
            if ours and theirs:
                best, ref = min(ours, key=_median), min(theirs, key=_median)
                s.update(best=best.row, best_default=ref.row,
                         x_best_default=ref.median_s / best.median_s)
            for r in timed.values():
                fp32 = timed.get(r.row.removesuffix("-int8"))
                if r.int8 and fp32 is not None:
                    s[f"{r.row}_x_fp32"] = fp32.median_s / r.median_s
            out.append(s)
        return out

    def format(self) -> str:
        lines = [f"skipped: {k}: {v}" for k, v in self.skipped.items()]
        for (model, batch, threads), rows in self.groups().items():
            m = self.models[model]
            lines += [f"{model} @{m['resolution']}px, batch {batch}, {threads} thread(s); "
                      f"matmul peak {self.peaks_gflops[threads]:.0f} GFLOP/s; medians",
                      f"  {'row':<18}{'ms':>9}{'img/s':>9}{'x timm':>7}{'GFLOP/s':>9}"
                      f"{'peak':>8}{'max|diff|':>10}{'rel.err':>9}"]
            lines += [r.format() for r in rows]
        for s in self.summary():
            if "best" in s:
                lines.append(f"{s['model']} batch {s['batch']} {s['threads']} thread(s): "
                             f"effnet's best {s['best']} is {s['x_best_default']:.2f}x the best "
                             f"default engine ({s['best_default']})")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        d = super().as_dict()
        d["summary"] = self.summary()
        return d


def _median(r: DeployRow) -> float:
    return r.median_s
