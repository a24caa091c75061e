"""Training recipes: the paper's ImageNet recipe and a short schedule for small data.

When to use which:

* ``auto`` (the default): ``paper`` for runs long enough for it, ``short``
  otherwise; see :func:`choose_recipe` for the rule.
* ``paper``: Section 5.2 and the reference TF code. RMSprop (TF
  semantics), lr 0.016 per 256 images with 5 warm-up epochs, x0.97 every 2.4
  epochs, weight decay 1e-5, label smoothing 0.1, EMA 0.9999, AutoAugment.
  Made for ~350 epochs on ImageNet-sized data: the slow step decay and EMA
  0.9999 (a ~10k-step average) need hundreds of thousands of steps.
* ``short``: AdamW with warm-up and cosine decay to 0, light augmentation,
  small stochastic depth, no EMA, BN momentum 0.1. The warm-up is one epoch
  but at most 10% of the run. From scratch, `effnet train` starts the
  classifier at zero (the loss starts at log(num_classes)) and each residual
  branch at zero (the last BN's gamma, as timm's ``zero_init_last``). For
  small datasets and budgets of 1-50 epochs (Fashion-MNIST, CIFAR,
  fine-tuning), where the paper schedule would
  barely leave warm-up.
* ``short-sgd``: the same schedule with Nesterov SGD (lr 0.1 per 256), the
  usual choice for fine-tuning from pretrained weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import EffnetError


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
    warmup_fraction: float | None = None  # warm-up at most this fraction of the run
    bn_momentum: float | None = None      # None: the model's own (TF 0.99 = PyTorch 0.01)
    zero_init_head: bool = False          # from scratch: classifier starts at zero
    zero_init_last: bool = False          # from scratch: residual branches start at zero

    def warmup_steps(self, total_steps: int, steps_per_epoch: int) -> int:
        """Warm-up length in optimizer steps: warmup_epochs, capped by warmup_fraction."""
        steps = int(round(self.warmup_epochs * steps_per_epoch))
        if self.warmup_fraction is not None:
            steps = min(steps, int(round(self.warmup_fraction * total_steps)))
        return steps

    def lr(self, global_batch: int) -> float:
        """The linear scaling rule of the reference code: lr_per_256 * batch / 256."""
        return self.lr_per_256 * global_batch / 256

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: object) -> Recipe | None:
        """The Recipe `as_dict` wrote (unknown keys ignored); None if `saved` is not one."""
        if not isinstance(saved, dict):
            return None
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in saved.items() if k in names})
        except TypeError:
            return None

    def with_(self, **changes) -> Recipe:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


RECIPES: dict[str, Recipe] = {
    "paper": Recipe("paper", "rmsproptf", lr_per_256=0.016, weight_decay=1e-5, momentum=0.9,
                    warmup_epochs=5, schedule="step", decay_rate=0.97, decay_epochs=2.4,
                    label_smoothing=0.1, ema_decay=0.9999, augment="autoaugment"),
    "short": Recipe("short", "adamw", lr_per_256=4e-3, weight_decay=0.05, momentum=0.9,
                    warmup_epochs=1, schedule="cosine", label_smoothing=0.1, ema_decay=0.0,
                    augment="light", drop_path_rate=0.05, drop_rate=0.1, warmup_fraction=0.1,
                    bn_momentum=0.1, zero_init_head=True, zero_init_last=True),
    "short-sgd": Recipe("short-sgd", "sgd", lr_per_256=0.1, weight_decay=5e-5, momentum=0.9,
                        warmup_epochs=1, schedule="cosine", label_smoothing=0.1, ema_decay=0.0,
                        augment="light", drop_path_rate=0.05, drop_rate=0.1,
                        warmup_fraction=0.1, bn_momentum=0.1),
}
AUTO = "auto"
PAPER_MIN_EPOCHS = 100
PAPER_MIN_STEPS = 100_000


def choose_recipe(total_steps: int, epochs: float) -> tuple[Recipe, str]:
    """The recipe `auto` picks for a run of `total_steps` steps (`epochs` epochs), and why.

    The paper recipe only for runs of at least 100 epochs and 100,000 steps:
    its 5 warm-up epochs are then at most 5% of the run, its x0.97 every 2.4
    epochs has decayed the rate ~40x, and EMA 0.9999 (an average over
    1/(1 - 0.9999) = 10,000 steps) has seen ten of its windows. Shorter runs
    get ``short``.
    """
    paper = RECIPES["paper"]
    if epochs >= PAPER_MIN_EPOCHS and total_steps >= PAPER_MIN_STEPS:
        return paper, (f"a {epochs:g}-epoch, {total_steps}-step run is long enough for the "
                       f"paper recipe (>= {PAPER_MIN_EPOCHS} epochs and >= {PAPER_MIN_STEPS:,} "
                       "steps)")
    return RECIPES["short"], (f"a {epochs:g}-epoch, {total_steps}-step run is too short for the "
                              f"paper recipe (it needs >= {PAPER_MIN_EPOCHS} epochs and >= "
                              f"{PAPER_MIN_STEPS:,} steps)")



def get_recipe(name: str | Recipe) -> Recipe:
    """A named recipe (paper, short, short-sgd), or the Recipe given ('auto': see choose_recipe)."""
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except KeyError:
        raise EffnetError(f"unknown recipe {name!r}: use one of {AUTO}, {', '.join(RECIPES)}"
                          ) from None
