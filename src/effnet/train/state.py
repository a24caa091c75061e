"""A run's training state: everything `fit` changes as it trains, and its checkpoint.

:func:`create_state` builds the optimizer, schedule, gradient scaler and EMA
for a model and a recipe (paper Section 5.2 or the short recipe);
:meth:`TrainState.restore` loads a checkpoint into them, and
:meth:`TrainState.checkpoint` is what ``last.pt`` holds: tensors and plain
data only, so a resume never unpickles code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ParameterError
from .ema import create_ema
from .optim import create_optimizer
from .recipes import Recipe
from .schedule import LRMultiplier, create_scheduler


@dataclass
class TrainState:
    """The model, its optimizer, schedule, scaler and EMA, and the run's counters and history."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    mult: LRMultiplier
    scaler: torch.amp.GradScaler
    ema: Any  # an AveragedModel, or None
    recipe: Recipe
    lr: float
    epoch: int = 0                     # the epoch to start (or continue) with
    batch: int = 0                     # batches of that epoch already done
    step: int = 0
    best_top1: float | None = None
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    wall_before: float = 0.0           # training seconds of the run before this process
    resumed_sums: Any = None           # the interrupted epoch's (sums, seen), mid-epoch resume
    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    seen: int = 0                      # images of the current epoch so far

    @property
    def ema_min_steps(self) -> int:
        """Steps before the EMA has averaged over its window (it is evaluated only after)."""
        if self.ema is None:
            return 0
        return math.ceil(1 / (1 - self.recipe.ema_decay) - 1e-6)

    def uses_ema(self) -> bool:
        return self.ema is not None and self.step >= self.ema_min_steps

    def eval_model(self) -> nn.Module:
        """What is evaluated, selected and saved: the EMA once it has averaged, else the model."""
        return self.ema.module if self.uses_ema() else self.model

    def restore(self, ck: dict, lr_saved: float | None, where: Path | None,
                log: Any) -> None:
        """Continue from checkpoint `ck` (all but the RNG state, which is per process)."""
        try:
            self.model.load_state_dict(ck["model"])
        except RuntimeError as err:
            raise ParameterError(f"{where} does not fit the network being trained "
                                 f"({str(err).splitlines()[0]}): use the same model, or a new "
                                 "output", "model", "output") from None
        groups = self.optimizer.param_groups
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scheduler.lr_lambdas = [self.mult] * len(groups)  # this run's schedule
        if lr_saved is not None and self.lr != lr_saved:  # a changed --lr: from the next step on
            self.scheduler.base_lrs = [self.lr] * len(groups)
            for g in groups:
                g["initial_lr"], g["lr"] = self.lr, self.lr * self.mult(self.scheduler.last_epoch)
            log(f"--lr changed on resume: {lr_saved:g} -> {self.lr:g} from step {ck['step'] + 1}")
        self.scaler.load_state_dict(ck["scaler"])
        if self.ema is not None and ck.get("ema") is not None:
            self.ema.load_state_dict(ck["ema"])
        self.epoch, self.batch, self.step = ck["epoch"], ck["batch"], ck["step"]
        self.best_top1, self.best_epoch = ck.get("best_top1"), ck.get("best_epoch")
        self.history, self.step_losses = ck.get("history", []), ck.get("step_losses", [])
        self.wall_before = ck.get("wall_s", 0.0)
        self.resumed_sums = ck.get("epoch_sums")

    def checkpoint(self, epoch: int, batch: int, rngs: list, wall_s: float,
                   batch_size: int, seed: int) -> dict:
        """``last.pt``'s content after `batch` batches of `epoch` (0: at the epoch's start)."""
        ema = self.ema
        return {"model": self.model.state_dict(), "ema": ema.state_dict() if ema else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rngs, "epoch": epoch, "batch": batch, "step": self.step,
                "best_top1": self.best_top1, "best_epoch": self.best_epoch,
                "history": self.history, "step_losses": self.step_losses,
                "epoch_sums": (self.sums.clone(), self.seen) if batch else None,
                "wall_s": wall_s, "recipe": self.recipe.as_dict(), "lr": self.lr,
                "batch_size": batch_size, "seed": seed}


def create_state(model: nn.Module, recipe: Recipe, lr: float, total_steps: int,
                 steps_per_epoch: int, amp_fp16: bool, device: torch.device) -> TrainState:
    """A fresh state: optimizer, per-step schedule, gradient scaler (fp16) and EMA for `recipe`."""
    optimizer = create_optimizer(model, recipe.optimizer, lr, recipe.weight_decay,
                                 recipe.momentum)
    mult = LRMultiplier(recipe.schedule, total_steps, steps_per_epoch,
                        warmup_steps=recipe.warmup_steps(total_steps, steps_per_epoch),
                        decay_rate=recipe.decay_rate, decay_epochs=recipe.decay_epochs)
    scheduler = create_scheduler(optimizer, mult)
    ema = create_ema(model, recipe.ema_decay) if recipe.ema_decay > 0 else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_fp16)
    return TrainState(model=model, optimizer=optimizer, scheduler=scheduler, mult=mult,
                      scaler=scaler, ema=ema, recipe=recipe, lr=lr)
