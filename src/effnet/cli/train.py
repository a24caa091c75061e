"""`effnet train`: train or fine-tune a model with the paper's recipe (or a short one).

Works the same under torchrun: ``torchrun --nproc-per-node 2 -m effnet train ...``.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ..errors import EffnetError

if TYPE_CHECKING:
    from ..train import FitResult, TrainPlan

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


def cmd_train(args: argparse.Namespace) -> int:
    """Parse the flags into `effnet.train.plan_run` (which decides the defaults), run
    `effnet.train.fit`, print where the results are."""
    import torch

    from ..train import TrainConfig, plan_run

    if args.threads is not None and not args.threads >= 1:
        raise EffnetError(f"--threads {args.threads} is out of range: use >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        recipe=args.recipe, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, schedule=args.schedule,
        label_smoothing=args.label_smoothing, ema_decay=args.ema_decay,
        grad_clip=args.grad_clip, bn_momentum=args.bn_momentum, seed=args.seed,
        device=args.device, amp=args.amp,
        channels_last=not args.no_channels_last, compile=args.compile,
        num_workers=args.workers, output=args.output, resume=args.resume, force=args.force,
        checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
        tensorboard=args.tensorboard, progress=not args.no_progress,
        deterministic=args.deterministic)
    plan = plan_run(args.dataset, args.model, root=args.data, phi=args.phi,
                    pretrained=args.pretrained, image_size=args.image_size,
                    in_chans=args.in_chans, val_fraction=args.val_fraction, augment=args.augment,
                    drop_rate=args.drop_rate, drop_path_rate=args.drop_path_rate,
                    zero_init_head=args.zero_init_head, memory_efficient=args.memory_efficient,
                    grad_checkpointing=args.grad_checkpointing, download=not args.no_download,
                    config=cfg)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        _announce(plan, args.dataset)
    try:
        result = plan.fit()
    finally:
        from ..train.distributed import DistInfo, cleanup

        cleanup(DistInfo(world_size=int(os.environ.get("WORLD_SIZE", "1"))))
    if is_main:
        _report(result, plan.config.output)
    return 0


def _announce(plan: TrainPlan, dataset: str) -> None:
    """What is about to be trained, on what, how, and where it goes."""
    data, output = plan.data, plan.config.output
    if plan.why:
        print(f"effnet train: recipe auto -> {plan.recipe.name}: {plan.why}", flush=True)
    print(f"effnet train: {plan.model.model_name} on {dataset} "
          f"({len(data.train)} train, {len(data.val) if data.val else 0} val, "
          f"{len(data.test) if data.test else 0} test images, {data.num_classes} classes) "
          f"at {plan.image_size}px, {plan.in_chans} channel(s), recipe {plan.recipe.name}, "
          f"augment {plan.augment}{''.join(', ' + i for i in plan.inits)} -> {output}",
          flush=True)


def _report(result: FitResult, output: object) -> None:
    """Accuracies and the run's files."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    best_test = next((r.get("test_top1") for r in result.history
                      if r["epoch"] == result.best_epoch), None)
    print(f"done in {result.wall_s / 60:.1f} min: val top-1 {pct(result.val_top1)} "
          f"(best {pct(result.best_top1)} at epoch {result.best_epoch}), "
          f"test top-1 {pct(result.test_top1)} (at best epoch {pct(best_test)}); "
          f"{output}/summary.json, {output}/best/ (effnet predict --weights {output})")
