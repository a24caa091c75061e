"""Typed benchmark records: rows and parts of results; each formats itself.

Every record is a frozen dataclass with `format()` (its lines of the plain-text
table, also `str(record)`) and `as_dict()` (its JSON). The results the
benchmark functions return, built of these, are in :mod:`.results`.

* :class:`Row` - one implementation timed in one setting; :class:`InferenceRow` and
  :class:`TrainingRow` add what their benchmark measures;
* :class:`DepthwiseBound` (of :class:`DepthwiseLayer`) - the bytes-moved bound of the
  depthwise convs; :class:`PeakFraction` - a rate as a fraction of the matmul peak;
* :class:`DeployRow` - one engine row of `effnet bench deploy` with its check against eager.

Ratios against the baseline are attributes of a row (`x_baseline`,
`saved_x_baseline`, `peak_x_baseline`), set by `row.against(baseline_row)`;
in JSON they keep their names `x_<baseline>`, `saved_x_<baseline>`, `peak_x_<baseline>`.
No torch here.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, fields, replace
from typing import Any

NAN = float("nan")


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:,.0f}"


def _nan(v: float | None) -> float:
    return NAN if v is None else v


def _ratio(value: float | None, base: float | None) -> float | None:
    """value / base, or None where either is missing or the base is 0."""
    return None if value is None or not base else value / base


def _json(v: Any) -> Any:
    """`v` with records as their dicts and tuples as lists, recursively."""
    if isinstance(v, Record):
        return v.as_dict()
    if isinstance(v, tuple | list):
        return [_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    return v


class Record:
    """A benchmark record: `format()` gives its text, `as_dict()` its JSON, `str()` is format()."""

    def format(self) -> str:
        """The record as plain text (table lines)."""
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready dicts and lists: its `task` (where it has one), then its
        fields in declaration order. Records with derived or renamed keys override this."""
        d: dict[str, Any] = {"task": self.task} if hasattr(self, "task") else {}
        for f in fields(self):  # type: ignore[arg-type]  (every Record is a dataclass)
            d[f.name] = _json(getattr(self, f.name))
        return d

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class Row(Record):
    """One implementation timed in one setting: seconds per call, one per round."""

    impl: str
    batch: int
    seconds: tuple[float, ...]
    max_abs_diff: float

    @property
    def median_s(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.seconds)

    @property
    def images_per_s(self) -> float:
        """Images per second at the median."""
        return self.batch / self.median_s

    def _timing(self) -> dict[str, Any]:
        return {"impl": self.impl, "batch": self.batch, "images_per_s": self.images_per_s,
                "median_s": self.median_s, "seconds": list(self.seconds)}

    def format(self) -> str:
        return f"{self.impl:<16}{self.batch:>6}{self.images_per_s:>10.1f}"

    def as_dict(self) -> dict[str, Any]:
        return {**self._timing(), "max_abs_diff": self.max_abs_diff}


@dataclass(frozen=True)
class InferenceRow(Row):
    """Inference of one implementation at one batch size; `x_baseline` once `against` ran."""

    gflops: float
    baseline: str | None = None
    x_baseline: float | None = None

    def against(self, base: InferenceRow | None) -> InferenceRow:
        """This row with its speed ratio to `base` (same batch; unchanged without one)."""
        if base is None or base.batch != self.batch:
            return self
        return replace(self, baseline=base.impl, x_baseline=self.images_per_s / base.images_per_s)

    def format(self) -> str:
        return (f"{self.impl:<16}{self.batch:>6}{self.images_per_s:>10.1f}"
                f"{_nan(self.x_baseline):>9.2f}{self.gflops:>9.1f}{self.max_abs_diff:>11.1e}")

    def as_dict(self) -> dict[str, Any]:
        d = {**self._timing(), "max_abs_diff": self.max_abs_diff, "gflops": self.gflops}
        if self.baseline is not None and self.x_baseline is not None:
            d["x_" + self.baseline] = self.x_baseline
        return d


@dataclass(frozen=True)
class TrainingRow(Row):
    """A training step of one implementation; saved bytes are None where not counted."""

    saved_bytes: int | None
    peak_bytes: int | None = None
    baseline: str | None = None
    x_baseline: float | None = None
    saved_x_baseline: float | None = None
    peak_x_baseline: float | None = None

    def against(self, base: TrainingRow | None) -> TrainingRow:
        """This row with its speed, saved- and peak-memory ratios to `base`."""
        if base is None:
            return self
        x = self.images_per_s / base.images_per_s if base.batch == self.batch else None
        return replace(self, baseline=base.impl, x_baseline=x,
                       saved_x_baseline=_ratio(self.saved_bytes, base.saved_bytes),
                       peak_x_baseline=_ratio(self.peak_bytes, base.peak_bytes))

    def format(self) -> str:
        return (f"{self.impl:<20}{self.images_per_s:>8.2f}{_nan(self.x_baseline):>9.2f}"
                f"{_mib(self.saved_bytes):>11}{_nan(self.saved_x_baseline):>9.2f}"
                f"{_mib(self.peak_bytes):>10}{_nan(self.peak_x_baseline):>9.2f}")

    def as_dict(self) -> dict[str, Any]:
        d = {**self._timing(), "saved_bytes": self.saved_bytes, "max_abs_diff": self.max_abs_diff}
        if self.peak_bytes is not None:
            d["peak_bytes"] = self.peak_bytes
        if self.baseline is not None:
            for prefix, v in (("x_", self.x_baseline), ("saved_x_", self.saved_x_baseline),
                              ("peak_x_", self.peak_x_baseline)):
                if v is not None:
                    d[prefix + self.baseline] = v
        return d


@dataclass(frozen=True)
class DepthwiseLayer(Record):
    """One depthwise conv: its input shape, kernel, stride, MACs and least bytes moved."""

    layer: int
    input: tuple[int, ...]
    kernel: int
    stride: int
    macs: int
    bytes: int

    def format(self) -> str:
        return (f"  layer {self.layer:>2} {'x'.join(map(str, self.input))} k{self.kernel} "
                f"s{self.stride}: {self.macs} MACs, {self.bytes} bytes")


@dataclass(frozen=True)
class DepthwiseBound(Record):
    """The bytes-moved bound of a model's depthwise convs against their measured time."""

    model: str
    batch: int
    resolution: int
    bandwidth_gbs: float
    nchw_s: float
    channels_last_s: float
    per_layer: tuple[DepthwiseLayer, ...]

    @property
    def layers(self) -> int:
        """How many depthwise convs."""
        return len(self.per_layer)

    @property
    def macs(self) -> int:
        """Their multiply-adds."""
        return sum(r.macs for r in self.per_layer)

    @property
    def bytes(self) -> int:
        """The least bytes they move (inputs, outputs and weights, fp32)."""
        return sum(r.bytes for r in self.per_layer)

    @property
    def flops_per_byte(self) -> float:
        """Arithmetic intensity: 2 FLOPs per MAC over the bytes moved."""
        return 2 * self.macs / self.bytes

    @property
    def bound_s(self) -> float:
        """Seconds to move those bytes at the copy bandwidth."""
        return self.bytes / (self.bandwidth_gbs * 1e9)

    @property
    def nchw_x_bound(self) -> float:
        """Measured NCHW time over the bound."""
        return self.nchw_s / self.bound_s

    @property
    def channels_last_x_bound(self) -> float:
        """Measured channels_last time over the bound."""
        return self.channels_last_s / self.bound_s

    def format(self) -> str:
        return (f"  {self.model} depthwise convs at batch {self.batch}: {self.layers} "
                f"layers, {self.macs / 1e6:.1f} M MACs, {self.bytes / 2**20:.1f} MiB "
                f"moved at least ({self.flops_per_byte:.2f} FLOP/byte)\n"
                f"    bytes-moved bound {self.bound_s * 1e3:.2f} ms; measured NCHW "
                f"{self.nchw_s * 1e3:.2f} ms ({self.nchw_x_bound:.1f}x the bound), "
                f"channels_last {self.channels_last_s * 1e3:.2f} ms "
                f"({self.channels_last_x_bound:.1f}x)")

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "batch": self.batch, "resolution": self.resolution,
                "layers": self.layers, "macs": self.macs, "bytes": self.bytes,
                "flops_per_byte": self.flops_per_byte, "bandwidth_gbs": self.bandwidth_gbs,
                "bound_s": self.bound_s, "nchw_s": self.nchw_s,
                "channels_last_s": self.channels_last_s, "nchw_x_bound": self.nchw_x_bound,
                "channels_last_x_bound": self.channels_last_x_bound,
                "per_layer": [r.as_dict() for r in self.per_layer]}


@dataclass(frozen=True)
class PeakFraction(Record):
    """A measured inference rate as a fraction of the matmul peak."""

    impl: str
    batch: int
    gflops: float
    fraction: float

    def format(self) -> str:
        return (f"  {self.impl:<16} batch {self.batch:>3}: {self.gflops:6.1f} GFLOP/s"
                f" = {100 * self.fraction:.1f}% of the matmul peak")


@dataclass(frozen=True)
class DeployRow(Record):
    """One row timed at one (model, batch, threads), with its check against eager."""

    model: str
    row: str
    engine: str
    source: str
    tuned: bool
    int8: bool
    batch: int
    threads: int
    seconds: tuple[float, ...]
    max_abs_diff: float | None
    allowed: float | None
    relative_error: float | None
    top1_agreement: float | None
    passed: bool
    gflops: float = 0.0
    share_of_peak: float = 0.0
    x_timm_eager: float | None = None
    prepare_s: float = 0.0
    error: str = ""

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median_s if self.seconds else 0.0

    def format(self) -> str:
        if not self.seconds:
            why = self.error or (f"outputs off eager: max|diff| {self.max_abs_diff:.1e}, "
                                 f"allowed {self.allowed:.1e}, relative error "
                                 f"{self.relative_error:.1e}")
            return f"  {self.row:<18}not timed: {why}"
        x = f"{self.x_timm_eager:7.2f}" if self.x_timm_eager is not None else "      -"
        return (f"  {self.row:<18}{1e3 * self.median_s:9.2f}{self.images_per_s:9.1f}{x}"
                f"{self.gflops:9.1f}{100 * self.share_of_peak:7.1f}%{self.max_abs_diff:10.1e}"
                f"{self.relative_error:9.1e}")

    def as_dict(self) -> dict[str, Any]:
        d = super().as_dict()
        d.update(median_s=self.median_s if self.seconds else None,
                 images_per_s=self.images_per_s)
        return d
