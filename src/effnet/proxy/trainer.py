"""The proxy trainer: many small models trained to convergence on in-memory data, fast.

The scaling study and the grid search rank models by accuracy after training.
For that ranking to say something about the *models* (paper Fig. 8, Table 3),
every model must be trained until it has learned, with one recipe tuned once
on the base and applied unchanged to every scaled model. This trainer does
the least work per image that allows:

* the data is decoded once, downsampled with antialiasing once per resolution
  (:class:`ProxyData`) and held as one float tensor; no DataLoader, no files;
* augmentation (random horizontal flips) is a batched tensor operation;
* AdamW with a one-cycle schedule (warm-up, cosine decay to zero), label
  smoothing and channels_last; evaluation once per epoch on the held-out
  validation split, without checkpoints or file I/O;
* what is evaluated is an exponential moving average of the weights (and BN
  statistics), as in the paper's recipe (decay 0.9999 there), kept by
  :class:`torch.optim.swa_utils.AveragedModel`. Its time constant is a fixed
  fraction of the run (`ProxyRecipe.ema_fraction`), so short and long runs average
  alike. Without it the last quarter of a cosine schedule always gains a point
  from the learning rate falling to zero, and a curve never looks flat however
  long the model trains (measured here on the B0 base, 3 epochs: +1.1 point
  over the last quarter for the raw weights, +0.25 for the average, and the
  same final accuracy);
* every residual branch starts at zero (the last BN's scale, Goyal et al. 2017;
  timm's ``zero_init_last``) and the classifier starts at zero, so the loss
  starts at log(num_classes) and deep models start as shallow ones. Without
  this, depth-scaled proxies train far slower from TF's initialisation and the
  study would measure the initialisation, not depth scaling.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..errors import EffnetError
from ..train.init import zero_init_head, zero_init_last
from .recipe import ProxyRecipe

OnEpoch = Callable[[int, float], None]
"""Called after each evaluated epoch with (epoch, val_top1); may raise to stop the run."""


# ---------------------------------------------------------------- data
def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 or float images (N, C, H, W) resized to `size` px, antialiased, as float in [0, 1].

    Antialiasing (a box-like prefilter when shrinking) keeps what a lower
    resolution can hold and drops what it cannot, as a camera of that
    resolution would: the base of the study sees *less detail*, and scaling
    resolution up towards the native size gives it back.
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.contiguous()
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0.0, 1.0)


class ProxyData:
    """A dataset's training and held-out validation images in memory, at any resolution.

    The native images are read once; each resolution is made once by
    :func:`downsample` and normalised with the training images' own mean and
    std, and the last `cache` resolutions are kept. `native` is the datasets'
    own image size: resolutions above it add pixels, not detail. An image
    folder (``dataset="imagefolder"``, `root` its folder) is decoded once at
    `folder_size` px (:func:`folder_arrays`), which is then its native size.
    """

    def __init__(self, dataset: str = "fashion-mnist", root: str | None = None,
                 recipe: ProxyRecipe | None = None, seed: int = 0, download: bool = False,
                 cache: int = 2, folder_size: int = 64) -> None:
        self.dataset, self.root, self.seed, self.download = dataset, root, seed, download
        self.folder_size = folder_size
        self.recipe = recipe or ProxyRecipe()
        self._cache: OrderedDict[int, tuple] = OrderedDict()
        self._cache_size = max(1, cache)
        self._raw: tuple[torch.Tensor, ...] | None = None
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None
        self._norm: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # (mean, std) per size
        self.classes: list[str] = []

    def _load(self) -> tuple[torch.Tensor, ...]:
        if self._raw is None:
            from ..data.datasets import native_arrays, split_indices

            if self.dataset == "imagefolder":
                x, y, self.classes = folder_arrays(self.root, self.folder_size)
            else:
                x, y, self.classes = native_arrays(self.dataset, self.root, self.download)
            tr, va = split_indices(len(y), self.recipe.val_fraction, self.seed)
            if not va:
                raise EffnetError("the proxy trainer needs a validation split: val_fraction > 0")
            tr = _take(tr, self.recipe.train_size, self.seed)
            va = _take(va, self.recipe.val_size, self.seed + 1)
            self._raw = (x[tr], y[tr], x[va], y[va])
        return self._raw

    @property
    def num_classes(self) -> int:
        self._load()
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self._load()[0].shape[1])

    @property
    def native(self) -> int:
        """The images' own size in pixels (their shorter side)."""
        return int(min(self._load()[0].shape[-2:]))

    def test_split(self, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(test_x, test_y) at `resolution`, normalised with the training images' statistics."""
        from ..data.datasets import native_arrays

        if self.dataset == "imagefolder":
            raise EffnetError("an image folder has no test split: set the recipe's test=False")
        if self._test is None:
            x, y, _ = native_arrays(self.dataset, self.root, self.download, split="test")
            self._test = (x, y)
        self.splits(resolution)  # the training images' statistics at this resolution
        mean, std = self._norm[resolution]
        return (downsample(self._test[0], resolution) - mean) / std, self._test[1]

    def splits(self, resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                               torch.Tensor]:
        """(train_x, train_y, val_x, val_y) at `resolution`, normalised float32."""
        if resolution < 8:
            raise EffnetError(f"resolution {resolution} is too small: use >= 8 pixels")
        if resolution in self._cache:
            self._cache.move_to_end(resolution)
            return self._cache[resolution]
        xtr, ytr, xva, yva = self._load()
        xtr, xva = downsample(xtr, resolution), downsample(xva, resolution)
        dims = (0, 2, 3)
        mean = xtr.mean(dims, keepdim=True)
        std = xtr.std(dims, keepdim=True).clamp_min(1e-3)
        self._norm[resolution] = (mean, std)
        out = ((xtr - mean) / std, ytr, (xva - mean) / std, yva)
        self._cache[resolution] = out
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def images(self, resolution: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` validation images and labels at `resolution` (for activation maps)."""
        _, _, xva, yva = self.splits(resolution)
        return xva[:n], yva[:n]


def folder_arrays(root: str | Path | None, size: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                list[str]]:
    """An image folder decoded once: uint8 (N, C, size, size), labels and class names.

    `root` holds one sub-folder per class (or a ``train/`` folder of them; the
    proxy holds its validation split out of it). Each image is centre-cropped
    to a square and resized with antialiasing; the channels come from the
    data: 1 when every image is greyscale, else 3.
    """
    import numpy as np
    from PIL import Image, ImageOps

    from ..data.datasets import image_folder
    from ..data.images import load_image

    if root is None:
        raise EffnetError("--dataset imagefolder needs --data DIR (one sub-folder per class)")
    root = Path(root)
    if (root / "train").is_dir():
        root = root / "train"
    folder = image_folder(root)
    arrays = [np.asarray(ImageOps.fit(load_image(path, keep_grey=True), (size, size),  # type: ignore[arg-type]
                                      method=Image.Resampling.BICUBIC))
              for path, _ in folder.samples]
    if all(a.ndim == 2 for a in arrays):
        x = torch.from_numpy(np.stack(arrays)).unsqueeze(1)
    else:
        rgb = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
        x = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([label for _, label in folder.samples], dtype=torch.int64)
    return x, y, list(folder.classes)


def _take(idx: list[int], size: int | None, seed: int) -> list[int]:
    if size is None or size >= len(idx):
        return idx
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(idx), generator=g)[:size]
    return sorted(idx[i] for i in pick.tolist())


# ---------------------------------------------------------------- training
@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of `model` (in eval mode) on in-memory images."""
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        xb = x[i: i + batch_size].contiguous(memory_format=torch.channels_last)
        correct += int((model(xb).argmax(1) == y[i: i + batch_size]).sum())
    return correct / max(1, len(y))


def train_proxy(model: nn.Module, resolution: int, data: ProxyData, recipe: ProxyRecipe,
                seed: int, on_epoch: OnEpoch | None = None) -> dict[str, Any]:
    """Train `model` on `data` at `resolution` with `recipe`; return its validation curve.

    Returns ``{"val_top1", "curve", "seconds", "images_per_s"}``: the final
    validation top-1 (a fraction), top-1 at each of the recipe's evaluation
    points, the wall time and the throughput (evaluation included). With
    `recipe.ema_fraction` the averaged weights are evaluated and are copied
    into `model` at the end.
    `on_epoch(k, val_top1)` runs after evaluation point k (1-based).
    """
    device = next(model.parameters()).device  # the caller picks it (a GPU for --preset full)
    xtr, ytr, xva, yva = (t.to(device) for t in data.splits(resolution))
    g = torch.Generator().manual_seed(seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    zero_init_last(model)
    zero_init_head(model)
    model = model.to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    n, bs = len(ytr), min(recipe.batch_size, len(ytr))
    steps_per_epoch = n // bs
    total = steps_per_epoch * recipe.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=total, pct_start=max(recipe.warmup_fraction, 1e-3),
        anneal_strategy="cos", div_factor=25.0, final_div_factor=1e3, cycle_momentum=False)
    ema = _ema(model, recipe.ema_fraction, total)
    evaluated = model if ema is None else ema.module
    n_evals = recipe.evals or recipe.epochs
    eval_at = {round(total * (k + 1) / n_evals) for k in range(n_evals)}
    curve: list[float] = []
    t0 = time.perf_counter()
    step = 0
    for _ in range(recipe.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(steps_per_epoch):
            model.train()
            idx = perm[i * bs: (i + 1) * bs].to(device)
            xb, yb = xtr[idx], ytr[idx]
            if recipe.flip:
                flip = (torch.rand(bs, generator=g) < 0.5).to(device)
                xb[flip] = xb[flip].flip(-1)
            xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = F.cross_entropy(model(xb), yb, label_smoothing=recipe.label_smoothing)
            if not torch.isfinite(loss):
                raise EffnetError(f"training diverged (loss {float(loss)}) at step {step + 1}: "
                                  "lower the recipe's lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            if step in eval_at:
                with autocast:
                    curve.append(accuracy(evaluated, xva, yva))
                if on_epoch is not None:
                    on_epoch(len(curve), curve[-1])
    if ema is not None:  # the model the caller keeps is the one that was evaluated
        model.load_state_dict(ema.module.state_dict())
    seconds = time.perf_counter() - t0
    out = {"val_top1": curve[-1], "curve": curve, "seconds": seconds,
           "images_per_s": total * bs / seconds}
    if recipe.test:
        xte, yte = data.test_split(resolution)
        with autocast:
            out["test_top1"] = accuracy(model, xte.to(device), yte.to(device))
    return out


def _ema(model: nn.Module, fraction: float | None, total_steps: int) -> AveragedModel | None:
    """An average of `model`'s weights and buffers with a time constant of `fraction` of the run."""
    if fraction is None:
        return None
    decay = 1.0 - 1.0 / max(1.0, fraction * total_steps)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class Trainer(Protocol):
    """What trains one model: :func:`train_proxy`'s signature (``--trainer MODULE:FUNCTION``)."""

    def __call__(self, model: nn.Module, resolution: int, data: ProxyData, recipe: ProxyRecipe,
                 seed: int, on_epoch: OnEpoch | None = None) -> dict[str, Any]: ...


def load_trainer(ref: str | None) -> Trainer:
    """:func:`train_proxy`, or a user's trainer named 'package.module:function'.

    The function must take ``(model, resolution, data, recipe, seed, on_epoch)``
    as :func:`train_proxy` does and return a dict with "val_top1"; a function
    that cannot be called so is refused here, before any training.
    """
    if not ref:
        return train_proxy
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise EffnetError(f"bad --trainer {ref!r}: write it as package.module:function")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise EffnetError(f"cannot load trainer {ref!r} ({err}): check the module is importable "
                          "(on PYTHONPATH) and defines the function") from None
    try:
        inspect.signature(fn).bind(None, 0, None, None, 0, None)
    except TypeError:
        raise EffnetError(f"trainer {ref!r} cannot be called as (model, resolution, data, "
                          "recipe, seed, on_epoch): give it the signature of "
                          "effnet.proxy.trainer.train_proxy") from None
    except ValueError:  # no signature to inspect (some builtins): let the call decide
        pass
    return fn
