"""`effnet search`: the alpha/beta/gamma grid search (paper Sec. 3.3, step 1)."""

from __future__ import annotations

import argparse
import math

from ..errors import EffnetError
from ..proxy.workers import optuna_warnings_only
from ..spec import BASELINES, baseline_name, is_spec_path, load_spec
from .options import add_heartbeat_options, add_verbose, check_heartbeat_options


def _mac_tolerance(text: str) -> float | None:
    if text.lower() in ("none", "off", "inf"):
        return None
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("give a fraction >= 0 (0.25 = 25%) or 'none'")
    return value


def _recipe(args: argparse.Namespace):
    """The proxy recipe from the flags; --recipe FIELD=VALUE,... sets any other field."""
    from dataclasses import fields

    from ..proxy.recipe import ProxyRecipe

    kinds = {f.name: f.type for f in fields(ProxyRecipe)}
    values: dict = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                    "train_size": args.train_size, "val_size": args.val_size,
                    "flip": args.augment == "flip"}
    for item in filter(None, (args.recipe or "").split(",")):
        name, _, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if name not in kinds or not text:
            raise EffnetError(f"bad --recipe item {item!r}: write FIELD=VALUE with FIELD one of "
                              f"{', '.join(kinds)}")
        kind = str(kinds[name])
        try:
            if "bool" in kind:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                values[name] = text.lower() in ("true", "1", "yes")
            elif text.lower() == "none" and "None" in kind:
                values[name] = None
            else:
                values[name] = (int if kind.startswith("int") else float)(text)
        except ValueError:
            raise EffnetError(f"bad value in --recipe {item!r}: {name} takes {kind}") from None
    return ProxyRecipe(**values)


def cmd_search(args: argparse.Namespace) -> int:
    """The alpha/beta/gamma grid search (paper Sec. 3.3, step 1)."""
    import torch

    if not args.verbose:
        optuna_warnings_only()
    from ..proxy.trainer import ProxyData, load_trainer
    from ..search.config import SearchConfig
    from ..search.results import format_table, pruning_saving, write_results
    from ..search.run import run_search

    if args.threads:
        torch.set_num_threads(args.threads)
    check_heartbeat_options(args)
    base = args.base if is_spec_path(args.base) else baseline_name(args.base)
    if base is None:
        raise EffnetError(f"unknown --base {args.base!r}: use one of {', '.join(BASELINES)} "
                          "(lite0 for lite is accepted) or a spec.json path (from `effnet nas`)")
    if base not in BASELINES:
        load_spec(base)  # a missing or damaged file: one line now, not in every worker
    recipe = _recipe(args)
    cfg = SearchConfig(base=base, dataset=args.dataset, image_size=args.image_size,
                       base_width=args.base_width, base_depth=args.base_depth,
                       grid_step=args.grid_step, target=args.target, tolerance=args.tolerance,
                       max_value=args.max_coefficient, seeds=args.seeds, recipe=recipe,
                       mac_tolerance=args.mac_tolerance)
    trainer = load_trainer(args.trainer)
    n = len(cfg.points())
    print(f"grid: {n} (alpha, beta, gamma) points with step {cfg.grid_step:g} and "
          f"|alpha*beta^2*gamma^2 - {cfg.target:g}| <= {cfg.tolerance:g}; storage {args.storage}, "
          f"study {args.study_name}")
    data = ProxyData(args.dataset, args.data, recipe, download=args.download,
                     folder_size=args.folder_size)
    result = run_search(cfg, args.storage, args.study_name, trainer=trainer, data=data,
                        prune=args.prune, progress=not args.no_progress,
                        max_candidates=args.max_candidates,
                        heartbeat_interval=args.heartbeat_interval,
                        grace_period=args.grace_period)
    print(format_table(result.rows))
    print(f"data: {args.dataset}, {data.num_classes} classes, {data.in_chans} channel(s), "
          f"native {data.native} px. base: {result.base_cost.params / 1e6:.3f} M params, "
          f"{result.base_cost.macs / 1e6:.2f} M MACs (measured); 'vs target' is the distance "
          f"of each candidate's measured MACs from {cfg.target:g}x the base's.")
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
    _add_search(sub)


def _add_search(sub: argparse._SubParsersAction) -> None:
    from ..proxy.recipe import ProxyRecipe

    p = sub.add_parser("search", help="grid search of alpha, beta, gamma (paper Sec. 3.3)",
                       description="Enumerate (alpha, beta, gamma) >= 1 with alpha*beta^2*gamma^2 "
                       "~ 2, train the base scaled by each at phi=1 with the proxy trainer (the "
                       "study's), and rank them by validation top-1. Resumable; any number of "
                       "workers share --storage.")
    p.add_argument("--base", default="b0",
                   help=f"baseline: {', '.join(BASELINES)} or a spec.json from `effnet nas` "
                   "(default b0)")
    p.add_argument("--base-width", type=float, default=1.0,
                   help="width of the base relative to the baseline (a cheaper proxy: 0.5)")
    p.add_argument("--base-depth", type=float, default=1.0, help="depth of the base, likewise")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist (offline), cifar10, cifar100, imagefolder")
    p.add_argument("--data", default=None, help="dataset folder (imagefolder, or local copies)")
    p.add_argument("--download", action="store_true", help="allow downloading CIFAR")
    p.add_argument("--image-size", type=int, default=16,
                   help="base resolution (default 16: below Fashion-MNIST's 28 px, so scaling "
                   "resolution up adds detail)")
    p.add_argument("--folder-size", type=int, default=64,
                   help="imagefolder: decode each image once at this size (px), its native size")
    p.add_argument("--epochs", "--budget", dest="epochs", type=int, default=ProxyRecipe().epochs,
                   help=f"proxy training epochs per candidate and seed (default "
                   f"{ProxyRecipe().epochs})")
    p.add_argument("--train-size", type=int, default=None,
                   help="train on a fixed subset of this many images (default: all)")
    p.add_argument("--val-size", type=int, default=None,
                   help="score on a fixed subset of the validation split (default: all)")
    p.add_argument("--batch-size", type=int, default=ProxyRecipe().batch_size,
                   help=f"training batch size (default {ProxyRecipe().batch_size})")
    p.add_argument("--lr", type=float, default=ProxyRecipe().lr,
                   help=f"peak AdamW learning rate of the one-cycle schedule (default "
                   f"{ProxyRecipe().lr:g})")
    p.add_argument("--augment", choices=("flip", "none"), default="flip",
                   help="random horizontal flips (default) or none")
    p.add_argument("--recipe", default=None, metavar="FIELD=VALUE,...",
                   help="other proxy-recipe settings, e.g. weight_decay=0.05,label_smoothing=0.1 "
                   "(fields of effnet.proxy.trainer.ProxyRecipe)")
    p.add_argument("--seeds", type=int, default=2, help="training seeds per candidate (>= 2 "
                   "gives a spread)")
    p.add_argument("--grid-step", type=float, default=0.05,
                   help="spacing of alpha, beta and gamma on the grid (default 0.05)")
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
                   help="custom training function 'package.module:function' with the signature "
                   "of effnet.proxy.trainer.train_proxy (advanced)")
    add_heartbeat_options(p)
    add_verbose(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_search)
