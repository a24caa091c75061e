"""Training with the paper's recipe (Section 5.2): `fit`, RMSpropTF, schedules, EMA, checkpoints.

Python use (the grid search, the study and the baseline search train their many small models
with the proxy trainer instead, :func:`effnet.proxy.trainer.train_proxy`)::

    from effnet import create_model
    from effnet.train import fit
    model = create_model("b0", num_classes=10, in_chans=1)
    result = fit(model, train_ds, val_ds, epochs=3, batch_size=128, recipe="short",
                 output=None, progress=False)     # output=None: nothing written
    result.val_top1, result.best_top1              # fractions in [0, 1]

`plan_run("cifar10", "b0", epochs=3)` builds model and data with the defaults of
`effnet train` (resolution, channels, recipe, augmentation, initialisation); `plan.fit()`
trains them. `train_ds` / `val_ds` are map-style datasets of (image tensor, label), or a
DataLoader for training. The budget is `epochs` and/or `max_steps`; `seed`
fixes the model-independent randomness (sample order, augmentation, dropout).
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .ema import create_ema, tf_ema_multi_avg_fn
from .loop import (
    FitResult,
    TrainConfig,
    TrainingDiverged,
    evaluate,
    fit,
    save_weights,
    set_bn_momentum,
)
from .optim import RMSpropTF, create_optimizer, param_groups
from .plan import TrainPlan, plan_run
from .recipes import RECIPES, Recipe, get_recipe
from .schedule import LRMultiplier, create_scheduler

__all__ = [
    "RECIPES",
    "FitResult",
    "LRMultiplier",
    "RMSpropTF",
    "Recipe",
    "TrainConfig",
    "TrainPlan",
    "TrainingDiverged",
    "create_ema",
    "create_optimizer",
    "create_scheduler",
    "evaluate",
    "fit",
    "get_recipe",
    "load_checkpoint",
    "param_groups",
    "plan_run",
    "save_checkpoint",
    "save_weights",
    "set_bn_momentum",
    "tf_ema_multi_avg_fn",
]
