"""The old fit-based training budget, used only by the old study (search/study.py, report.py).

The grid search trains with :mod:`.trainer` (``Recipe``, ``train_proxy``).
Delete this module together with search/study.py when the study moves to
:mod:`effnet.study`.

The search and the study never train anything themselves: they call a
*trainer*, ``trainer(model, resolution, data, budget, seed, on_epoch) ->
{"val_top1": float, "seconds": float, ...}``. The default,
:func:`train_candidate`, runs :func:`effnet.train.fit`; tests and users can
pass their own (``effnet search --trainer MODULE:FUNCTION``).

A short budget is a *proxy*: it ranks candidates by how fast they learn, not
only by how well they can do (FACTS: EfficientNet learns slowly on small data).
"""

from __future__ import annotations

import importlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ..errors import EffnetError

OnEpoch = Callable[[int, float], None]
"""Called after each evaluated epoch with (epoch, val_top1); may raise to stop the run."""


@dataclass(frozen=True)
class Budget:
    """What one proxy training run may spend: epochs over a fixed training subset.

    `train_size` / `val_size` take a fixed, seeded subset of the training and
    validation splits (None: all of it); the validation split is held out of
    the training set, never the test set.
    """

    epochs: int = 1
    train_size: int | None = None
    val_size: int | None = None
    batch_size: int = 128
    recipe: str = "short"
    lr: float | None = None
    warmup_epochs: float | None = None
    augment: str = "none"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"budget epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        for name in ("train_size", "val_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or None for all), got {v}")

    def as_dict(self) -> dict:
        return asdict(self)


class Trainer(Protocol):
    def __call__(self, model: nn.Module, resolution: int, data: ProxyData, budget: Budget,
                 seed: int, on_epoch: OnEpoch | None = None) -> dict[str, Any]: ...


class ProxyData:
    """Train and validation sets of one dataset at any resolution, built lazily and cached.

    Built with :func:`effnet.data.datasets.build_data` (validation held out of
    the training split). Without augmentation the images are deterministic,
    so each resolution is materialised once as tensors (fast for the many
    small runs of a search); the last `cache` resolutions are kept.
    """

    def __init__(self, dataset: str = "fashion-mnist", root: str | None = None,
                 in_chans: int = 1, budget: Budget | None = None, val_fraction: float = 0.1,
                 seed: int = 0, download: bool = False, cache: int = 2) -> None:
        self.dataset, self.root, self.in_chans = dataset, root, in_chans
        self.budget = budget or Budget()
        self.val_fraction, self.seed, self.download = val_fraction, seed, download
        self._cache: OrderedDict[int, tuple[Dataset, Dataset]] = OrderedDict()
        self._cache_size = max(1, cache)
        self.num_classes: int | None = None
        self.classes: list[str] = []

    def splits(self, resolution: int) -> tuple[Dataset, Dataset]:
        """(train, val) datasets at `resolution`, subset to the budget's sizes."""
        if resolution in self._cache:
            self._cache.move_to_end(resolution)
            return self._cache[resolution]
        from ..data.datasets import build_data

        bundle = build_data(self.dataset, self.root, image_size=resolution,
                            in_chans=self.in_chans, augment=self.budget.augment,
                            val_fraction=self.val_fraction, seed=self.seed,
                            download=self.download)
        if bundle.val is None:
            raise EffnetError("the search needs a validation split: use val_fraction > 0")
        self.num_classes, self.classes = bundle.num_classes, list(bundle.classes)
        train = _subset(bundle.train, self.budget.train_size, self.seed)
        val = _subset(bundle.val, self.budget.val_size, self.seed + 1)
        val = _materialise(val)
        if self.budget.augment == "none":
            train = _materialise(train)
        self._cache[resolution] = (train, val)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return train, val

    def images(self, resolution: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` validation images and labels at `resolution` (for activation maps)."""
        _, val = self.splits(resolution)
        xs, ys = zip(*(val[i] for i in range(min(n, len(val)))), strict=True)  # type: ignore
        return torch.stack(xs), torch.tensor(ys)


def _subset(ds: Dataset, size: int | None, seed: int) -> Dataset:
    n = len(ds)  # type: ignore[arg-type]
    if size is None or size >= n:
        return ds
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size]
    return Subset(ds, sorted(idx.tolist()))


def _materialise(ds: Dataset) -> TensorDataset:
    xs, ys = [], []
    for x, y in DataLoader(ds, batch_size=512, shuffle=False, num_workers=0):
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def train_candidate(model: nn.Module, resolution: int, data: ProxyData, budget: Budget,
                    seed: int, on_epoch: OnEpoch | None = None) -> dict[str, Any]:
    """Train `model` with :func:`effnet.train.fit` on `budget`; return its validation top-1.

    Returns ``{"val_top1", "seconds", "curve"}``: the last epoch's validation
    top-1 (a fraction), the training wall time and the per-epoch validation
    curve. `on_epoch(epoch, val_top1)` runs after every epoch (the pruner's hook).
    """
    from ..train import fit

    train, val = data.splits(resolution)

    def epoch_done(row: dict) -> None:
        if on_epoch is not None and row.get("val_top1") is not None:
            on_epoch(int(row["epoch"]), float(row["val_top1"]))

    t0 = time.perf_counter()
    result = fit(model, train, val, epochs=budget.epochs, batch_size=budget.batch_size,
                 recipe=budget.recipe, lr=budget.lr, warmup_epochs=budget.warmup_epochs,
                 seed=seed, output=None, progress=False, num_workers=0,
                 log=lambda s: None, on_epoch=epoch_done,
                 image_size=resolution, eval_every=1 if on_epoch else budget.epochs)
    seconds = time.perf_counter() - t0
    top1 = result.val_top1
    if top1 is None or not math.isfinite(top1):
        raise EffnetError(f"training gave no validation accuracy ({top1}); check the data")
    curve = [float(r["val_top1"]) for r in result.history if r.get("val_top1") is not None]
    return {"val_top1": float(top1), "seconds": seconds, "curve": curve}


def load_trainer(ref: str | None) -> Trainer:
    """The default trainer, or a user's one named 'package.module:function'."""
    if not ref:
        return train_candidate
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise EffnetError(f"bad --trainer {ref!r}: write it as package.module:function")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise EffnetError(f"cannot load trainer {ref!r} ({err}): check the module is importable "
                          "(on PYTHONPATH) and defines the function") from None
    if not callable(fn):
        raise EffnetError(f"trainer {ref!r} is not callable")
    return fn
