"""Planning the study: every model, scaled to its MAC budget by *counted* MACs.

MAC budgets are met by searching each multiplier until the MACs of the
built model (counted exactly, :class:`CostCache`) come closest to the
target; rounding (channels to multiples of 8, repeats by ceil, feature-map
sizes at small inputs) makes them land near, not on, the target, and the
report shows by how much. For compound scaling the report also shows how
far the matched (d, w, r) lie from (alpha^phi, beta^phi, gamma^phi) at the
phi the budget asks for (paper Eq. 3: FLOPs grow by
(alpha * beta^2 * gamma^2)^phi).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from ..cost import spec_cost
from ..errors import EffnetError
from ..proxy.candidates import Cost, Scaled, measure
from ..scaling import CompoundScaling, flops_constraint, scaled_resolution
from .presets import STRATEGIES, BaseNet, Preset


@dataclass(frozen=True)
class Run:
    """One model of the study: a base scaled by one strategy to one MAC budget."""

    group: str
    strategy: str                 # baseline | depth | width | resolution | compound
    target: float                 # nominal MAC multiple of the base (1 for the baseline)
    multiplier: float             # the scaled dimension's multiplier (phi for compound)
    scaled: Scaled
    cost: Cost
    base_macs: int

    @property
    def key(self) -> str:
        return f"{self.group}-{self.strategy}-{self.target:g}x"

    @property
    def mac_ratio(self) -> float:
        return self.cost.macs / self.base_macs

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(key=self.key, mac_ratio=self.mac_ratio,
                 mac_distance=self.mac_ratio / self.target - 1)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Run:
        return cls(d["group"], d["strategy"], d["target"], d["multiplier"],
                   Scaled(**d["scaled"]), Cost(**d["cost"]), d["base_macs"])


class CostCache:
    """The :class:`Cost` of scaled networks, each distinct network counted once.

    By default in closed form (:func:`effnet.cost.spec_cost`, equal to the
    flop counter on the built module, about 400x faster); `measured` counts on
    the built module instead (:func:`effnet.proxy.candidates.measure`).
    """

    def __init__(self, num_classes: int, in_chans: int, measured: bool = False) -> None:
        self.num_classes, self.in_chans, self.measured = num_classes, in_chans, measured
        self._memo: dict[tuple, Cost] = {}

    @staticmethod
    def network(s: Scaled) -> tuple:
        """What makes two scaled networks the same one: base, channels, blocks, strides, px."""
        spec = s.spec()
        return (s.base, tuple((st.out_channels, st.repeats, st.stride)
                                   for st in spec.stages),
                spec.stem_channels, spec.head_channels, spec.stem_stride, s.resolution)

    def __call__(self, s: Scaled) -> Cost:
        key = self.network(s)
        if key not in self._memo:
            if self.measured:
                self._memo[key] = measure(s, self.num_classes, self.in_chans)
            else:
                c = spec_cost(s.spec(), s.resolution, self.in_chans, self.num_classes)
                self._memo[key] = Cost(params=c.params, macs=c.macs)
        return self._memo[key]


def scaled_by(base: BaseNet, image_size: int, strategy: str, m: float,
              coefficients: tuple[float, float, float]) -> Scaled:
    """The base scaled by multiplier `m` along `strategy` (phi = m for compound, Eq. 3)."""
    w, d, r = base.width, base.depth, image_size
    if strategy == "depth":
        d = base.depth * m
    elif strategy == "width":
        w = base.width * m
    elif strategy == "resolution":
        r = scaled_resolution(image_size, m)
    elif strategy == "compound":
        c = CompoundScaling(*coefficients).coefficients(m, image_size)
        d, w, r = base.depth * c.depth_mult, base.width * c.width_mult, c.resolution
    elif strategy != "baseline":
        raise EffnetError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    return replace(base.scaled(r), width_mult=w, depth_mult=d)


def match_macs(base: BaseNet, image_size: int, strategy: str, target_macs: float,
               cost: Callable[[Scaled], Cost], coefficients: tuple[float, float, float],
               limit: float = 64.0, steps: int = 10) -> tuple[float, Scaled]:
    """The multiplier whose *measured* MACs come closest to `target_macs` (in log scale).

    MACs grow monotonically (in steps) with each multiplier: bracket the
    target by doubling the multiplier (adding 1 to phi for compound), bisect
    for the smallest one reaching it, and return it or the last one below.
    """
    def at(m: float) -> Scaled:
        return scaled_by(base, image_size, strategy, m, coefficients)

    compound = strategy == "compound"
    lo, hi = (0.0, 1.0) if compound else (1.0, 2.0)
    while cost(at(hi)).macs < target_macs:
        lo, hi = hi, (hi + 1 if compound else hi * 2)
        if hi > limit:
            raise EffnetError(f"{strategy} scaling of {base.name} cannot reach "
                              f"{target_macs:.3g} MACs: lower the preset's targets")
    if strategy == "resolution":  # integer pixel sizes: bisect on those
        lo_px, hi_px = scaled_resolution(image_size, lo), scaled_resolution(image_size, hi)
        while hi_px - lo_px > 1:
            mid = (lo_px + hi_px) // 2
            if cost(base.scaled(mid)).macs >= target_macs:
                hi_px = mid
            else:
                lo_px = mid
        cands = [(px / image_size, base.scaled(px)) for px in (lo_px, hi_px)]
    else:
        for _ in range(steps):
            mid = (lo + hi) / 2
            if cost(at(mid)).macs >= target_macs:
                hi = mid
            else:
                lo = mid
        cands = [(m, at(m)) for m in (lo, hi)]
    return min(cands, key=lambda c: abs(math.log(max(1, cost(c[1]).macs) / target_macs)))


def nominal_phi(target: float, coefficients: tuple[float, float, float]) -> float:
    """The phi at which (alpha * beta^2 * gamma^2)^phi equals the MAC multiple `target`."""
    return math.log(target) / math.log(flops_constraint(*coefficients))


def compound_distance(run: Run, base: BaseNet, image_size: int,
                      coefficients: tuple[float, float, float]) -> dict[str, float]:
    """How far a compound model's (d, w, r) lie from (alpha^phi, beta^phi, gamma^phi).

    phi is the one its MAC budget asks for (:func:`nominal_phi`); each entry
    is the matched multiplier over the nominal one, minus 1.
    """
    phi = nominal_phi(run.target, coefficients)
    c = CompoundScaling(*coefficients).coefficients(phi)
    s = run.scaled
    return {"phi_nominal": phi, "phi_matched": run.multiplier,
            "depth": (s.depth_mult / base.depth) / c.depth_mult - 1,
            "width": (s.width_mult / base.width) / c.width_mult - 1,
            "resolution": (s.resolution / image_size) / c.resolution_mult - 1}


def plan(preset: Preset, num_classes: int = 10, in_chans: int = 1,
         progress: Callable[[str], None] | None = None) -> list[Run]:
    """Every model of the study, each with its MACs measured and matched to its budget."""
    cost = CostCache(num_classes, in_chans)
    runs: list[Run] = []
    for i, base in enumerate(preset.bases):
        base_scaled = scaled_by(base, preset.image_size, "baseline", 1.0, preset.coefficients)
        base_cost = cost(base_scaled)
        runs.append(Run(base.name, "baseline", 1.0, 1.0, base_scaled, base_cost, base_cost.macs))
        targets = preset.targets if i == 0 else (preset.table3_target,)
        for target in targets:
            if target is None:
                continue
            # Compound scaling moves in coarse steps (one phi moves all three dimensions, and
            # the ceil on repeats adds blocks to several stages at once), so it is matched to
            # the budget first and the finer single dimensions are matched to *its* measured
            # MACs: the compared models then cost the same, wherever compound landed.
            anchor = float(target * base_cost.macs)
            for strategy in ("compound", *(s for s in STRATEGIES if s != "compound")):
                if progress:
                    progress(f"{base.name} {strategy} {target:g}x")
                m, s = match_macs(base, preset.image_size, strategy, anchor, cost,
                                  preset.coefficients)
                runs.append(Run(base.name, strategy, target, m, s, cost(s), base_cost.macs))
                if strategy == "compound":
                    anchor = float(cost(s).macs)
    return runs


def cam_runs(runs: list[Run], preset: Preset) -> list[Run]:
    """The models shown in Fig. 7: the B0 base and its four scalings at the largest budget."""
    b0 = preset.bases[0].name
    top = max(preset.targets)
    return [r for r in runs if r.group == b0 and (r.strategy == "baseline" or r.target == top)
            and not r.strategy.startswith(("grid-", "split-"))]
