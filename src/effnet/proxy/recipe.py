"""The proxy trainer's recipe: one for every model of a study or a search (no torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import EffnetError


@dataclass(frozen=True)
class ProxyRecipe:
    """One proxy training recipe: the same for every model of a study or a search.

    `train_size` / `val_size` take a fixed, seeded subset of the training split
    and of the validation split held out of it (None: all of it). The test
    split is never used. `evals` spreads that many validation points evenly
    over the run (None: one after every epoch); the last is always at the end.
    `ema_fraction` is the time constant of the evaluated weight average as a
    fraction of the run's steps (None: evaluate the raw weights). With `test`
    the final (evaluated) weights are also scored once on the dataset's test
    split (for reporting; choices are made on validation).
    """

    epochs: int = 4
    batch_size: int = 256
    lr: float = 8e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.1
    flip: bool = True
    evals: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    val_fraction: float = 0.1
    ema_fraction: float | None = 0.05
    test: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise EffnetError(f"a recipe needs epochs >= 1 and batch_size >= 1, got "
                              f"{self.epochs} and {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise EffnetError(f"the learning rate must be a positive number, got {self.lr}")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.label_smoothing < 1:
            raise EffnetError("warmup_fraction and label_smoothing must be in [0, 1)")
        if self.ema_fraction is not None and not 0 < self.ema_fraction < 1:
            raise EffnetError(f"ema_fraction must be in (0, 1) or None, got {self.ema_fraction}")
        for name in ("train_size", "val_size", "evals"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise EffnetError(f"{name} must be >= 1 (or None for all), got {v}")

    def as_dict(self) -> dict:
        return asdict(self)
