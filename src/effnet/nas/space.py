"""The factorized hierarchical search space around a baseline (MnasNet, Tan et al. 2019, Sec. 4).

EfficientNet-B0 came out of a search over this kind of space (Tan & Le
2019, Sec. 4): the network keeps its stages (their number and strides), and
each stage picks its own block, so different stages can differ, unlike in a
cell-based space where one cell is repeated everywhere. Per stage:

* kernel size {3, 5} of the depthwise convolution;
* expansion ratio {1, 3, 4, 6} of the mobile inverted bottleneck;
* squeeze-and-excitation ratio {0, 0.25};
* output channels {0.75, 1, 1.25} x the baseline's, rounded to a multiple of 8
  by effnet's one channel rule (:func:`effnet.scaling.round_filters`, which
  also adds 8 when rounding lost more than 10%: for some stages two choices
  give the same width);
* repeats {-1, 0, +1} around the baseline's (at least 1).

The baseline is a point of the space (every choice "as the baseline"), so a
search can always find it. A choice is a flat dict ``{"s0_kernel": 3, ...}``
(the form Optuna's ``suggest_categorical`` gives); :meth:`SearchSpace.decode`
turns it into a validated :class:`~effnet.spec.NetworkSpec` and
:meth:`SearchSpace.encode` turns a spec of the space back into its choice.
Pure Python, no torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from ..errors import EffnetError
from ..scaling import round_filters
from ..spec import EFFICIENTNET_B0, NetworkSpec, StageSpec

KERNELS = (3, 5)
EXPANSIONS = (1, 3, 4, 6)
SE_RATIOS = (0.0, 0.25)
WIDTHS = (0.75, 1.0, 1.25)
REPEAT_DELTAS = (-1, 0, 1)
FIELDS = ("kernel", "expand", "se", "width", "repeats")


@dataclass(frozen=True)
class SearchSpace:
    """Per-stage choices around `base` (MBConv stages only); see the module docstring."""

    base: NetworkSpec = EFFICIENTNET_B0
    kernels: tuple[int, ...] = KERNELS
    expansions: tuple[float, ...] = EXPANSIONS
    se_ratios: tuple[float, ...] = SE_RATIOS
    widths: tuple[float, ...] = WIDTHS
    repeat_deltas: tuple[int, ...] = REPEAT_DELTAS

    def __post_init__(self) -> None:
        if any(s.block != "mbconv" for s in self.base.stages):
            raise EffnetError(f"the search space is built around MBConv stages; {self.base.name!r} "
                              "has others: use b0, lite or mobilenetv2 as the base")
        for name in ("kernels", "expansions", "se_ratios", "widths", "repeat_deltas"):
            if not getattr(self, name):
                raise EffnetError(f"the search space needs at least one {name[:-1]} option")

    # ------------------------------------------------------------ the parameters
    def options(self) -> dict[str, tuple]:
        """Every parameter of the space and its options, in a fixed order ('s0_kernel', ...)."""
        out: dict[str, tuple] = {}
        for i in range(len(self.base.stages)):
            out[f"s{i}_kernel"] = tuple(self.kernels)
            out[f"s{i}_expand"] = tuple(self.expansions)
            out[f"s{i}_se"] = tuple(self.se_ratios)
            out[f"s{i}_width"] = tuple(self.widths)
            out[f"s{i}_repeats"] = tuple(self.repeat_deltas)
        return out

    @property
    def size(self) -> int:
        """Number of choices (some decode to the same spec where rounding merges widths)."""
        n = 1
        for opts in self.options().values():
            n *= len(opts)
        return n

    def suggest(self, trial: Any) -> dict[str, Any]:
        """A choice from an Optuna trial (``trial.suggest_categorical`` for every parameter)."""
        return {k: trial.suggest_categorical(k, list(v)) for k, v in self.options().items()}

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """A uniformly random choice, drawn with `rng`."""
        return {k: rng.choice(v) for k, v in self.options().items()}

    def baseline_choice(self) -> dict[str, Any]:
        """The choice that decodes to the baseline itself."""
        return self.encode(self.base)

    # ------------------------------------------------------------ decode / encode
    def _channels(self, stage: StageSpec, width: float) -> int:
        return round_filters(stage.out_channels, width)

    def decode(self, choice: dict[str, Any], name: str = "effnet-nas") -> NetworkSpec:
        """The :class:`NetworkSpec` of a choice: the baseline's stages with the chosen blocks."""
        opts = self.options()
        missing = [k for k in opts if k not in choice]
        if missing:
            raise EffnetError(f"a choice of this space needs {len(opts)} values; missing "
                              f"{', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}")
        bad = [f"{k}={choice[k]!r}" for k, v in opts.items() if choice[k] not in v]
        if bad:
            raise EffnetError(f"not in the search space: {', '.join(bad[:3])} (options: "
                              f"{', '.join(f'{k} {opts[k]}' for k in list(opts)[:5])}, ...)")
        stages = []
        for i, st in enumerate(self.base.stages):
            e = choice[f"s{i}_expand"]
            stages.append(replace(
                st, kernel=int(choice[f"s{i}_kernel"]),
                expand_ratio=int(e) if float(e).is_integer() else float(e),
                se_ratio=float(choice[f"s{i}_se"]),
                out_channels=self._channels(st, float(choice[f"s{i}_width"])),
                repeats=max(1, st.repeats + int(choice[f"s{i}_repeats"]))))
        return self.base.with_(name=name, stages=tuple(stages), phi=None, base=None,
                               coefficients=None)

    def encode(self, spec: NetworkSpec) -> dict[str, Any]:
        """The choice that decodes to `spec`'s stages; an error if `spec` is not in the space.

        Where two widths round to the same channel count, the baseline's own
        (1.0) is preferred, then the first in `widths`.
        """
        if len(spec.stages) != len(self.base.stages):
            raise EffnetError(f"{spec.name!r} has {len(spec.stages)} stages, the space's base "
                              f"{len(self.base.stages)}: it is not a point of this space")
        choice: dict[str, Any] = {}
        for i, (st, b) in enumerate(zip(spec.stages, self.base.stages, strict=True)):
            where = f"{spec.name!r} stage {i}"
            if st.block != b.block or st.stride != b.stride:
                raise EffnetError(f"{where}: block or stride differs from the base's")
            widths = sorted(self.widths, key=lambda w: (w != 1.0, self.widths.index(w)))
            width = next((w for w in widths if self._channels(b, w) == st.out_channels), None)
            delta = st.repeats - b.repeats
            values = {"kernel": st.kernel, "expand": st.expand_ratio, "se": st.se_ratio,
                      "width": width, "repeats": delta}
            for field, value in values.items():
                opts = self.options()[f"s{i}_{field}"]
                match = next((o for o in opts if value is not None and o == value), None)
                if match is None:
                    raise EffnetError(f"{where}: {field} {value!r} is not an option "
                                      f"{opts}: not a point of this space")
                choice[f"s{i}_{field}"] = match
        return choice

    def contains(self, spec: NetworkSpec) -> bool:
        """Whether `spec` is a point of the space (same stages as a decoded choice)."""
        try:
            return self.decode(self.encode(spec)).stages == spec.stages
        except EffnetError:
            return False


def describe(spec: NetworkSpec) -> str:
    """A compact one-line description of a spec's stages: 'k3 e1 c16 r1 se0.25 | ...'."""
    return " | ".join(f"k{s.kernel} e{s.expand_ratio:g} c{s.out_channels} r{s.repeats} "
                      f"se{s.se_ratio:g}" for s in spec.stages)
