"""Scaling a ConvNet by width, depth and resolution (paper Section 3).

Pure functions on :class:`~effnet.spec.NetworkSpec`; no torch. The rounding
rules of the reference code live here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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


def scale(spec: NetworkSpec, width_mult: float = 1.0, depth_mult: float = 1.0) -> NetworkSpec:
    """Scale a baseline's width (channels) and depth (layers per stage), paper Eq. 3.

    Returns a new spec with concrete channel and repeat counts. Scaling an
    already scaled spec composes the multipliers from the baseline's numbers,
    so call this on baselines.
    """
    if width_mult <= 0 or depth_mult <= 0:
        raise ValueError(f"width_mult and depth_mult must be > 0, got {width_mult}, {depth_mult}")
    last = len(spec.stages) - 1
    stages = []
    for i, st in enumerate(spec.stages):
        keep = spec.fix_first_last_repeats and i in (0, last)
        stages.append(replace(
            st,
            out_channels=round_filters(st.out_channels, width_mult),
            repeats=st.repeats if keep else round_repeats(st.repeats, depth_mult),
        ))
    if spec.scale_stem_head:
        stem = round_filters(spec.stem_channels, width_mult)
        head = round_filters(spec.head_channels, width_mult) if spec.head_channels else 0
    else:
        stem, head = spec.stem_channels, spec.head_channels
    return replace(spec, stages=tuple(stages), stem_channels=stem, head_channels=head,
                   width_mult=width_mult, depth_mult=depth_mult)


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
                raise ValueError(
                    f"{name} must be a finite number >= 1 (paper Eq. 3), got {value!r}")

    @property
    def flops_factor(self) -> float:
        """alpha * beta^2 * gamma^2: how much FLOPs grow per unit of phi."""
        return self.alpha * self.beta**2 * self.gamma**2

    def coefficients(self, phi: float, base_resolution: int = 224) -> Coefficients:
        """Depth, width and resolution multipliers for `phi` >= 0 (any real value)."""
        if not (isinstance(phi, int | float) and math.isfinite(phi) and phi >= 0):
            raise ValueError(f"phi must be a finite number >= 0, got {phi!r}")
        r = self.gamma**phi
        return Coefficients(phi=float(phi), depth_mult=self.alpha**phi, width_mult=self.beta**phi,
                            resolution_mult=r, resolution=int(round(base_resolution * r)))

    def build(self, phi: float, base: str = "b0", **kwargs):
        """Build the `base` model compound-scaled by `phi` (see `effnet.create_model`)."""
        from .model_factory import create_model

        return create_model(base, phi=phi, scaling=self, **kwargs)
