"""`effnet train`: train or fine-tune a model with the paper's recipe (or a short one).

Works the same under torchrun: ``torchrun --nproc-per-node 2 -m effnet train ...``.
"""

from __future__ import annotations

import argparse
import os

from ..data.registry import DATASET_FACTS
from ..errors import EffnetError
from ..limits import check_resolution, check_workers

RECIPE_HELP = ("auto (default): paper for runs of >= 100 epochs and >= 100,000 steps, else "
               "short; paper: Section 5.2 (RMSprop TF-style, lr 0.016/256 images, 5 warm-up "
               "epochs, x0.97 every 2.4 epochs, EMA 0.9999, AutoAugment), for long ImageNet-scale "
               "runs; "
               "short: AdamW + cosine (warm-up <= 10%% of the run), light augmentation, zero-init "
               "classifier and residual branches, for small data and 1-50 epochs; "
               "short-sgd: the same with Nesterov SGD, e.g. for fine-tuning")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the `effnet` parser."""
    p = sub.add_parser("train", help="train or fine-tune a model (resumable, torchrun-ready)",
                       description="Train a model on a dataset; writes a resumable run folder.")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="b0", help="b0..b8, l2, lite0..lite4 (default b0)")
    g.add_argument("--phi", type=float, default=None, help="compound-scale the model's baseline")
    g.add_argument("--pretrained", default=None,
                   help="start from weights: 'packaged', a .safetensors path, ... (fine-tuning)")
    g.add_argument("--dataset", required=True,
                   help="fashion-mnist | cifar10 | cifar100 | imagefolder")
    g.add_argument("--data", default=None,
                   help="data folder (imagefolder: class folders, or train/ and val/)")
    g.add_argument("--no-download", action="store_true", help="never download datasets")
    g.add_argument("--image-size", type=int, default=None,
                   help="training resolution (default: 32 for fashion-mnist/cifar, else the "
                        "model's)")
    g.add_argument("--in-chans", type=int, default=None,
                   help="model input channels (default: 1 for fashion-mnist from scratch, else 3;"
                        " greyscale images are repeated for 3-channel models)")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="training images held out for model selection (default 0.1)")
    g.add_argument("--augment", default=None,
                   help="autoaugment | randaugment | crop | light | none (default: recipe's)")
    g.add_argument("--drop-rate", type=float, default=None, help="dropout before the classifier")
    g.add_argument("--drop-path-rate", type=float, default=None, help="stochastic depth rate")
    g.add_argument("--zero-init-head", action="store_true",
                   help="start the classifier at zero: the TF init draws it from "
                        "+-1/sqrt(num_classes), 10x too large for 10 classes, and a from-scratch "
                        "run spends its first few hundred steps shrinking it")
    g = p.add_argument_group("recipe")
    g.add_argument("--recipe", default="auto", help=RECIPE_HELP)
    g.add_argument("--epochs", type=int, default=10, help="passes over the training set "
                   "(default 10)")
    g.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    g.add_argument("--batch-size", type=int, default=128, help="global batch size")
    g.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: the recipe's per-256 rate x batch/256)")
    g.add_argument("--optimizer", default=None, help="rmsproptf | adamw | sgd")
    g.add_argument("--weight-decay", type=float, default=None,
                   help="default: the recipe's (paper 1e-5, short 0.05)")
    g.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear warm-up length (default: the recipe's)")
    g.add_argument("--schedule", default=None, help="step | cosine | constant")
    g.add_argument("--label-smoothing", type=float, default=None,
                   help="default: the recipe's (0.1)")
    g.add_argument("--ema-decay", type=float, default=None, help="0 turns the EMA off")
    g.add_argument("--grad-clip", type=float, default=None,
                   help="clip the gradient norm to this (default: no clipping)")
    g.add_argument("--bn-momentum", type=float, default=None,
                   help="BatchNorm running-average momentum, PyTorch convention (default 0.01, "
                        "the paper's TF 0.99); 0.1 for runs of a few hundred steps")
    g.add_argument("--seed", type=int, default=0,
                   help="fixes the init, sample order, augmentation and dropout (default 0)")
    g = p.add_argument_group("run")
    g.add_argument("--output", default=None, help="run folder (default runs/MODEL-DATASET)")
    g.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    g.add_argument("--force", action="store_true",
                   help="start a new run in an OUTPUT that holds one (deletes the old run)")
    g.add_argument("--checkpoint-every", type=int, default=0,
                   help="also checkpoint every N steps (default: each epoch only)")
    g.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    g.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"],
                   help="mixed precision (auto: bf16 on CUDA, off on CPU)")
    g.add_argument("--no-channels-last", action="store_true",
                   help="keep NCHW memory layout (channels_last is faster on CPU)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--memory-efficient", action="store_true",
                   help="recompute BN, activations and SE gating in backward instead of storing "
                        "them (same results, ~0.4x activation memory; see effnet.nn.efficient)")
    g.add_argument("--grad-checkpointing", action="store_true",
                   help="activation checkpointing per stage (less memory, one more forward)")
    g.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    g.add_argument("--tensorboard", action="store_true", help="log to OUTPUT/tensorboard")
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (slower on CUDA)")
    p.set_defaults(func=cmd_train)


# Input channels of the small datasets (effnet.data.registry, the one table of dataset facts).
SMALL_DATASETS = {name: facts.in_chans for name, facts in DATASET_FACTS.items()}


def _initialise(model, args: argparse.Namespace, recipe) -> list[str]:
    """The recipe's starting point for a model trained from scratch; what was done, in words."""
    from ..train.init import zero_init_head, zero_init_last

    inits = []
    if args.zero_init_head or (recipe.zero_init_head and not args.pretrained):
        zero_init_head(model)
        inits.append("zero classifier")
    if recipe.zero_init_last and not args.pretrained:
        zero_init_last(model)
        inits.append("zero residual branches")
    return inits


def cmd_train(args: argparse.Namespace) -> int:
    """Build model and data, call effnet.train.fit, print where the results are."""
    import torch

    from ..data.datasets import DATASETS, build_data
    from ..model_factory import create_model
    from ..train import TrainConfig, fit, get_recipe
    from ..train.recipes import AUTO
    from ..zoo import MODELS, canonical_name

    if args.dataset not in DATASETS:
        raise EffnetError(f"unknown dataset {args.dataset!r}: use one of {', '.join(DATASETS)}")
    try:
        name = canonical_name(args.model)
    except (KeyError, ValueError):
        raise EffnetError(f"unknown model {args.model!r}: use one of {', '.join(MODELS)}") from None
    _check_numbers(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = None if args.recipe == AUTO else get_recipe(args.recipe)
    small = args.dataset in SMALL_DATASETS
    image_size = args.image_size if args.image_size is not None else (
        32 if small else MODELS[name].resolution)
    in_chans = args.in_chans if args.in_chans is not None else (
        SMALL_DATASETS.get(args.dataset, 3) if not args.pretrained else 3)
    augment = args.augment or (recipe.augment if recipe else "light")
    output = args.output or os.path.join("runs", f"{name}-{args.dataset}")

    torch.manual_seed(args.seed)  # the model's init
    probe = create_model(name, num_classes=0, phi=args.phi)
    check_resolution(probe, image_size)  # --image-size may ask for more than the model's own

    def load_data(augment: str):
        return build_data(args.dataset, args.data, image_size=image_size, in_chans=in_chans,
                          augment=augment, val_fraction=args.val_fraction, seed=args.seed,
                          cfg=probe.pretrained_cfg, download=not args.no_download)

    data = load_data(augment)
    why = ""
    if recipe is None:
        recipe, why = _auto_recipe(args, len(data.train), output)
        if args.augment is None and recipe.augment != augment:
            augment = recipe.augment
            data = load_data(augment)
    kwargs = dict(num_classes=data.num_classes, in_chans=in_chans, phi=args.phi,
                  drop_rate=args.drop_rate if args.drop_rate is not None else recipe.drop_rate,
                  drop_path_rate=(args.drop_path_rate if args.drop_path_rate is not None
                                  else recipe.drop_path_rate))
    torch.manual_seed(args.seed)
    if args.pretrained:
        model = _pretrained_model(name, args.pretrained, kwargs)
    else:
        model = create_model(name, **kwargs)
    # timm-style: the weights carry the preprocessing and class names they were trained with,
    # so `effnet predict/eval --weights OUTPUT/best` need no flags
    model.pretrained_cfg.update(data.data_cfg, num_classes=data.num_classes,
                                label_names=list(data.classes))
    inits = _initialise(model, args, recipe)
    if args.memory_efficient:
        model.set_memory_efficient(True)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)

    cfg = TrainConfig(
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        recipe=recipe, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, schedule=args.schedule,
        label_smoothing=args.label_smoothing, ema_decay=args.ema_decay,
        grad_clip=args.grad_clip, bn_momentum=args.bn_momentum, seed=args.seed,
        device=args.device, amp=args.amp,
        channels_last=not args.no_channels_last, compile=args.compile,
        num_workers=args.workers, output=output, resume=args.resume, force=args.force,
        checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
        tensorboard=args.tensorboard, progress=not args.no_progress,
        deterministic=args.deterministic, image_size=image_size,
        model_name=model.model_name)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        if why:
            print(f"effnet train: recipe auto -> {recipe.name}: {why}", flush=True)
        print(f"effnet train: {model.model_name} on {args.dataset} "
              f"({len(data.train)} train, {len(data.val) if data.val else 0} val, "
              f"{len(data.test) if data.test else 0} test images, {data.num_classes} classes) "
              f"at {image_size}px, {in_chans} channel(s), recipe {recipe.name}, "
              f"augment {augment}{''.join(', ' + i for i in inits)} -> {output}", flush=True)
    try:
        result = fit(model, data.train, data.val, data.test, cfg)
    finally:
        from ..train.distributed import DistInfo, cleanup

        cleanup(DistInfo(world_size=int(os.environ.get("WORLD_SIZE", "1"))))
    if is_main:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f}%"

        best_test = next((r.get("test_top1") for r in result.history
                          if r["epoch"] == result.best_epoch), None)
        print(f"done in {result.wall_s / 60:.1f} min: val top-1 {pct(result.val_top1)} "
              f"(best {pct(result.best_top1)} at epoch {result.best_epoch}), "
              f"test top-1 {pct(result.test_top1)} (at best epoch {pct(best_test)}); "
              f"{output}/summary.json, {output}/best/ (effnet predict --weights {output})")
    return 0


def _check_numbers(args: argparse.Namespace) -> None:
    """Out-of-range numbers are errors naming the allowed range, not silently replaced."""
    checks = [("--image-size", args.image_size, 32, "at least 32 px (the network downsamples "
               "32x)"), ("--epochs", args.epochs, 0, ">= 0 (0 with --max-steps)"),
              ("--max-steps", args.max_steps, 1, ">= 1"),
              ("--batch-size", args.batch_size, 1, ">= 1"),
              ("--eval-every", args.eval_every, 1, ">= 1 (evaluate every N epochs)"),
              ("--checkpoint-every", args.checkpoint_every, 0, ">= 0 (0: per epoch only)"),
              ("--threads", args.threads, 1, ">= 1"),
              ("--lr", args.lr, 0, ">= 0"), ("--in-chans", args.in_chans, 1, "1 or 3")]
    for flag, value, low, allowed in checks:
        if value is not None and not value >= low:  # also refuses NaN
            raise EffnetError(f"{flag} {value} is out of range: use {allowed}")
    check_workers(args.workers)


def _auto_recipe(args: argparse.Namespace, n_train: int, output: str):
    """--recipe auto: a resumed run's own recipe, else choose_recipe by the run's length."""
    from ..train.recipes import choose_recipe
    from ..train.rundir import run_recipe

    if args.resume:
        saved = run_recipe(output)
        if saved is not None:
            return saved, "the recipe of the run being resumed"
    steps_per_epoch = max(1, n_train // max(1, args.batch_size))
    total = args.epochs * steps_per_epoch
    if args.max_steps is not None:
        total = min(total, args.max_steps) if args.epochs else args.max_steps
    return choose_recipe(total, total / steps_per_epoch)


def _pretrained_model(name: str, pretrained: str, kwargs: dict):
    """create_model with weights; a classifier or input conv of another size is adapted (timm's
    rule, with a notice): see `effnet.weights.load_weights`."""
    from ..model_factory import create_model

    return create_model(name, pretrained=pretrained, **kwargs)
