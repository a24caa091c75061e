"""`effnet nas` and `effnet autoscale`: step 0 of the paper (the baseline search), and all steps."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from ..errors import EffnetError
from ..proxy.workers import optuna_warnings_only
from .options import (
    add_heartbeat_options,
    add_verbose,
    check_dataset,
    check_heartbeat_options,
    parse_macs,
    parse_phis,
)


def _space(base: str):
    from ..nas.space import SearchSpace
    from ..proxy.candidates import baseline

    try:
        return SearchSpace(base=baseline(base))
    except ValueError as err:
        raise EffnetError(str(err).replace("unknown baseline", "unknown --base")) from None


def _recipe(args: argparse.Namespace):
    from dataclasses import replace

    from ..nas.proxy import NAS_RECIPE

    changes = {}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.train_size is not None:
        changes["train_size"] = None if args.train_size == 0 else args.train_size
    return replace(NAS_RECIPE, **changes)


def nas_config(args: argparse.Namespace):
    """The :class:`~effnet.nas.search.NasConfig` of `effnet nas`'s flags (validated)."""
    from ..nas.presets import NAS_PRESETS
    from ..nas.proxy import Proxy
    from ..nas.search import NasConfig

    check_dataset(args.dataset)
    target = None if args.target_macs is None else parse_macs(args.target_macs)
    preset = NAS_PRESETS[args.preset]
    if args.trials is None:
        args.trials = preset.max_trials
    if args.budget is None:
        args.budget = preset.budget
    if args.trials < 1:
        raise EffnetError(f"--trials must be >= 1, got {args.trials}")
    if not args.budget > 0:
        raise EffnetError(f"--budget must be > 0 trainings, got {args.budget:g}")
    if args.workers < 1:
        raise EffnetError(f"--workers must be >= 1, got {args.workers}")
    check_heartbeat_options(args)
    given = {k: getattr(args, k) for k in ("startup", "top_k", "pick_seeds")}
    return NasConfig(space=_space(args.base), proxy=Proxy(dataset=args.dataset,
                                                          recipe=_recipe(args)),
                     target_macs=target, w=args.w, multi_objective=args.multi_objective,
                     seed=args.seed, sampler=args.sampler, eta=args.eta,
                     first_rung=args.first_rung,
                     **{k: getattr(preset, k) if v is None else v for k, v in given.items()})


def cmd_nas(args: argparse.Namespace) -> int:
    """Search a baseline (paper Sec. 4) and write spec.json, trials.csv, the plot, report.md."""
    from ..nas.report import write_report
    from ..nas.search import load_result, run_workers
    from ..proxy.trainer import load_trainer

    if not args.verbose:
        optuna_warnings_only()
    cfg = nas_config(args)
    load_trainer(args.trainer)  # a bad --trainer: one line now, not in every worker
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{(out / 'nas.db').resolve()}"
    t0 = time.perf_counter()
    sampler = "NSGA-II" if cfg.multi_objective else cfg.sampler
    print(f"baseline search around {cfg.space.base.name}: {cfg.space.size:.2e} choices, "
          f"a budget of {args.budget:g} trainings (at most {args.trials} trials), {sampler}, "
          f"the top {cfg.top_k} retrained with {cfg.pick_seeds} seeds; {args.workers} "
          f"worker(s); storage {storage}", flush=True)
    run_workers(cfg, args.trials, storage, args.study_name, args.workers, args.data,
                args.trainer, args.heartbeat_interval, args.grace_period,
                progress=not args.no_progress, prune=not args.no_prune, budget=args.budget)
    result = load_result(cfg, storage, args.study_name, root=args.data)
    command = "effnet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv[1:2] == ["nas"] else ""
    paths = write_report(result, cfg, out, command)
    best, pick, cost = result.best, result.pick, result.trainings()
    print(f"target: {result.target_macs / 1e6:.3f} M MACs (the proxy B0 measures "
          f"{result.base_cost.macs / 1e6:.3f} M); w = {cfg.w:g}; "
          f"{sum(r['status'] == 'complete' for r in result.rows)} trial(s) finished, "
          f"{sum(r['status'] == 'pruned' for r in result.rows)} pruned ({cost['search']:.1f} "
          f"trainings), {cost['pick']:.0f} pick retrainings; this run took "
          f"{(time.perf_counter() - t0) / 60:.1f} min")
    if best is not None and pick is not None:
        print(f"pick: trial {best['trial']}, mean val top-1 {100 * pick['mean_accuracy']:.2f}% "
              f"over {len(pick['accuracies'])} new seeds, {best['macs'] / 1e6:.3f} M MACs, "
              f"mean reward {pick['mean_reward']:.4f} -> {paths['spec']}")
    elif best is not None:
        print(f"best: trial {best['trial']}, val top-1 {100 * best['accuracy']:.2f}%, "
              f"{best['macs'] / 1e6:.3f} M MACs, reward {best['reward']:.4f} -> {paths['spec']}")
    print(f"report: {paths['report']}")
    return 0


def cmd_autoscale(args: argparse.Namespace) -> int:
    """Search a baseline, grid-search its coefficients, train the scaled family; one report."""
    from ..nas.autoscale import run_autoscale
    from ..nas.presets import PRESETS

    if not args.verbose:
        optuna_warnings_only()
    check_dataset(args.dataset)
    target = None if args.target_macs is None else parse_macs(args.target_macs)
    phis = parse_phis(args.phi)
    if any(p < 1 for p in phis):
        raise EffnetError(f"--phi must be >= 1 (phi 0 is the baseline, always trained), got "
                          f"{args.phi!r}: e.g. --phi 1..3")
    if args.workers < 1:
        raise EffnetError(f"--workers must be >= 1, got {args.workers}")
    from ..proxy.trainer import load_trainer

    load_trainer(args.trainer)
    t0 = time.perf_counter()
    report = run_autoscale(PRESETS[args.preset], args.output, phis, dataset=args.dataset,
                           target_macs=target, w=args.w, workers=args.workers,
                           storage=args.storage, root=args.data,
                           progress=not args.no_progress, trainer_ref=args.trainer)
    print(f"done in {(time.perf_counter() - t0) / 60:.1f} min; the report is {report}")
    return 0


def _data_and_reward(p: argparse.ArgumentParser) -> None:
    """The options `effnet nas` and `effnet autoscale` share: the data and the reward's T and w."""
    from ..nas.reward import DEFAULT_W

    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist (offline), cifar10, cifar100 (default fashion-mnist)")
    p.add_argument("--data", default=None, help="dataset folder (default: the system copy)")
    p.add_argument("--target-macs", default=None, metavar="M",
                   help="T of the reward, in MACs of the proxy model, e.g. 0.75M (default: the "
                   "proxy B0's, measured)")
    p.add_argument("--w", type=float, default=DEFAULT_W,
                   help=f"reward exponent w of ACC x (MACs/T)^w (default {DEFAULT_W:g}, the "
                   "paper's; 0: accuracy only)")


def _common(p: argparse.ArgumentParser) -> None:

    _data_and_reward(p)
    p.add_argument("--base", default="b0",
                   help="baseline the space is built around: b0, lite (or lite0), mobilenetv2 "
                   "or a spec.json (default b0)")
    p.add_argument("--epochs", type=int, default=None,
                   help="proxy epochs per trial (default 1)")
    p.add_argument("--train-size", type=int, default=None,
                   help="training images per trial (default 0: all)")
    p.add_argument("--seed", type=int, default=0, help="sampler and training seed (default 0)")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel processes sharing the study, one thread each (default 1)")
    p.add_argument("--trainer", default=None,
                   help="custom training function 'package.module:function' (advanced)")
    add_heartbeat_options(p)
    add_verbose(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `effnet nas` and `effnet autoscale` to the `effnet` parser."""
    p = sub.add_parser("nas", help="search a baseline network (paper Sec. 4, MnasNet space)",
                       description="Search the factorized hierarchical space around B0 (kernel, "
                       "expansion, SE, width and repeats per stage) for the architecture with "
                       "the best reward ACC x (MACs/T)^w on the proxy. Resumable; any number of "
                       "workers share --storage.")
    _common(p)
    from ..nas.presets import NAS_PRESETS

    p.add_argument("--preset", default="quick", choices=sorted(NAS_PRESETS),
                   help="quick: a budget of 6 trainings, the top 2 retrained with 3 seeds; "
                   "standard: 30 trainings, the top 3 (default quick)")
    p.add_argument("--budget", type=float, default=None, metavar="N",
                   help="full trainings the search may spend; a trial stopped at a rung counts "
                   "its share (default: the preset's; rerun with more to extend the search)")
    p.add_argument("--trials", type=int, default=None,
                   help="at most this many architectures (default: the preset's)")
    p.add_argument("--sampler", default="evolution", choices=("evolution", "tpe", "random"),
                   help="regularized evolution (Real et al. 2019), TPE or random sampling "
                   "(default evolution)")
    p.add_argument("--startup", type=int, default=None,
                   help="random trials before the sampler models anything: evolution's "
                   "population, TPE's start-up (default: the preset's, quick 6, standard 12)")
    p.add_argument("--eta", type=int, default=3,
                   help="successive halving keeps the best 1/eta at each rung (default 3)")
    p.add_argument("--first-rung", type=int, default=2,
                   help="the evaluation (of 6 per trial) at which the first rung is judged "
                   "(default 2: a third of the training)")
    p.add_argument("--top-k", type=int, default=None,
                   help="finished trials retrained with new seeds before the pick (default: "
                   "the preset's; 0: pick the best single run)")
    p.add_argument("--pick-seeds", type=int, default=None,
                   help="seeds of each retraining; the pick is the best mean (default 3)")
    p.add_argument("--multi-objective", action="store_true",
                   help="NSGA-II on (accuracy, MACs), keeping the whole front (default: the "
                   "sampler on the reward)")
    p.add_argument("--no-prune", action="store_true",
                   help="train every trial to the end (default: successive halving stops the "
                   "worse trials at each rung)")
    p.add_argument("--output", default="nas", help="folder for spec.json, trials.csv, the plot "
                   "and report.md (default ./nas)")
    p.add_argument("--storage", default=None,
                   help="sqlite:///FILE or postgresql://USER@HOST:PORT/DB (default OUTPUT/nas.db)")
    p.add_argument("--study-name", default="effnet-nas")
    p.set_defaults(func=cmd_nas)

    from ..nas.presets import PRESETS

    p = sub.add_parser("autoscale", help="the whole method: search a baseline, grid-search "
                       "alpha, beta, gamma on it, scale it (one report)",
                       description="Step 0 (baseline search, Sec. 4), step 1 (the (alpha, beta, "
                       "gamma) grid search at phi=1, Sec. 3.3) and step 2 (the scaled family), "
                       "at proxy scale, beside B0 scaled with the paper's coefficients. "
                       "Resumable.")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS),
                   help="quick: a search of 6 trainings, a coarse grid, one seed; standard: "
                   "30 trainings, the 0.05 grid, 3 seeds")
    _data_and_reward(p)
    p.add_argument("--phi", default="1..3", help="the family to train: a range 1..3 or a list "
                   "(default 1..3)")
    p.add_argument("--workers", type=int, default=2,
                   help="parallel processes, one thread each (default 2)")
    p.add_argument("--output", default="autoscale", help="folder for the report (default "
                   "./autoscale)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage of all three steps (default OUTPUT/autoscale.db)")
    p.add_argument("--trainer", default=None,
                   help="custom training function 'package.module:function' (advanced)")
    p.add_argument("--no-progress", action="store_true", help="no progress messages")
    add_verbose(p)
    p.set_defaults(func=cmd_autoscale)
