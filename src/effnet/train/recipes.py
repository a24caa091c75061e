"""Training recipes: the paper's ImageNet recipe and a short schedule for small data.

When to use which:

* ``paper`` (default): Section 5.2 and the reference TF code. RMSprop (TF
  semantics), lr 0.016 per 256 images with 5 warm-up epochs, x0.97 every 2.4
  epochs, weight decay 1e-5, label smoothing 0.1, EMA 0.9999, AutoAugment.
  Made for ~350 epochs on ImageNet-sized data: the slow step decay and EMA
  0.9999 (a ~10k-step average) need hundreds of thousands of steps.
* ``short``: AdamW with warm-up and cosine decay to 0, light augmentation,
  small stochastic depth, EMA 0.999 (or none). For small datasets and budgets
  of 5-50 epochs (Fashion-MNIST, CIFAR, fine-tuning, the grid search's proxy
  runs), where the paper schedule would barely leave warm-up.
* ``short-sgd``: the same schedule with Nesterov SGD (lr 0.1 per 256), the
  usual choice for fine-tuning from pretrained weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Recipe:
    """Optimizer, schedule and regularisation of a training run."""

    name: str
    optimizer: str            # rmsproptf | adamw | sgd
    lr_per_256: float         # learning rate = lr_per_256 * global_batch / 256
    weight_decay: float
    momentum: float
    warmup_epochs: float
    schedule: str             # step | cosine | constant
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    label_smoothing: float = 0.1
    ema_decay: float = 0.0    # 0 disables the EMA
    augment: str = "autoaugment"
    drop_path_rate: float | None = None   # None: the model's own (0.2)
    drop_rate: float | None = None        # None: the model's own (B0 0.2 ... B7 0.5)

    def lr(self, global_batch: int) -> float:
        """The linear scaling rule of the reference code: lr_per_256 * batch / 256."""
        return self.lr_per_256 * global_batch / 256

    def as_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> Recipe:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


RECIPES: dict[str, Recipe] = {
    "paper": Recipe("paper", "rmsproptf", lr_per_256=0.016, weight_decay=1e-5, momentum=0.9,
                    warmup_epochs=5, schedule="step", decay_rate=0.97, decay_epochs=2.4,
                    label_smoothing=0.1, ema_decay=0.9999, augment="autoaugment"),
    "short": Recipe("short", "adamw", lr_per_256=4e-3, weight_decay=0.05, momentum=0.9,
                    warmup_epochs=1, schedule="cosine", label_smoothing=0.1, ema_decay=0.0,
                    augment="light", drop_path_rate=0.05, drop_rate=0.1),
    "short-sgd": Recipe("short-sgd", "sgd", lr_per_256=0.1, weight_decay=5e-5, momentum=0.9,
                        warmup_epochs=1, schedule="cosine", label_smoothing=0.1, ema_decay=0.0,
                        augment="light", drop_path_rate=0.05, drop_rate=0.1),
}


def get_recipe(name: str | Recipe) -> Recipe:
    """A named recipe (paper, short, short-sgd), or the Recipe given."""
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)}") from None
