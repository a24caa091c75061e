"""One training epoch: the epoch's batches in a resumable order, the steps, the progress.

The sample order is a function of (seed, epoch) (:class:`DistributedSampler`
with ``set_epoch``), so an epoch interrupted after `skip` batches continues
with exactly the batches it had not seen (:class:`SkipSampler`).
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..errors import EffnetError, ParameterError
from . import distributed as D
from .evaluation import topk_correct
from .state import TrainState

PROGRESS_EVERY_S = 60.0  # progress lines when output is not a terminal


class TrainingDiverged(ParameterError):
    """The loss became NaN or infinite (the message names the parameters to change)."""


class SkipSampler(Sampler):
    """The first `skip` indices of `base` removed (mid-epoch resume)."""

    def __init__(self, base: Sampler, skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]


def set_epoch(ds: Any, epoch: int) -> None:
    """Tell the dataset (or the one it wraps) the epoch: its augmentation depends on it."""
    while ds is not None:
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
            return
        ds = getattr(ds, "dataset", None)


def worker_error(err: Exception) -> EffnetError | None:
    """An EffnetError raised inside a DataLoader worker comes back wrapped; unwrap its message."""
    text = str(err)
    if "EffnetError" not in text:
        return None
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    return EffnetError(last.split("Error: ", 1)[-1])


class _Progress:
    """A tqdm bar on a terminal; into a log file, a line every PROGRESS_EVERY_S seconds."""

    def __init__(self, enabled: bool, log: Callable[[str], None], total: int, initial: int,
                 desc: str) -> None:
        self.log, self.desc, self.total = log, desc, total
        self.lines = enabled and not sys.stderr.isatty()
        self.bar = None
        self.t0 = self.last = time.perf_counter()
        if enabled and not self.lines:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                            mininterval=1.0, leave=True)

    def update(self, b: int, sums: torch.Tensor, seen: int, lr: float) -> None:
        """After batch `b`; the running loss and accuracy are read only when shown."""
        if self.bar is not None:
            self.bar.update(1)
            if b % 10 == 0 or b == self.total - 1:
                dt = max(1e-9, time.perf_counter() - self.t0)
                self.bar.set_postfix(loss=f"{float(sums[0] / sums[2]):.4f}",
                                     acc=f"{float(sums[1] / sums[2]):.3f}", lr=f"{lr:.2e}",
                                     img_s=f"{seen / dt:.0f}", refresh=False)
        elif self.lines and time.perf_counter() - self.last >= PROGRESS_EVERY_S:
            self.last = time.perf_counter()
            self.log(f"{self.desc}: step {b + 1}/{self.total} loss={float(sums[0] / sums[2]):.4f} "
                     f"acc={float(sums[1] / sums[2]):.3f} "
                     f"img_s={seen / max(1e-9, self.last - self.t0):.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class EpochRunner:
    """Everything an epoch needs that does not change during the run."""

    train_model: nn.Module                 # the model as trained (DDP- or compile-wrapped)
    train_data: Dataset | DataLoader
    sampler: DistributedSampler | None     # None: a user's DataLoader, used as given
    per_proc: int                          # batch size per process
    steps_per_epoch: int
    total_steps: int
    epochs: int
    device: torch.device
    amp_dtype: torch.dtype | None
    criterion: nn.Module
    info: D.DistInfo
    seed: int
    num_workers: int
    channels_last: bool
    grad_clip: float | None
    checkpoint_every: int
    progress: bool
    log: Callable[[str], None]
    step_scalars: Callable[[int, float, float], None]
    checkpoint: Callable[[int, int], None]  # (epoch, batches done) -> last.pt written
    diverged_hint: Callable[[], str]

    def _batches(self, epoch: int, skip: int) -> Iterable:
        if self.sampler is None:
            set_epoch(self.train_data.dataset, epoch)  # type: ignore[union-attr]
            return itertools.islice(self.train_data, skip, None)
        self.sampler.set_epoch(epoch)
        set_epoch(self.train_data, epoch)
        return DataLoader(self.train_data, batch_size=self.per_proc, drop_last=True,
                          sampler=SkipSampler(self.sampler, skip * self.per_proc),
                          num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.seed + epoch))

    def _step(self, state: TrainState, x: torch.Tensor, y: torch.Tensor,
              epoch: int) -> torch.Tensor:
        """One optimizer step on (x, y); returns [loss sum, correct, count] over all processes."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype,
                            enabled=self.amp_dtype is not None):
            logits = self.train_model(x)
            loss = self.criterion(logits.float(), y)
        stats = torch.tensor([float(loss.detach()) * len(y), topk_correct(logits.detach(), y, 1),
                              len(y)], dtype=torch.float64)
        D.all_reduce_sum(stats, self.info)
        step_loss = float(stats[0] / stats[2])
        if not math.isfinite(step_loss):
            raise TrainingDiverged(
                f"loss became {step_loss} at step {state.step + 1} (epoch {epoch + 1}); "
                f"{self.diverged_hint()}. Lower the learning rate (lr) or use amp='none'",
                "lr", "amp")
        opt, scaler = state.optimizer, state.scaler
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.grad_clip:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(state.model.parameters(), self.grad_clip)
        scaler.step(opt)
        scaler.update()
        state.scheduler.step()
        if state.ema is not None:
            state.ema.update_parameters(state.model)
        state.step += 1
        state.step_losses.append(step_loss)
        return stats

    def run(self, state: TrainState, epoch: int, skip: int) -> dict[str, Any]:
        """Train epoch `epoch` from batch `skip` on; its row of training metrics."""
        n_batches = min(self.steps_per_epoch, self.total_steps - state.step + skip)
        progress = _Progress(self.progress and self.info.is_main, self.log, n_batches, skip,
                             f"epoch {epoch + 1}/{self.epochs}")
        state.sums = torch.zeros(3, dtype=torch.float64)  # loss_sum, correct, count
        t_epoch, state.seen = time.perf_counter(), 0
        if skip and state.resumed_sums is not None:
            state.sums, state.seen = state.resumed_sums[0].clone(), state.resumed_sums[1]
        batch_iter = iter(self._batches(epoch, skip))
        for b in range(skip, n_batches):
            try:
                x, y = next(batch_iter)
            except StopIteration:
                break
            except Exception as err:
                wrapped = worker_error(err)
                if wrapped is not None:
                    raise wrapped from None
                raise
            stats = self._step(state, x, y, epoch)
            state.sums += stats
            state.seen += int(stats[2])
            lr = state.optimizer.param_groups[0]["lr"]
            progress.update(b, state.sums, state.seen, lr)
            self.step_scalars(state.step, state.step_losses[-1], lr)
            if self.checkpoint_every and state.step % self.checkpoint_every == 0 \
                    and b + 1 < n_batches:
                self.checkpoint(epoch, b + 1)
            if state.step >= self.total_steps:
                break
        progress.close()
        epoch_s = time.perf_counter() - t_epoch
        sums = state.sums
        return {"epoch": epoch + 1, "step": state.step, "lr": state.optimizer.param_groups[0]["lr"],
                "train_loss": float(sums[0] / max(1, sums[2])),
                "train_top1": float(sums[1] / max(1, sums[2])),
                "epoch_s": epoch_s, "img_per_s": state.seen / max(1e-9, epoch_s)}
