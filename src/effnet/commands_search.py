"""`effnet` subcommands of issue 5 (compound scaling search and study): search, study."""

from __future__ import annotations

import argparse
import math

from .errors import EffnetError
from .spec import BASELINES


def _mac_tolerance(text: str) -> float | None:
    if text.lower() in ("none", "off", "inf"):
        return None
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("give a fraction >= 0 (0.25 = 25%) or 'none'")
    return value


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def cmd_search(args: argparse.Namespace) -> int:
    """The alpha/beta/gamma grid search (paper Sec. 3.3, step 1)."""
    import torch

    _quiet()
    from .search.budget import Budget, load_trainer
    from .search.search import (
        SearchConfig,
        format_table,
        pruning_saving,
        run_search,
        write_results,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    budget = Budget(epochs=args.budget, train_size=args.train_size, val_size=args.val_size,
                    batch_size=args.batch_size, recipe=args.recipe, lr=args.lr,
                    augment=args.augment)
    base = {"lite0": "lite", "efficientnet-b0": "b0"}.get(args.base, args.base)
    if base not in BASELINES:
        raise EffnetError(f"unknown --base {args.base!r}: use one of {', '.join(BASELINES)}")
    cfg = SearchConfig(base=base, dataset=args.dataset, image_size=args.image_size,
                       base_width=args.base_width, base_depth=args.base_depth,
                       grid_step=args.grid_step, target=args.target, tolerance=args.tolerance,
                       max_value=args.max_coefficient, seeds=args.seeds, budget=budget,
                       mac_tolerance=args.mac_tolerance)
    n = len(cfg.points())
    print(f"grid: {n} (alpha, beta, gamma) points with step {cfg.grid_step:g} and "
          f"|alpha*beta^2*gamma^2 - {cfg.target:g}| <= {cfg.tolerance:g}; storage {args.storage}, "
          f"study {args.study_name}")
    result = run_search(cfg, args.storage, args.study_name, trainer=load_trainer(args.trainer),
                        prune=args.prune, progress=not args.no_progress,
                        max_candidates=args.max_candidates, root=args.data,
                        download=args.download)
    print(format_table(result.rows))
    print(f"base: {result.base_cost.params / 1e6:.3f} M params, {result.base_cost.macs / 1e6:.2f}"
          f" M MACs (measured); 'vs target' is the distance of each candidate's measured MACs "
          f"from {cfg.target:g}x the base's.")
    print(f"trained now: {len(result.trained_now)} candidate(s); "
          f"{sum(r['status'] == 'complete' for r in result.rows)} of {n} complete.")
    if result.running_elsewhere:
        print(f"{result.running_elsewhere} candidate(s) are running in other workers.")
    saving = pruning_saving(result.rows)
    if saving:
        total = saving["seconds_spent"] + saving["seconds_saved"]
        print(f"pruning: {saving['pruned']} candidate(s) stopped early, saving about "
              f"{saving['seconds_saved']:.0f} s of {total:.0f} s "
              f"({100 * saving['fraction_saved']:.0f}%, from their measured time per epoch)")
    md, js = write_results(result, cfg, args.output)
    best = result.best
    if best:
        print(f"best: alpha={best['alpha']:g} beta={best['beta']:g} gamma={best['gamma']:g} "
              f"(val top-1 {100 * best['val_top1']:.2f}%); next: effnet scale --phi 1..7 "
              f"--from-search {result.storage}")
    print(f"table saved to {md} and {js}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the `effnet` parser."""
    p = sub.add_parser("search", help="grid search of alpha, beta, gamma (paper Sec. 3.3)",
                       description="Enumerate (alpha, beta, gamma) >= 1 with alpha*beta^2*gamma^2 "
                       "~ 2, train the base scaled by each at phi=1 on a fixed budget, and rank "
                       "them by validation top-1. Resumable; workers share --storage.")
    p.add_argument("--base", default="b0", help=f"baseline: {', '.join(BASELINES)} (default b0)")
    p.add_argument("--base-width", type=float, default=1.0,
                   help="width of the base relative to the baseline (a cheaper proxy: 0.5)")
    p.add_argument("--base-depth", type=float, default=1.0, help="depth of the base, likewise")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist (offline), cifar10, cifar100, imagefolder")
    p.add_argument("--data", default=None, help="dataset folder (imagefolder, or local copies)")
    p.add_argument("--download", action="store_true", help="allow downloading CIFAR")
    p.add_argument("--image-size", type=int, default=32, help="base resolution (default 32)")
    p.add_argument("--budget", type=int, default=1,
                   help="training epochs per candidate and seed over --train-size images")
    p.add_argument("--train-size", type=int, default=None,
                   help="train on a fixed subset of this many images (default: all)")
    p.add_argument("--val-size", type=int, default=None,
                   help="score on a fixed subset of the validation split (default: all)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--recipe", default="short", help="training recipe (default short)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: recipe's)")
    p.add_argument("--augment", default="none", help="none (default), light, ...")
    p.add_argument("--seeds", type=int, default=2, help="training seeds per candidate (>= 2 "
                   "gives a spread)")
    p.add_argument("--grid-step", type=float, default=0.05)
    p.add_argument("--target", type=float, default=2.0, help="alpha*beta^2*gamma^2 target")
    p.add_argument("--tolerance", type=float, default=0.1,
                   help="keep points with |alpha*beta^2*gamma^2 - target| <= this")
    p.add_argument("--max-coefficient", type=float, default=None,
                   help="cap alpha, beta and gamma")
    p.add_argument("--mac-tolerance", type=_mac_tolerance, default=0.25,
                   help="skip candidates whose measured MACs miss target x base by more than "
                   "this fraction (default 0.25; 'none' trains all)")
    p.add_argument("--storage", default="sqlite:///search.db",
                   help="Optuna RDB storage: sqlite:///FILE or postgresql://USER@HOST:PORT/DB")
    p.add_argument("--study-name", default="effnet-search")
    p.add_argument("--prune", action="store_true",
                   help="stop hopeless candidates early (Optuna median pruner)")
    p.add_argument("--max-candidates", type=int, default=None,
                   help="stop this worker after training this many")
    p.add_argument("--output", default=".", help="folder for the ranked table (md, json)")
    p.add_argument("--trainer", default=None,
                   help="custom training function 'package.module:function' (advanced)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_search)
