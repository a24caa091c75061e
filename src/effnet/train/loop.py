"""The training loop: `fit(model, train_data, val_data, ...)`.

One function serves the command line, Python callers (the compound-scaling
grid search trains each candidate with it) and torchrun. It never loses
work: checkpoints are atomic, hold everything needed to continue (model,
EMA, optimizer, scheduler, scaler, every RNG, epoch and step), and a run
resumed after SIGKILL replays the exact same steps: the sample order is a
function of (seed, epoch), augmentation randomness of (seed, epoch, index),
and dropout randomness comes from the checkpointed RNG state (one per process).

What can still differ after a resume: CUDA kernels that are not deterministic
(use `deterministic=True`), a different CPU thread count (reduction order),
and a changed batch size or number of processes (the sample order changes).
On CPU with fixed threads the resumed weights are bit-identical (tested).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from ..errors import EffnetError
from . import distributed as D
from .checkpoint import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .ema import create_ema
from .optim import create_optimizer
from .recipes import AUTO, Recipe, choose_recipe, get_recipe
from .rundir import RunLock, check_new_run, check_resume_settings, remove_stale_temporaries
from .schedule import LRMultiplier, create_scheduler

PROGRESS_EVERY_S = 60.0  # progress lines when output is not a terminal


class TrainingDiverged(EffnetError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Everything about a run except the model and the data. None means "from the recipe"."""

    epochs: int = 10
    max_steps: int | None = None       # stop after this many optimizer steps (schedule spans it)
    batch_size: int = 128              # global batch: split evenly over torchrun processes
    recipe: str | Recipe = "auto"      # auto: paper for long runs, else short (choose_recipe)
    lr: float | None = None            # absolute learning rate (default: recipe's per-256 rule)
    optimizer: str | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    schedule: str | None = None
    label_smoothing: float | None = None
    ema_decay: float | None = None     # 0 turns the EMA off
    grad_clip: float | None = None
    bn_momentum: float | None = None   # PyTorch convention; None keeps the model's (TF 0.99 = 0.01)
    seed: int = 0
    device: str | None = None          # default: cuda if available, else cpu
    amp: str = "auto"                  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | none
    channels_last: bool = True
    compile: bool = False
    num_workers: int = 2
    output: str | Path | None = None   # run folder; None: write nothing
    resume: bool = False
    force: bool = False                # a new run may replace an existing run in `output`
    checkpoint_every: int = 0          # also checkpoint every N steps (0: per epoch only)
    eval_every: int = 1
    tensorboard: bool = False
    progress: bool = True
    deterministic: bool = False
    image_size: int | None = None      # for the MACs figure in summary.json
    model_name: str | None = None
    log: Callable[[str], None] | None = None
    on_epoch: Callable[[dict], None] | None = None  # gets each epoch's metrics row

    def resolved_recipe(self, total_steps: int = 0, epochs: float = 0.0,
                        base: Recipe | None = None) -> Recipe:
        """`base` (default: the named recipe; 'auto' decides by the run's length) + overrides."""
        if base is None:
            base = (choose_recipe(total_steps, epochs)[0] if self.recipe == AUTO
                    else get_recipe(self.recipe))
        return base.with_(
            optimizer=self.optimizer, weight_decay=self.weight_decay,
            warmup_epochs=self.warmup_epochs, schedule=self.schedule,
            label_smoothing=self.label_smoothing, ema_decay=self.ema_decay)


@dataclass
class FitResult:
    """What `fit` returns. Accuracies are fractions in [0, 1] of the eval model (EMA if on)."""

    val_top1: float | None
    val_top5: float | None
    best_top1: float | None
    best_epoch: int | None
    test_top1: float | None
    epochs: int
    steps: int
    wall_s: float
    history: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    model: nn.Module | None = None
    ema_model: nn.Module | None = None
    output: Path | None = None


# ---------------------------------------------------------------- helpers
class _SkipSampler(Sampler):
    """The first `skip` indices of `base` removed (mid-epoch resume)."""

    def __init__(self, base: Sampler, skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self):
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]


def _set_epoch(ds: Any, epoch: int) -> None:
    while ds is not None:
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
            return
        ds = getattr(ds, "dataset", None)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp not in ("auto", "bf16", "fp16", "none"):
        raise ValueError(f"unknown amp {amp!r}: use auto, bf16, fp16 or none")
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "auto" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model) if isinstance(
        model, nn.parallel.DistributedDataParallel) else model


def _topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> int:
    k = min(k, logits.shape[1])
    return int((logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum())


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset | DataLoader, *, batch_size: int = 256,
             device: str | torch.device | None = None, amp_dtype: torch.dtype | None = None,
             channels_last: bool = False, num_workers: int = 0,
             info: D.DistInfo | None = None) -> dict[str, float]:
    """Loss, top-1 and top-5 of `model` on `data` (sharded over torchrun processes, summed)."""
    info = info or D.DistInfo()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if isinstance(data, DataLoader):
        loader = data
    else:
        n = len(data)  # type: ignore[arg-type]
        shard = Subset(data, range(info.rank, n, info.world_size)) if info.enabled else data
        loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=device.type == "cuda")
    was = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss_sum, top1, top5, count
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            logits = logits.float()
            sums += torch.tensor([float(F.cross_entropy(logits, y, reduction="sum")),
                                  _topk_correct(logits, y, 1), _topk_correct(logits, y, 5),
                                  len(y)], dtype=torch.float64)
    finally:
        model.train(was)
    D.all_reduce_sum(sums, info)
    n = max(1.0, float(sums[3]))
    return {"loss": float(sums[0]) / n, "top1": float(sums[1]) / n, "top5": float(sums[2]) / n,
            "n": int(sums[3])}


def _worker_error(err: Exception) -> EffnetError | None:
    """An EffnetError raised inside a DataLoader worker comes back wrapped; unwrap its message."""
    text = str(err)
    if "EffnetError" not in text:
        return None
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    return EffnetError(last.split("Error: ", 1)[-1])


CSV_FIELDS = ["epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_top1",
              "val_top5", "val_top1_raw", "test_top1", "test_top5", "epoch_s", "img_per_s"]


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def save_weights(model: nn.Module, path: str | Path, meta: dict | None = None) -> None:
    """Atomically write `model`'s state dict as safetensors (loadable by create_model)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (meta or {}).items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Set every BatchNorm's running-average momentum (PyTorch convention: weight of the new batch).

    The paper's TF momentum 0.99 is PyTorch 0.01, an average over ~100 steps:
    right for long runs, but a run of a few hundred steps then evaluates with
    statistics still near their initial values. 0.1 suits short runs.
    """
    if not 0.0 < momentum <= 1.0:
        raise EffnetError(f"BN momentum {momentum} is outside (0, 1]: PyTorch convention, "
                          "e.g. 0.01 (TF 0.99, the paper's) or 0.1 for short runs")
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


# ---------------------------------------------------------------- fit
def fit(model: nn.Module, train_data: Dataset | DataLoader, val_data: Dataset | None = None,
        test_data: Dataset | None = None, config: TrainConfig | None = None,
        **overrides: Any) -> FitResult:
    """Train `model` on `train_data`, evaluating on `val_data` each epoch; return the accuracies.

    `config` (a :class:`TrainConfig`) and keyword `overrides` of its fields set
    the budget (`epochs`, `max_steps`), `batch_size`, `recipe` ('paper' is the
    paper's Section 5.2 recipe, 'short' AdamW+cosine for small data) and where
    to write (`output`; None writes nothing). Datasets are sharded over
    torchrun processes; a DataLoader is used as given (one process, resume at
    epoch boundaries only). Model selection uses `val_data` only; `test_data`
    is reported alongside. `on_epoch(row)` runs on every process after each
    epoch's checkpoint is written, with that epoch's (all-reduced) metrics; an
    exception it raises (a pruner's) stops the run with the checkpoint intact.
    """
    cfg = config or TrainConfig()
    unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"fit got unexpected arguments: {', '.join(sorted(unknown))}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    if cfg.eval_every < 1:
        raise EffnetError(f"--eval-every {cfg.eval_every} must be >= 1 (evaluate every N epochs)")
    info = D.init_distributed(cfg.device)
    device = info.device
    log = cfg.log or (_print_now if info.is_main else (lambda s: None))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed + 1000 * info.rank)
    out = Path(cfg.output) if cfg.output and info.is_main else None
    ckpt_path = Path(cfg.output) / "last.pt" if cfg.output else None

    # ---- data
    if cfg.batch_size < 1 or cfg.batch_size % info.world_size:
        raise EffnetError(f"--batch-size {cfg.batch_size} must be a positive multiple of the "
                          f"number of processes ({info.world_size})")
    per_proc = cfg.batch_size // info.world_size
    user_loader = isinstance(train_data, DataLoader)
    if user_loader:
        steps_per_epoch = len(train_data)  # type: ignore[arg-type]
        n_train = len(train_data.dataset)  # type: ignore[arg-type,union-attr]
        sampler = None
    else:
        n_train = len(train_data)  # type: ignore[arg-type]
        sampler = DistributedSampler(train_data, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=True)
        steps_per_epoch = len(sampler) // per_proc
    if steps_per_epoch == 0:
        raise EffnetError(f"batch size {cfg.batch_size} is larger than the training set "
                          f"({n_train} images): lower --batch-size to at most {n_train}")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps) if cfg.epochs else cfg.max_steps
    epochs = math.ceil(total_steps / steps_per_epoch)
    if total_steps < 1:
        raise EffnetError("nothing to train: give --epochs >= 1 (or max_steps >= 1)")
    lock = RunLock(out) if out is not None else None
    writer = None
    try:
        if lock is not None:  # one writer per run folder; then its stale temporaries go
            lock.acquire()
            remove_stale_temporaries(out)  # type: ignore[arg-type]
            if not (cfg.resume and ckpt_path is not None and ckpt_path.exists()):
                check_new_run(out, cfg.force, cfg.resume)  # type: ignore[arg-type]
        if cfg.resume and ckpt_path is None:
            raise EffnetError("--resume needs --output: the run folder holding last.pt")
        ck = load_checkpoint(ckpt_path) if cfg.resume and ckpt_path and ckpt_path.exists() else None
        saved_recipe = _saved_recipe(ck)
        if saved_recipe is not None and cfg.recipe == AUTO:  # a resumed run keeps its recipe
            recipe = cfg.resolved_recipe(base=saved_recipe)
        else:
            recipe = cfg.resolved_recipe(total_steps, total_steps / steps_per_epoch)
        if ck is not None:  # before anything is written: refuse what cannot be honoured
            _check_resume(ck, recipe, cfg, ckpt_path)

        # ---- model, optimizer, schedule, EMA
        bn_momentum = cfg.bn_momentum if cfg.bn_momentum is not None else recipe.bn_momentum
        if bn_momentum is not None:
            set_bn_momentum(model, bn_momentum)
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        saved_lr = ck.get("lr") if ck is not None else None
        lr = (cfg.lr if cfg.lr is not None else saved_lr if saved_lr is not None
              else recipe.lr(cfg.batch_size))
        optimizer = create_optimizer(model, recipe.optimizer, lr, recipe.weight_decay,
                                     recipe.momentum)
        mult = LRMultiplier(recipe.schedule, total_steps, steps_per_epoch,
                            warmup_steps=recipe.warmup_steps(total_steps, steps_per_epoch),
                            decay_rate=recipe.decay_rate, decay_epochs=recipe.decay_epochs)
        scheduler = create_scheduler(optimizer, mult)
        ema = create_ema(model, recipe.ema_decay) if recipe.ema_decay > 0 else None
        amp_dtype = _amp_dtype(cfg.amp, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

        start_epoch, start_batch, step, best_top1, best_epoch = 0, 0, 0, None, None
        history: list[dict] = []
        step_losses: list[float] = []
        wall_before = 0.0
        resumed_sums = None
        sums, seen = torch.zeros(3, dtype=torch.float64), 0
        if cfg.resume:
            if ck is not None:
                try:
                    model.load_state_dict(ck["model"])
                except RuntimeError as err:
                    raise EffnetError(f"{ckpt_path} does not fit this model "
                                      f"({str(err).splitlines()[0]}): use the same --model, or a "
                                      "new --output") from None
                optimizer.load_state_dict(ck["optimizer"])
                scheduler.load_state_dict(ck["scheduler"])
                scheduler.lr_lambdas = [mult] * len(optimizer.param_groups)  # this run's schedule
                if saved_lr is not None and lr != saved_lr:  # a changed --lr: from the next step on
                    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
                    for g in optimizer.param_groups:
                        g["initial_lr"], g["lr"] = lr, lr * mult(scheduler.last_epoch)
                    log(f"--lr changed on resume: {saved_lr:g} -> {lr:g} from step "
                        f"{ck['step'] + 1}")
                scaler.load_state_dict(ck["scaler"])
                if ema is not None and ck.get("ema") is not None:
                    ema.load_state_dict(ck["ema"])
                start_epoch, start_batch, step = ck["epoch"], ck["batch"], ck["step"]
                best_top1, best_epoch = ck.get("best_top1"), ck.get("best_epoch")
                history, step_losses = ck.get("history", []), ck.get("step_losses", [])
                wall_before = ck.get("wall_s", 0.0)
                resumed_sums = ck.get("epoch_sums")
                rngs = ck.get("rng", [])
                if len(rngs) == info.world_size:
                    set_rng_state(rngs[info.rank])
                log(f"resumed from {ckpt_path}: epoch {start_epoch}, step {step}")
            else:
                log(f"no checkpoint in {cfg.output}: starting a new run")
        if out is not None:
            run_cfg = {f.name: getattr(cfg, f.name) for f in fields(cfg)
                       if f.name not in ("log", "on_epoch")}
            run_cfg["recipe"] = recipe.as_dict()
            run_cfg.update(lr=lr, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                           world_size=info.world_size)
            atomic_write_json(out / "config.json", json.loads(json.dumps(run_cfg, default=str)))

        train_model: nn.Module = model
        if info.enabled:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            train_model = torch.compile(train_model)

        if cfg.tensorboard and out is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"))

        def checkpoint(epoch: int, batch: int) -> None:
            rngs = _gather(rng_state(), info)
            if out is None:
                return
            state = {"model": model.state_dict(), "ema": ema.state_dict() if ema else None,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rngs, "epoch": epoch, "batch": batch,
                     "step": step, "best_top1": best_top1, "best_epoch": best_epoch,
                     "history": history, "step_losses": step_losses,
                     "epoch_sums": (sums.clone(), seen) if batch else None,
                     "wall_s": wall_before + time.perf_counter() - t_start,
                     "recipe": recipe.as_dict(), "lr": lr, "batch_size": cfg.batch_size,
                     "seed": cfg.seed}
            save_checkpoint(out / "last.pt", state)

        # the EMA is evaluated (and selected) only once it has averaged over its window
        ema_min_steps = math.ceil(1 / (1 - recipe.ema_decay) - 1e-6) if ema is not None else 0
        use_ema = ema is not None and step >= ema_min_steps
        eval_model = ema.module if use_ema and ema is not None else model
        if ema is not None and total_steps < ema_min_steps:
            log(f"EMA {recipe.ema_decay:g} averages over ~{ema_min_steps} steps, more than this "
                f"run's {total_steps}: the raw weights are evaluated and saved")
        t_start = time.perf_counter()
        model.train()
        for epoch in range(start_epoch, epochs):
            if step >= total_steps:
                break
            skip = start_batch if epoch == start_epoch else 0
            if user_loader:
                loader: Iterable = itertools.islice(train_data, skip, None)  # type: ignore
                _set_epoch(train_data.dataset, epoch)  # type: ignore[union-attr]
            else:
                assert sampler is not None
                sampler.set_epoch(epoch)
                _set_epoch(train_data, epoch)
                loader = DataLoader(
                    train_data, batch_size=per_proc, drop_last=True,
                    sampler=_SkipSampler(sampler, skip * per_proc), num_workers=cfg.num_workers,
                    pin_memory=device.type == "cuda",
                    generator=torch.Generator().manual_seed(cfg.seed + epoch))
            n_batches = min(steps_per_epoch, total_steps - step + skip)
            bar = None
            # a bar on a terminal; into a log file, a line every PROGRESS_EVERY_S seconds
            lines = cfg.progress and info.is_main and not sys.stderr.isatty()
            last_line = time.perf_counter()
            if cfg.progress and info.is_main and not lines:
                from tqdm.auto import tqdm

                bar = tqdm(total=n_batches, initial=skip, desc=f"epoch {epoch + 1}/{epochs}",
                           dynamic_ncols=True, mininterval=1.0, leave=True)
            sums = torch.zeros(3, dtype=torch.float64)  # loss_sum, correct, count
            t_epoch, seen = time.perf_counter(), 0
            if skip and resumed_sums is not None:
                sums, seen = resumed_sums[0].clone(), resumed_sums[1]
            batch_iter = iter(loader)
            for b in range(skip, n_batches):
                try:
                    x, y = next(batch_iter)
                except StopIteration:
                    break
                except Exception as err:
                    wrapped = _worker_error(err)
                    if wrapped is not None:
                        raise wrapped from None
                    raise
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if cfg.channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = train_model(x)
                    loss = criterion(logits.float(), y)
                stats = torch.tensor([float(loss.detach()) * len(y),
                                      _topk_correct(logits.detach(), y, 1), len(y)],
                                     dtype=torch.float64)
                D.all_reduce_sum(stats, info)
                step_loss = float(stats[0] / stats[2])
                if not math.isfinite(step_loss):
                    where = (f"the last good checkpoint is {ckpt_path}" if ckpt_path
                             and ckpt_path.exists() else "no checkpoint was written")
                    raise TrainingDiverged(
                        f"loss became {step_loss} at step {step + 1} (epoch {epoch + 1}); "
                        f"{where}. Lower the learning rate (--lr) or use --amp none")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                step += 1
                sums += stats
                seen += int(stats[2])
                step_losses.append(step_loss)
                if bar is not None:
                    bar.update(1)
                    if b % 10 == 0 or b == n_batches - 1:
                        dt = max(1e-9, time.perf_counter() - t_epoch)
                        bar.set_postfix(loss=f"{float(sums[0] / sums[2]):.4f}",
                                        acc=f"{float(sums[1] / sums[2]):.3f}",
                                        lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                        img_s=f"{seen / dt:.0f}", refresh=False)
                elif lines and time.perf_counter() - last_line >= PROGRESS_EVERY_S:
                    last_line = time.perf_counter()
                    log(f"epoch {epoch + 1}/{epochs}: step {b + 1}/{n_batches} "
                        f"loss={float(sums[0] / sums[2]):.4f} acc={float(sums[1] / sums[2]):.3f} "
                        f"img_s={seen / max(1e-9, last_line - t_epoch):.0f}")
                if writer is not None and step % 50 == 0:
                    writer.add_scalar("train/loss", step_loss, step)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 \
                        and b + 1 < n_batches:
                    checkpoint(epoch, b + 1)
                if step >= total_steps:
                    break
            if bar is not None:
                bar.close()
            epoch_s = time.perf_counter() - t_epoch
            row: dict[str, Any] = {
                "epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
                "train_loss": float(sums[0] / max(1, sums[2])),
                "train_top1": float(sums[1] / max(1, sums[2])),
                "epoch_s": epoch_s, "img_per_s": seen / max(1e-9, epoch_s)}
            last_epoch = epoch + 1 == epochs or step >= total_steps
            if (epoch + 1) % cfg.eval_every == 0 or last_epoch:
                ev = dict(batch_size=max(per_proc, 64), device=device, amp_dtype=amp_dtype,
                          channels_last=cfg.channels_last, num_workers=cfg.num_workers,
                          info=info)
                use_ema = ema is not None and step >= ema_min_steps
                eval_model = ema.module if use_ema and ema is not None else model
                if val_data is not None:
                    v = evaluate(eval_model, val_data, **ev)
                    row.update(val_loss=v["loss"], val_top1=v["top1"], val_top5=v["top5"])
                    if use_ema:
                        row["val_top1_raw"] = evaluate(model, val_data, **ev)["top1"]
                if test_data is not None:
                    t = evaluate(eval_model, test_data, **ev)
                    row.update(test_top1=t["top1"], test_top5=t["top5"])
            history.append(row)
            msg = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.items() if k not in ("lr",))
            log(f"epoch {epoch + 1}: {msg}")
            score = row.get("val_top1")
            if score is not None and (best_top1 is None or score > best_top1):
                best_top1, best_epoch = score, epoch + 1
                if out is not None:
                    _save_best(eval_model, out, _weights_meta(model, cfg))
            if writer is not None:
                for k, v in row.items():
                    if isinstance(v, float) and k != "epoch":
                        writer.add_scalar(f"epoch/{k}", v, epoch + 1)
            if out is not None:
                atomic_write_text(out / "metrics.csv", _csv_text(history))
            checkpoint(epoch + 1, 0)
            if cfg.on_epoch is not None:
                cfg.on_epoch(dict(row))

        wall = wall_before + time.perf_counter() - t_start
        final = history[-1] if history else {}
        best_row = next((r for r in history if r["epoch"] == best_epoch), final)
        if out is not None:
            if best_top1 is None:  # no validation data: the final weights are the best we know
                _save_best(eval_model, out, _weights_meta(model, cfg))
            save_weights(eval_model, out / "final.safetensors", _weights_meta(model, cfg))
            atomic_write_json(out / "summary.json", _summary(model, cfg, recipe, history, final,
                                                             best_row, best_epoch, step, wall))
    finally:
        if writer is not None:
            writer.close()
        if lock is not None:
            lock.release()
    D.barrier(info)
    return FitResult(val_top1=final.get("val_top1"), val_top5=final.get("val_top5"),
                     best_top1=best_top1, best_epoch=best_epoch,
                     test_top1=final.get("test_top1"), epochs=len(history), steps=step,
                     wall_s=wall, history=history, step_losses=step_losses, model=model,
                     ema_model=ema.module if ema is not None else None, output=out)


def _print_now(line: str) -> None:
    """print, flushed: a log file shows each line when it happens, not at exit."""
    print(line, flush=True)


def _saved_recipe(ck: dict | None) -> Recipe | None:
    """The Recipe a checkpoint was trained with (None for checkpoints without one)."""
    return Recipe.from_dict(ck.get("recipe") if ck is not None else None)


def _check_resume(ck: dict, recipe: Recipe, cfg: TrainConfig, where: Path | None) -> None:
    """Refuse a resume with another recipe, optimizer setting, batch size or seed (one line)."""
    saved = _saved_recipe(ck)
    if saved is not None:
        check_resume_settings({"recipe": saved.name}, {"recipe": recipe.name}, str(where))
        settings = ("optimizer", "weight_decay", "momentum", "warmup_epochs", "schedule",
                    "label_smoothing", "ema_decay", "decay_rate", "decay_epochs")
        check_resume_settings({k: getattr(saved, k) for k in settings},
                              {k: getattr(recipe, k) for k in settings}, str(where))
    check_resume_settings({k: ck[k] for k in ("batch_size", "seed") if k in ck},
                          {"batch_size": cfg.batch_size, "seed": cfg.seed}, str(where))


def _gather(obj: Any, info: D.DistInfo) -> list:
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _save_best(model: nn.Module, out: Path, meta: dict) -> None:
    """best.safetensors (a state dict), and for effnet models also best/ from save_pretrained."""
    save_weights(model, out / "best.safetensors", meta)
    if hasattr(model, "spec") and hasattr(model, "stem"):
        from ..weights import save_pretrained

        save_pretrained(model, out / "best")


def _weights_meta(model: nn.Module, cfg: TrainConfig) -> dict:
    meta: dict[str, Any] = {"format": "pt"}
    for key in ("padding", "bn_eps"):  # read back by effnet.load_weights
        if hasattr(model, key):
            value = getattr(model, key)
            meta[key] = repr(float(value)) if key == "bn_eps" else str(value)
    name = cfg.model_name or getattr(model, "model_name", None)
    if name:
        meta["model_name"] = name
    pcfg = getattr(model, "pretrained_cfg", None)
    if pcfg:
        meta["pretrained_cfg"] = json.loads(json.dumps(pcfg, default=list))
    if hasattr(model, "num_classes"):
        meta["num_classes"] = int(model.num_classes)
    return meta


def _summary(model: nn.Module, cfg: TrainConfig, recipe: Recipe, history: list[dict],
             final: dict, best_row: dict, best_epoch: int | None, steps: int,
             wall: float) -> dict:
    from ..profile import count_macs, count_params

    macs = None
    if cfg.image_size:
        with contextlib.suppress(Exception):  # models without a conv input (tests) have no MACs
            macs = count_macs(model, cfg.image_size)
    return {
        "model": cfg.model_name or getattr(model, "model_name", type(model).__name__),
        "params": count_params(model), "macs": macs, "image_size": cfg.image_size,
        "recipe": recipe.name, "epochs": len(history), "steps": steps,
        "batch_size": cfg.batch_size, "wall_s": round(wall, 1),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "best": {"epoch": best_epoch, "val_top1": best_row.get("val_top1"),
                 "val_top5": best_row.get("val_top5"), "test_top1": best_row.get("test_top1"),
                 "test_top5": best_row.get("test_top5")},
        "final": {"epoch": final.get("epoch"), "val_top1": final.get("val_top1"),
                  "val_top5": final.get("val_top5"), "test_top1": final.get("test_top1"),
                  "test_top5": final.get("test_top5")},
    }
