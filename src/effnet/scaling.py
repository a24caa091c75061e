"""Scaling a ConvNet by width, depth and resolution (paper Section 3).

Pure functions on :class:`~effnet.spec.NetworkSpec`; no torch. The rounding
rules of the reference code live here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .errors import EffnetError
from .spec import NetworkSpec

DEPTH_DIVISOR = 8


def round_filters(channels: float, width_mult: float = 1.0, divisor: int = DEPTH_DIVISOR) -> int:
    """Scale a channel count by `width_mult` and round to a multiple of `divisor`.

    Rounds to the nearest multiple, never below `divisor`, and adds one more
    `divisor` if rounding lost more than 10% of the scaled value (the rule of
    the paper's reference code).
    """
    scaled = channels * width_mult
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth_mult: float = 1.0) -> int:
    """Scale a stage's number of layers by `depth_mult`, rounding up (ceil)."""
    return int(math.ceil(depth_mult * repeats))


def scale(spec: NetworkSpec, width_mult: float = 1.0, depth_mult: float = 1.0,
          divisor: int = DEPTH_DIVISOR) -> NetworkSpec:
    """Scale a baseline's width (channels) and depth (layers per stage), paper Eq. 3.

    Returns a new spec with concrete channel and repeat counts. Scaling an
    already scaled spec composes the multipliers from the baseline's numbers,
    so call this on baselines. Channels round to multiples of `divisor` (8,
    the reference code's hardware-friendly choice; small proxies use 1 so a
    width step is not swallowed by the rounding).
    """
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise EffnetError(f"divisor must be an integer >= 1, got {divisor!r}")
    if width_mult <= 0 or depth_mult <= 0:
        raise EffnetError(f"width_mult and depth_mult must be > 0, got {width_mult}, {depth_mult}")
    last = len(spec.stages) - 1
    stages = []
    for i, st in enumerate(spec.stages):
        keep = spec.fix_first_last_repeats and i in (0, last)
        stages.append(replace(
            st,
            out_channels=round_filters(st.out_channels, width_mult, divisor),
            repeats=st.repeats if keep else round_repeats(st.repeats, depth_mult),
        ))
    if spec.scale_stem_head:
        stem = round_filters(spec.stem_channels, width_mult, divisor)
        head = round_filters(spec.head_channels, width_mult, divisor) if spec.head_channels else 0
    else:
        stem, head = spec.stem_channels, spec.head_channels
    return replace(spec, stages=tuple(stages), stem_channels=stem, head_channels=head,
                   width_mult=width_mult, depth_mult=depth_mult, phi=None, base=None,
                   coefficients=None)


def scaled_resolution(base_resolution: int, resolution_mult: float) -> int:
    """The input size for a resolution multiplier r: round(base * r), as in the reference code."""
    return int(round(base_resolution * resolution_mult))


def flops_constraint(alpha: float, beta: float, gamma: float) -> float:
    """alpha * beta^2 * gamma^2, the paper's constraint (Eq. 3, ~2): FLOPs grow by this per phi.

    FLOPs are linear in depth and quadratic in width and resolution.
    """
    return alpha * beta**2 * gamma**2


def eval_crop_pct(resolution: int) -> float:
    """The reference evaluation crop: resolution / (resolution + 32), to 3 decimals."""
    return round(resolution / (resolution + 32), 3)


@dataclass(frozen=True)
class Coefficients:
    """Multipliers for one value of phi (paper Eq. 3)."""

    phi: float
    depth_mult: float
    width_mult: float
    resolution_mult: float
    resolution: int

    def __iter__(self):
        return iter((self.depth_mult, self.width_mult, self.resolution))


@dataclass(frozen=True)
class CompoundScaling:
    """Compound scaling, paper Eq. 3: d = alpha^phi, w = beta^phi, r = gamma^phi.

    The paper's grid search at phi = 1 found alpha = 1.2, beta = 1.1,
    gamma = 1.15, with alpha * beta^2 * gamma^2 ~ 2 so that FLOPs grow by
    about 2^phi.
    """

    alpha: float = 1.2
    beta: float = 1.1
    gamma: float = 1.15

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 1.0):
                raise EffnetError(
                    f"{name} must be a finite number >= 1 (paper Eq. 3), got {value!r}")

    @property
    def constraint(self) -> float:
        """alpha * beta^2 * gamma^2 (paper Eq. 3): how much FLOPs grow per unit of phi."""
        return flops_constraint(self.alpha, self.beta, self.gamma)

    @property
    def flops_factor(self) -> float:
        """Same as `constraint` (the older name)."""
        return self.constraint

    def as_tuple(self) -> tuple[float, float, float]:
        """(alpha, beta, gamma)."""
        return (float(self.alpha), float(self.beta), float(self.gamma))

    def coefficients(self, phi: float, base_resolution: int = 224) -> Coefficients:
        """Depth, width and resolution multipliers for `phi` >= 0 (any real value)."""
        if not (isinstance(phi, int | float) and math.isfinite(phi) and phi >= 0):
            raise EffnetError(f"phi must be a finite number >= 0, got {phi!r}")
        r = self.gamma**phi
        return Coefficients(phi=float(phi), depth_mult=self.alpha**phi, width_mult=self.beta**phi,
                            resolution_mult=r, resolution=scaled_resolution(base_resolution, r))

    def scale(self, base: NetworkSpec, phi: float, base_name: str | None = None) -> NetworkSpec:
        """`base` compound-scaled by `phi` (paper Eq. 3), recording phi, base and coefficients.

        The new spec is named '<base_name>-phi<phi>'; the input resolution
        comes from `coefficients(phi, base_resolution).resolution`.
        """
        c = self.coefficients(phi)
        name = base_name or base.name
        return replace(scale(base, c.width_mult, c.depth_mult), name=f"{name}-phi{phi:g}",
                       phi=float(phi), base=name, coefficients=self.as_tuple())
