"""Learning-rate schedules as per-step multipliers for ``torch.optim.lr_scheduler.LambdaLR``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("step", "cosine", "constant")


@dataclass
class LRMultiplier:
    """lr(step) / base_lr: linear warm-up from 0, then one of

    * ``"step"``: x `decay_rate` every `decay_epochs` epochs, staircase (the
      paper: x0.97 every 2.4 epochs, counted from step 0 as the TF code does);
    * ``"cosine"``: half a cosine from 1 to `min_factor` over the remaining steps;
    * ``"constant"``.

    A picklable dataclass, so LambdaLR's state dict stores it and resume is exact.
    """

    kind: str
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int = 0
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    min_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}: use one of {', '.join(SCHEDULES)}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        if self.kind == "step":
            decay_steps = max(1, int(self.steps_per_epoch * self.decay_epochs))
            return self.decay_rate ** (step // decay_steps)
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            t = min(1.0, (step - self.warmup_steps) / span)
            return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))
        return 1.0


def create_scheduler(optimizer: torch.optim.Optimizer, mult: LRMultiplier
                     ) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, mult)
