"""The training loop: `fit(model, train_data, val_data, ...)`.

One function serves the command line, Python callers and torchrun (the
proxy experiments train with :func:`effnet.proxy.trainer.train_proxy`). It never loses
work: checkpoints are atomic, hold everything needed to continue (model,
EMA, optimizer, scheduler, scaler, every RNG, epoch and step), and a run
resumed after SIGKILL replays the exact same steps: the sample order is a
function of (seed, epoch), augmentation randomness of (seed, epoch, index),
and dropout randomness comes from the checkpointed RNG state (one per process).

What can still differ after a resume: CUDA kernels that are not deterministic
(use `deterministic=True`), a different CPU thread count (reduction order),
and a changed batch size or number of processes (the sample order changes).
On CPU with fixed threads the resumed weights are bit-identical (tested).

`fit` only orchestrates: the state it trains is :mod:`.state`, one epoch is
:mod:`.epoch`, evaluation :mod:`.evaluation`, and every file of the run
folder is written by :mod:`.artifacts`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import EffnetError, ParameterError
from . import distributed as D
from .artifacts import RunWriter, save_weights, summary
from .checkpoint import rng_state, set_rng_state
from .epoch import EpochRunner, TrainingDiverged
from .evaluation import evaluate
from .recipes import AUTO, Recipe, choose_recipe, get_recipe
from .rundir import check_resume_settings
from .state import TrainState, create_state

__all__ = ["FitResult", "TrainConfig", "TrainingDiverged", "evaluate", "fit", "save_weights",
           "set_bn_momentum"]


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


@dataclass(frozen=True)
class _Budget:
    """How the training data is cut into steps: per process, per epoch, in all."""

    per_proc: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    sampler: DistributedSampler | None


def _budget(cfg: TrainConfig, train_data: Dataset | DataLoader, info: D.DistInfo) -> _Budget:
    if cfg.batch_size < 1 or cfg.batch_size % info.world_size:
        raise ParameterError(f"batch_size {cfg.batch_size} must be a positive multiple of the "
                             f"number of processes ({info.world_size})", "batch_size")
    per_proc = cfg.batch_size // info.world_size
    sampler = None
    if isinstance(train_data, DataLoader):
        steps_per_epoch = len(train_data)
        n_train = len(train_data.dataset)  # type: ignore[arg-type]
    else:
        n_train = len(train_data)  # type: ignore[arg-type]
        sampler = DistributedSampler(train_data, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=True)
        steps_per_epoch = len(sampler) // per_proc
    if steps_per_epoch == 0:
        raise ParameterError(f"batch size {cfg.batch_size} is larger than the training set "
                             f"({n_train} images): lower batch_size to at most {n_train}",
                             "batch_size")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps) if cfg.epochs else cfg.max_steps
    if total_steps < 1:
        raise ParameterError("nothing to train: give epochs >= 1 (or max_steps >= 1)", "epochs")
    return _Budget(per_proc, steps_per_epoch, total_steps,
                   math.ceil(total_steps / steps_per_epoch), sampler)


def _config(cfg: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    cfg = cfg or TrainConfig()
    unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"fit got unexpected arguments: {', '.join(sorted(unknown))}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    if cfg.eval_every < 1:
        raise ParameterError(f"eval_every {cfg.eval_every} must be >= 1 (evaluate every N epochs)",
                             "eval_every")
    return cfg


def _recipe(cfg: TrainConfig, ck: dict | None, budget: _Budget, where: Path | None) -> Recipe:
    """The run's recipe (a resumed 'auto' run keeps its own); refuse a resume it cannot honour."""
    saved = _saved_recipe(ck)
    if saved is not None and cfg.recipe == AUTO:
        recipe = cfg.resolved_recipe(base=saved)
    else:
        recipe = cfg.resolved_recipe(budget.total_steps,
                                     budget.total_steps / budget.steps_per_epoch)
    if ck is not None:  # before anything is written: refuse what cannot be honoured
        _check_resume(ck, recipe, cfg, where)
    return recipe


def _run_config(cfg: TrainConfig, recipe: Recipe, lr: float, budget: _Budget,
                world_size: int) -> dict:
    run_cfg = {f.name: getattr(cfg, f.name) for f in fields(cfg)
               if f.name not in ("log", "on_epoch")}
    run_cfg["recipe"] = recipe.as_dict()
    run_cfg.update(lr=lr, steps_per_epoch=budget.steps_per_epoch,
                   total_steps=budget.total_steps, world_size=world_size)
    return run_cfg


def _evaluate_epoch(state: TrainState, row: dict, val_data: Dataset | None,
                    test_data: Dataset | None, ev: dict) -> None:
    """Validation (and test) metrics of the eval model into `row`; the raw model's top-1 too."""
    eval_model = state.eval_model()
    if val_data is not None:
        v = evaluate(eval_model, val_data, **ev)
        row.update(val_loss=v["loss"], val_top1=v["top1"], val_top5=v["top5"])
        if state.uses_ema():
            row["val_top1_raw"] = evaluate(state.model, val_data, **ev)["top1"]
    if test_data is not None:
        t = evaluate(eval_model, test_data, **ev)
        row.update(test_top1=t["top1"], test_top5=t["top5"])


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
    cfg = _config(config, overrides)
    info = D.init_distributed(cfg.device)
    log = cfg.log or (_print_now if info.is_main else (lambda s: None))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed + 1000 * info.rank)
    budget = _budget(cfg, train_data, info)
    writer = RunWriter(cfg.output, info.is_main, cfg.model_name)
    try:
        state = _train(model, train_data, val_data, test_data, cfg, info, log, budget, writer)
    finally:
        writer.close()
    D.barrier(info)
    final = state.history[-1] if state.history else {}
    return FitResult(val_top1=final.get("val_top1"), val_top5=final.get("val_top5"),
                     best_top1=state.best_top1, best_epoch=state.best_epoch,
                     test_top1=final.get("test_top1"), epochs=len(state.history),
                     steps=state.step, wall_s=state.wall_before, history=state.history,
                     step_losses=state.step_losses, model=model,
                     ema_model=state.ema.module if state.ema is not None else None,
                     output=writer.out)


def _prepare(model: nn.Module, cfg: TrainConfig, info: D.DistInfo, log: Callable[[str], None],
             budget: _Budget, writer: RunWriter, amp_dtype: torch.dtype | None) -> TrainState:
    """Take the run folder, resolve the recipe, build (or restore) the state, write config.json."""
    ck = writer.open(cfg.resume, cfg.force)
    recipe = _recipe(cfg, ck, budget, writer.checkpoint_path)
    bn_momentum = cfg.bn_momentum if cfg.bn_momentum is not None else recipe.bn_momentum
    if bn_momentum is not None:
        set_bn_momentum(model, bn_momentum)
    model.to(info.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    saved_lr = ck.get("lr") if ck is not None else None
    lr = (cfg.lr if cfg.lr is not None else saved_lr if saved_lr is not None
          else recipe.lr(cfg.batch_size))
    state = create_state(model, recipe, lr, budget.total_steps, budget.steps_per_epoch,
                         amp_dtype == torch.float16, info.device)
    if ck is not None:
        state.restore(ck, saved_lr, writer.checkpoint_path, log)
        rngs = ck.get("rng", [])
        if len(rngs) == info.world_size:
            set_rng_state(rngs[info.rank])
        log(f"resumed from {writer.checkpoint_path}: epoch {state.epoch}, step {state.step}")
    elif cfg.resume:
        log(f"no checkpoint in {cfg.output}: starting a new run")
    writer.write_config(_run_config(cfg, recipe, lr, budget, info.world_size))
    return state


def _train(model: nn.Module, train_data: Dataset | DataLoader, val_data: Dataset | None,
           test_data: Dataset | None, cfg: TrainConfig, info: D.DistInfo,
           log: Callable[[str], None], budget: _Budget, writer: RunWriter) -> TrainState:
    """The run itself: epochs of training, evaluation, best/last weights and checkpoints."""
    amp_dtype = _amp_dtype(cfg.amp, info.device)
    state = _prepare(model, cfg, info, log, budget, writer, amp_dtype)
    device, recipe = info.device, state.recipe
    train_model = _train_model(model, cfg, info)
    if cfg.tensorboard:
        writer.open_tensorboard()
    t_start = time.perf_counter()

    def checkpoint(epoch: int, batch: int) -> None:
        rngs = _gather(rng_state(), info)
        if writer.writes:
            writer.checkpoint(state.checkpoint(epoch, batch, rngs,
                                               state.wall_before + time.perf_counter() - t_start,
                                               cfg.batch_size, cfg.seed))

    runner = EpochRunner(
        train_model=train_model, train_data=train_data, sampler=budget.sampler,
        per_proc=budget.per_proc, steps_per_epoch=budget.steps_per_epoch,
        total_steps=budget.total_steps, epochs=budget.epochs, device=device,
        amp_dtype=amp_dtype, criterion=nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
        info=info, seed=cfg.seed, num_workers=cfg.num_workers, channels_last=cfg.channels_last,
        grad_clip=cfg.grad_clip, checkpoint_every=cfg.checkpoint_every, progress=cfg.progress,
        log=log, step_scalars=writer.step_scalars, checkpoint=checkpoint,
        diverged_hint=writer.diverged_hint)
    ev = dict(batch_size=max(budget.per_proc, 64), device=device, amp_dtype=amp_dtype,
              channels_last=cfg.channels_last, num_workers=cfg.num_workers, info=info)
    if state.ema is not None and budget.total_steps < state.ema_min_steps:
        log(f"EMA {recipe.ema_decay:g} averages over ~{state.ema_min_steps} steps, more than "
            f"this run's {budget.total_steps}: the raw weights are evaluated and saved")
    model.train()
    start_epoch, start_batch = state.epoch, state.batch
    for epoch in range(start_epoch, budget.epochs):
        if state.step >= budget.total_steps:
            break
        row = runner.run(state, epoch, start_batch if epoch == start_epoch else 0)
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == budget.epochs \
                or state.step >= budget.total_steps:
            _evaluate_epoch(state, row, val_data, test_data, ev)
        state.history.append(row)
        log(f"epoch {epoch + 1}: " + " ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items() if k != "lr"))
        _keep_best(state, row, epoch, writer)
        writer.epoch_done(state.history)
        checkpoint(epoch + 1, 0)
        if cfg.on_epoch is not None:
            cfg.on_epoch(dict(row))
    state.wall_before += time.perf_counter() - t_start
    if writer.writes:
        writer.finish(state.eval_model(), state.best_top1 is not None, summary(
            model, model_name=cfg.model_name, image_size=cfg.image_size, recipe=recipe.name,
            batch_size=cfg.batch_size, history=state.history, best_epoch=state.best_epoch,
            steps=state.step, wall=state.wall_before))
    return state


def _train_model(model: nn.Module, cfg: TrainConfig, info: D.DistInfo) -> nn.Module:
    """What the steps call: the model, in DistributedDataParallel on torchrun, compiled if
    asked."""
    train_model: nn.Module = model
    if info.enabled:
        device = info.device
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    return train_model


def _keep_best(state: TrainState, row: dict, epoch: int, writer: RunWriter) -> None:
    """A new best validation top-1 (model selection on validation data only): best/ saved."""
    score = row.get("val_top1")
    if score is not None and (state.best_top1 is None or score > state.best_top1):
        state.best_top1, state.best_epoch = score, epoch + 1
        writer.save_best(state.eval_model())


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
