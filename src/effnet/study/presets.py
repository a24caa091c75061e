"""The study's presets: which bases, budgets, seeds and MAC targets one run trains.

Preset data only: no prose that goes stale and no timings (measured times are
in the committed results under ``results/``).

Design (paper Fig. 3, Fig. 8 / Table 7, Table 3, at a scale two CPU cores afford):

* the bases are B0, MobileNetV2 and ResNet-50 scaled down in width and depth,
  at a depth whose stage repeats sit off the ceil's rounding edges (depth 0.6:
  no stage's depth_mult * repeats is an integer), so a small step in depth
  adds one block at a time instead of one to every stage at once;
* the base sees Fashion-MNIST at 14 px, downsampled from the native 28 px with
  antialiasing, so resolution scaling up to 28 px (4x the MACs) adds real
  detail; the stem has stride 1 (as CIFAR variants of ImageNet networks do),
  so a 14-px input still has a 2x2 map in front of the last stage;
* every model of a preset is trained with one recipe, tuned once on the B0
  base and applied unchanged to every scaled model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from ..proxy.recipe import ProxyRecipe

if TYPE_CHECKING:
    from ..proxy.candidates import Scaled

STRATEGIES = ("depth", "width", "resolution", "compound")


@dataclass(frozen=True)
class BaseNet:
    """A study base: ``BASELINES[name]`` scaled to (`width`, `depth`), with its stem stride.

    `strides` replaces the stages' strides and `divisor` the channel rounding
    (None: the baseline's), so a proxy can keep the cost law (see ``METHOD_BASES``).
    `image_size` gives the base an input size of its own (None: the preset's), so one
    architecture can be studied at two sizes; `label` then names it apart (its runs' group).
    """

    name: str
    width: float = 1.0
    depth: float = 1.0
    stem_stride: int = 1
    strides: tuple[int, ...] | None = None
    divisor: int | None = None
    image_size: int | None = None
    label: str | None = None

    @property
    def key(self) -> str:
        """The base's name in plans and reports: its label, or its architecture's name."""
        return self.label or self.name

    def pixels(self, preset_size: int) -> int:
        """The base's input size: its own, or the preset's `preset_size`."""
        return self.image_size or preset_size

    def start(self, preset_size: int) -> Scaled:
        """The unscaled base at its input size (see :meth:`pixels`)."""
        return self.scaled(self.pixels(preset_size))

    def scaled(self, image_size: int) -> Scaled:
        """The base itself as a :class:`~effnet.proxy.candidates.Scaled` at `image_size` px."""
        from ..proxy.candidates import Scaled

        return Scaled(self.name, self.width, self.depth, image_size, self.stem_stride,
                      self.strides, self.divisor)


@dataclass(frozen=True)
class Budget:
    """One training budget of a preset: a name, the recipe every model gets, and for which bases.

    `bases` limits the budget to those bases (None: all of the preset's).
    """

    name: str
    recipe: ProxyRecipe
    bases: tuple[str, ...] | None = None

    def covers(self, base: str) -> bool:
        """Whether models of `base` are trained with this budget."""
        return self.bases is None or base in self.bases


@dataclass(frozen=True)
class Preset:
    """Everything one study run does. The first base is the B0 base of Fig. 3, 7 and 8.

    The first budget is the short one; the last is the one the verdict and
    the fidelity of other presets are judged on.
    """

    name: str
    dataset: str
    image_size: int
    bases: tuple[BaseNet, ...]
    budgets: tuple[Budget, ...]
    seeds: int
    targets: tuple[float, ...]           # MAC multiples of the B0 base (Fig. 3 / Fig. 8)
    table3_target: float | None          # MAC multiple for the other bases (Table 3)
    coefficients: tuple[float, float, float] = (1.2, 1.1, 1.15)  # alpha, beta, gamma
    cam_images: int = 6
    drop_rate: float = 0.1
    drop_path_rate: float = 0.05
    first_seed: int = 0       # seeds first_seed .. first_seed + seeds - 1
    # design "strategies": compound (the coefficients above) against each single dimension.
    # design "method": the paper's grid search on each base (grid_step, grid_tolerance,
    # grid_seeds, at the first budget), then compound with the found coefficients beside the
    # single dimensions, the coefficients above, the first base's found ones and the interior
    # splits of a 1/sweep grid of shares (sweep_seeds each; 0: none) (study/sweep.py).
    design: str = "strategies"
    grid_step: float = 0.1
    grid_tolerance: float = 0.15
    grid_seeds: int = 2
    sweep: int = 0
    sweep_seeds: int = 3
    # A fair recipe for every size: with multipliers here, the base, corners and compound
    # models of a method preset first train once at each multiple of the recipe's lr (a seed
    # of their own, the first budget) and keep the best by validation (study/sweep.py).
    lr_sweep: tuple[float, ...] = ()

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds every model is trained with."""
        return tuple(range(self.first_seed, self.first_seed + self.seeds))

    def identity(self) -> dict:
        """The settings that decide the results (a stored study must match them to resume).

        A base's `image_size` and `label` appear only when set, so studies stored before
        bases had them still resume.
        """
        d = json.loads(json.dumps(asdict(self)))
        for b in d["bases"]:
            for k in ("image_size", "label"):
                if b[k] is None:
                    del b[k]
        return d


B0_BASE = BaseNet("b0", 0.25, 0.6)
BASES = (B0_BASE, BaseNet("mobilenetv2", 0.35, 0.6), BaseNet("resnet50", 0.125, 0.6))

SHORT = ProxyRecipe(epochs=1, evals=4)
LONG = ProxyRecipe(epochs=3, evals=8)

PRESETS: dict[str, Preset] = {
    # The reference's short budget on seeds of its own: its ranking against the reference's
    # (Kendall's tau) is a replication, not the reference reproduced on the same seeds.
    "quick": Preset(name="quick", dataset="fashion-mnist", image_size=14, bases=(B0_BASE,),
                    budgets=(Budget("short", SHORT),), seeds=3, targets=(2.5, 4.0),
                    table3_target=None, first_seed=100),
    "standard": Preset(name="standard", dataset="fashion-mnist", image_size=14, bases=BASES,
                       budgets=(Budget("short", SHORT, ("b0",)), Budget("long", LONG)), seeds=3,
                       targets=(2.5, 4.0), table3_target=4.0),
    "full": Preset(name="full", dataset="fashion-mnist", image_size=14,
                   bases=(BaseNet("b0", 0.5, 1.1), BaseNet("mobilenetv2", 0.5, 1.1),
                          BaseNet("resnet50", 0.25, 0.6)),
                   budgets=(Budget("short", ProxyRecipe(epochs=4, evals=8)),
                            Budget("long", ProxyRecipe(epochs=16, evals=16))),
                   seeds=5, targets=(2.5, 4.0), table3_target=4.0),
}

# Bases that keep the cost law (study/sweep.py): stride 1 everywhere but the second-to-last
# stride-2 stage of the baseline (the last of ResNet-50's four), so 14 px keeps a 14x14 map up
# to it and 7x7 after it (one more pixel moves MACs by at most ~22%, and the MACs of
# resolution-only models follow (r / r0)^2 within ~6%), channels rounded to whole numbers
# rather than multiples of 8 (a width step is not swallowed by the rounding).
METHOD_BASES = (BaseNet("b0", 0.2, 0.6, 1, (1, 1, 1, 1, 1, 2, 1), 1),
                BaseNet("mobilenetv2", 0.25, 0.6, 1, (1, 1, 1, 1, 1, 2, 1), 1),
                BaseNet("resnet50", 0.0625, 0.6, 1, (1, 1, 1, 2), 1))
# Per image they cost about 15x the `standard` bases (10.2M MACs for B0's against 0.7M), so the
# budgets train on a fixed 12,000-image subset, at batch 128 (more steps: 77% validation top-1
# for the B0 base after one epoch, against 67% at batch 256), validate on 3,000 images and
# report on the 10,000 test images.
METHOD_SHORT = ProxyRecipe(epochs=1, batch_size=128, evals=4, train_size=12_000, val_size=3_000,
                           test=True)
METHOD_LONG = replace(METHOD_SHORT, epochs=3, evals=8)

# The B0 base again at 20 px (about twice its MACs at 14 px), searched and swept on its own:
# if resolution's edge over depth and width at 14 px shrinks at 20 px, it was detail the
# 14-px images lack, not the architecture (issue 18, item 7).
METHOD_B0_20PX = replace(METHOD_BASES[0], image_size=20, label="b0-20px")

PRESETS["method"] = Preset(
    name="method", dataset="fashion-mnist", image_size=14, bases=(*METHOD_BASES, METHOD_B0_20PX),
    budgets=(Budget("short", METHOD_SHORT),
             Budget("long", METHOD_LONG, ("b0", METHOD_B0_20PX.key))), seeds=5,
    targets=(2.0, 4.0), table3_target=None, design="method", grid_step=0.1,
    grid_tolerance=0.15, grid_seeds=2, sweep=5, sweep_seeds=3, lr_sweep=(0.5, 1.0, 2.0))
# The B0 half of `method` on seeds of its own (a replication of it), fewer seeds, no lr sweep.
PRESETS["method-b0"] = Preset(
    name="method-b0", dataset="fashion-mnist", image_size=14, bases=METHOD_BASES[:1],
    budgets=(Budget("short", METHOD_SHORT),), seeds=3, targets=(2.0, 4.0), table3_target=None,
    design="method", grid_step=0.1, grid_tolerance=0.15, grid_seeds=1, first_seed=100)

# Paper Table 7 (ImageNet top-1, %, and B MACs): what the proxy study mirrors.
PAPER_TABLE7 = {"baseline": (77.3, 0.4), "depth": (79.0, 1.8), "width": (78.9, 1.8),
                "resolution": (79.1, 1.9), "compound": (81.1, 1.8)}
# Paper Table 3 (ImageNet top-1, %, and B MACs) for the MobileNetV2 and ResNet-50 rows.
PAPER_TABLE3 = {
    "mobilenetv2": {"baseline": (72.0, 0.3), "depth": (76.8, 1.2), "width": (76.4, 1.1),
                    "resolution": (74.8, 1.2), "compound": (77.4, 1.3)},
    "resnet50": {"baseline": (76.0, 4.1), "depth": (78.1, 16.2), "width": (77.7, 14.7),
                 "resolution": (77.5, 16.4), "compound": (78.8, 16.7)},
}
