"""A training run decided before it starts: `plan_run` picks what `effnet train` and Python
callers get by default (resolution, channels, recipe, augmentation, initialisation).

    from effnet.train import plan_run
    plan = plan_run("cifar10", "b0", epochs=3, batch_size=64)   # model, data, TrainConfig
    result = plan.fit()                                        # = fit(plan.model, ...)

The defaults: 32 px for the small datasets (Fashion-MNIST, CIFAR), else the model's own
resolution; one input channel for Fashion-MNIST trained from scratch, else three; the recipe
'auto' picks by the run's length (a resumed run keeps its own), its augmentation unless one is
given, and its initialisation of a model trained from scratch (zero classifier, zero residual
branches). The model's pretrained_cfg gets the data's preprocessing and class names, so
`effnet predict --weights RUN` needs nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from ..data.datasets import DataBundle
from ..data.registry import DATASET_FACTS
from ..errors import EffnetError, ParameterError
from ..limits import check_workers
from .loop import FitResult, TrainConfig, fit
from .recipes import AUTO, Recipe

# Input channels of the small datasets (effnet.data.registry, the one table of dataset facts).
SMALL_DATASETS = {name: facts.in_chans for name, facts in DATASET_FACTS.items()}
MIN_IMAGE_SIZE = 32  # px: the network downsamples 32x


@dataclass
class TrainPlan:
    """A run as `effnet train` runs it: the model and data built, the settings resolved, and
    what was decided in words (`why`: why 'auto' chose the recipe; `inits`)."""

    model: nn.Module
    data: DataBundle
    config: TrainConfig
    recipe: Recipe
    image_size: int
    in_chans: int
    augment: str
    why: str = ""
    inits: tuple[str, ...] = ()

    def fit(self) -> FitResult:
        """Train: `effnet.train.fit` on this plan's model, data and config."""
        return fit(self.model, self.data.train, self.data.val, self.data.test, self.config)


def plan_run(dataset: str, model: str = "b0", *, root: str | os.PathLike | None = None,
             phi: float | None = None, pretrained: Any = None, image_size: int | None = None,
             in_chans: int | None = None, val_fraction: float = 0.1, augment: str | None = None,
             drop_rate: float | None = None, drop_path_rate: float | None = None,
             zero_init_head: bool = False, memory_efficient: bool = False,
             grad_checkpointing: bool = False, download: bool = True,
             config: TrainConfig | None = None, **overrides: Any) -> TrainPlan:
    """Build model and data for training `model` (a zoo name, compound-scaled by `phi`) on
    `dataset` (stored under `root`), with the defaults of `effnet train` (module docstring).

    `config` and keyword `overrides` are :class:`TrainConfig` fields, as for `fit`; its
    `output` defaults to runs/MODEL-DATASET. `pretrained` starts from weights (fine-tuning:
    a classifier of another size is re-initialised).
    """
    from ..data.datasets import DATASETS
    from ..zoo import MODELS, canonical_name

    cfg = _config(config, overrides)
    if dataset not in DATASETS:
        raise EffnetError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    try:
        name = canonical_name(model)
    except (KeyError, ValueError):
        raise EffnetError(f"unknown model {model!r}: use one of {', '.join(MODELS)}") from None
    check_numbers(cfg, image_size, in_chans)
    recipe = None if cfg.recipe == AUTO else _named_recipe(cfg.recipe)
    small = dataset in SMALL_DATASETS
    size = image_size if image_size is not None else (32 if small else MODELS[name].resolution)
    chans = in_chans if in_chans is not None else (
        SMALL_DATASETS.get(dataset, 3) if not pretrained else 3)
    chosen = augment or (recipe.augment if recipe else "light")
    if cfg.output is None:
        cfg.output = os.path.join("runs", f"{name}-{dataset}")
    data = _data(dataset, root, name, phi, size, chans, chosen, val_fraction, cfg.seed, download)
    why = ""
    if recipe is None:
        recipe, why = auto_recipe(cfg, len(data.train))
        if augment is None and recipe.augment != chosen:
            chosen = recipe.augment
            data = _with_augment(data, chosen)
    net = _model(name, phi, pretrained, data, chans, cfg.seed,
                 drop_rate if drop_rate is not None else recipe.drop_rate,
                 drop_path_rate if drop_path_rate is not None else recipe.drop_path_rate)
    inits = initialise(net, recipe, zero_init_head, pretrained=bool(pretrained))
    if memory_efficient:
        net.set_memory_efficient(True)
    if grad_checkpointing:
        net.set_grad_checkpointing(True)
    cfg.recipe, cfg.image_size, cfg.model_name = recipe, size, net.model_name
    return TrainPlan(net, data, cfg, recipe, size, chans, chosen, why, tuple(inits))


def _config(config: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of `config` (default: TrainConfig()) with `overrides` set."""
    from dataclasses import replace

    unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"plan_run got unexpected arguments: {', '.join(sorted(unknown))}")
    return replace(config or TrainConfig(), **overrides)


def _named_recipe(recipe: str | Recipe) -> Recipe:
    from .recipes import get_recipe

    return recipe if isinstance(recipe, Recipe) else get_recipe(recipe)


def check_numbers(cfg: TrainConfig, image_size: int | None, in_chans: int | None) -> None:
    """Out-of-range numbers are errors naming the parameter and the allowed range, not
    silently replaced."""
    checks = [("image_size", image_size, MIN_IMAGE_SIZE,
               "at least 32 px (the network downsamples 32x)"),
              ("epochs", cfg.epochs, 0, ">= 0 (0 with max_steps)"),
              ("max_steps", cfg.max_steps, 1, ">= 1"),
              ("batch_size", cfg.batch_size, 1, ">= 1"),
              ("eval_every", cfg.eval_every, 1, ">= 1 (evaluate every N epochs)"),
              ("checkpoint_every", cfg.checkpoint_every, 0, ">= 0 (0: per epoch only)"),
              ("lr", cfg.lr, 0, ">= 0"), ("in_chans", in_chans, 1, "1 or 3")]
    for param, value, low, allowed in checks:
        if value is not None and not value >= low:  # also refuses NaN
            names = (param, "max_steps") if param == "epochs" else (param,)
            raise ParameterError(f"{param} {value} is out of range: use {allowed}", *names)
    check_workers(cfg.num_workers)


def auto_recipe(cfg: TrainConfig, n_train: int) -> tuple[Recipe, str]:
    """recipe 'auto': a resumed run's own recipe, else `choose_recipe` by the run's length;
    and why, in words."""
    from .recipes import choose_recipe
    from .rundir import run_recipe

    if cfg.resume and cfg.output is not None:
        saved = run_recipe(cfg.output)
        if saved is not None:
            return saved, "the recipe of the run being resumed"
    steps_per_epoch = max(1, n_train // max(1, cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps) if cfg.epochs else cfg.max_steps
    return choose_recipe(total, total / steps_per_epoch)


def initialise(model: nn.Module, recipe: Recipe, zero_init_head: bool = False,
               pretrained: bool = False) -> list[str]:
    """The recipe's starting point for a model trained from scratch (a zero classifier also
    when asked); what was done, in words."""
    from .init import zero_init_head as zero_head
    from .init import zero_init_last

    inits = []
    if zero_init_head or (recipe.zero_init_head and not pretrained):
        zero_head(model)
        inits.append("zero classifier")
    if recipe.zero_init_last and not pretrained:
        zero_init_last(model)
        inits.append("zero residual branches")
    return inits


def _data(dataset: str, root: str | os.PathLike | None, name: str, phi: float | None,
          size: int, chans: int, augment: str, val_fraction: float, seed: int,
          download: bool) -> DataBundle:
    """The datasets, preprocessed as the model expects (its normalisation; checked to fit at
    `size` before anything is loaded)."""
    from ..data.datasets import build_data
    from ..limits import check_model_size
    from ..model_factory import model_blueprint

    blueprint = model_blueprint(name, num_classes=0, phi=phi)
    # an image size above the model's own may ask for more than the machine holds
    check_model_size(blueprint.spec, size, 3, 1)
    return build_data(dataset, root, image_size=size, in_chans=chans, augment=augment,
                      val_fraction=val_fraction, seed=seed, cfg=blueprint.pretrained_cfg,
                      download=download)


def _with_augment(data: DataBundle, augment: str) -> DataBundle:
    from ..data.datasets import with_augment

    return with_augment(data, augment)


def _model(name: str, phi: float | None, pretrained: Any, data: DataBundle, in_chans: int,
           seed: int, drop_rate: float, drop_path_rate: float) -> nn.Module:
    """The model to train, initialised by `seed`; with `pretrained`, its weights (a classifier
    or input conv of another size adapted: `effnet.weights.load_weights`). Its pretrained_cfg
    becomes the data's preprocessing and class names (timm-style: the weights carry them)."""
    from ..model_factory import create_model

    torch.manual_seed(seed)
    model = create_model(name, pretrained=pretrained or None, num_classes=data.num_classes,
                         in_chans=in_chans, phi=phi, drop_rate=drop_rate,
                         drop_path_rate=drop_path_rate)
    model.pretrained_cfg.update(data.data_cfg, num_classes=data.num_classes,
                                label_names=list(data.classes))
    return model


__all__ = ["SMALL_DATASETS", "TrainPlan", "auto_recipe", "check_numbers", "initialise",
           "plan_run"]
