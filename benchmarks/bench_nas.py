"""Does the baseline search beat random search at the same number of trainings? (issue 19)

Runs `effnet nas`'s search in several *arms*, each with several search seeds,
every run with the same budget of trainings (a trial stopped at a rung counts
its share) and the same pick (the top k retrained with new seeds, the best
mean):

* ``search``: regularized evolution + successive halving (the default search);
* ``random``: random sampling, every trial trained to the end (random search);
* ``tpe``, ``random-sh`` (optional): TPE + successive halving, and random sampling +
  successive halving, to tell the sampler's part from the multi-fidelity part.

Then every pick, B0 and N random specs of the found baseline's MACs (within 10%)
are retrained with evaluation seeds none of the searches used. The report gives:

* the primary comparison, named before the run: the search's picks against random
  search's (each search seed's value the mean of its pick's retrainings; Welch's 95%
  interval over search seeds), on validation top-1; the same on the reward (the search's
  objective), added after the first run;
* the found baseline (the search arm's pick with the best pick-phase mean reward) against B0
  and against the median of the random specs of its MACs (per evaluation seed);
* Kendall's tau between each evaluation and the final score over random search's
  trials (all trained to the end), the rungs marked;
* the seed SD against the SD between architectures (the random specs at equal MACs,
  and the pick candidates).

Resumable in pieces: the searches live in an Optuna storage, the retrainings in
OUTPUT/runs.jsonl; ``--phase``, ``--arms`` and ``--search-seeds`` run a part.

    python benchmarks/bench_nas.py --preset standard --output results/nas-standard
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

_DATA: dict = {}
ARMS = {  # name -> (sampler, successive halving)
    "search": ("evolution", True),
    "random": ("random", False),
    "tpe": ("tpe", True),
    "random-sh": ("random", True),
}
SAME_MACS = "same-macs-"  # key prefix of the random specs of the found baseline's MACs
EVAL_SEED0 = 500  # evaluation seeds 500, 501, ...: no search (seeds 0..) or pick (1000..) uses them


def eval_seeds(n: int) -> list[int]:
    """The retraining seeds of the evaluation phase."""
    return [EVAL_SEED0 + i for i in range(n)]


def arm_config(arm: str, search_seed: int, preset):
    """The NasConfig of one arm and search seed (the proxy recipe is the search's)."""
    from effnet.nas.search import NasConfig

    sampler, _ = ARMS[arm]
    return NasConfig(seed=search_seed, sampler=sampler, startup=preset.startup,
                     top_k=preset.top_k, pick_seeds=preset.pick_seeds)


def _train(key: str, spec_dict: dict, seed: int, recipe_dict: dict,
           trainer_ref: str | None = None) -> dict:
    """One training run in a worker process (one thread): returns its row."""
    import torch

    from effnet.nas.proxy import Proxy
    from effnet.proxy.trainer import ProxyData, ProxyRecipe, load_trainer
    from effnet.spec import spec_from_dict

    train_proxy = load_trainer(trainer_ref)
    torch.set_num_threads(1)
    recipe = ProxyRecipe(**recipe_dict)
    proxy = Proxy(recipe=recipe)
    if "data" not in _DATA:
        _DATA["data"] = ProxyData(proxy.dataset, recipe=recipe)
    data = _DATA["data"]
    spec = spec_from_dict(spec_dict)
    torch.manual_seed(seed)
    model = proxy.build(spec, data.num_classes, data.in_chans)
    out = train_proxy(model, proxy.resolution, data, recipe, seed)
    return {"key": key, "seed": seed, "val_top1": out["val_top1"],
            "curve": out.get("curve", []), "seconds": out.get("seconds", 0.0)}


def random_specs(space, proxy, target_macs: int, n: int, tolerance: float, seed: int,
                 max_draws: int = 5000) -> list[tuple]:
    """The first `n` random choices whose proxy MACs are within `tolerance` of `target_macs`."""
    rng = random.Random(seed)
    out, seen = [], set()
    for _ in range(max_draws):
        spec = space.decode(space.sample(rng))
        if spec.stages in seen:
            continue
        seen.add(spec.stages)
        macs = proxy.measure(spec).macs
        if abs(macs / target_macs - 1) <= tolerance:
            out.append((spec, macs))
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} of {max_draws} random specs fall within "
                     f"{tolerance:.0%} of {target_macs} MACs")


def run_searches(args, preset, storage: str) -> None:
    """Every arm x search seed: the search and its pick (resumes what is stored)."""
    from effnet.nas.search import run_workers

    for arm in args.arms:
        for s in args.search_seeds:
            print(f"search arm {arm}, search seed {s}: a budget of {preset.budget:g} trainings",
                  flush=True)
            run_workers(arm_config(arm, s, preset), preset.max_trials, storage,
                        f"{arm}-s{s}", args.workers, trainer_ref=args.trainer, progress=False,
                        prune=ARMS[arm][1], budget=preset.budget)


def collect(arms, seeds, preset, storage: str) -> dict:
    """arm -> search seed -> NasResult, for the searches stored (others left out)."""
    from effnet.errors import EffnetError
    from effnet.nas.search import load_result
    from effnet.proxy.trainer import ProxyData

    data = _DATA.setdefault("data", ProxyData("fashion-mnist"))
    out: dict = {}
    for arm in arms:
        for s in seeds:
            try:
                res = load_result(arm_config(arm, s, preset), storage, f"{arm}-s{s}", data=data)
            except EffnetError:
                continue
            if res.pick is not None:
                out.setdefault(arm, {})[s] = res
    return out


def eval_models(results: dict, n_random: int, tolerance: float) -> dict:
    """key -> (spec, MACs): every pick, B0 and the random specs of the found baseline's MACs."""
    from effnet.nas.proxy import Proxy
    from effnet.nas.space import SearchSpace
    from effnet.spec import EFFICIENTNET_B0, spec_from_dict

    proxy = Proxy()
    models = {}
    for arm, by_seed in results.items():
        for s, res in by_seed.items():
            models[f"{arm}-s{s}"] = (spec_from_dict(res.best["spec"]), res.best["macs"])
    models["b0"] = (EFFICIENTNET_B0, proxy.measure(EFFICIENTNET_B0).macs)
    found = found_key(results)
    if found is not None:
        for i, (spec, macs) in enumerate(random_specs(SearchSpace(), proxy, models[found][1],
                                                      n_random, tolerance, seed=2026)):
            models[f"{SAME_MACS}{i}"] = (spec, macs)
    return models


def found_key(results: dict) -> str | None:
    """The found baseline: the search arm's pick with the best pick-phase mean reward."""
    runs = results.get("search") or {}
    if not runs:
        return None
    s = max(runs, key=lambda s: (runs[s].pick["mean_reward"], -s))
    return f"search-s{s}"


def run_evals(models: dict, seeds: list[int], out: Path, workers: int, recipe,
              trainer_ref: str | None = None) -> dict:
    """Retrain every model with every evaluation seed; OUTPUT/runs.jsonl keeps finished runs."""
    import multiprocessing as mp
    from concurrent.futures import Future, ProcessPoolExecutor, as_completed

    from effnet.spec import spec_to_dict

    runs_path = out / "runs.jsonl"
    ids = {k: _run_id(spec_to_dict(spec), recipe.as_dict()) for k, (spec, _) in models.items()}
    done = load_runs(runs_path, ids)
    jobs = [(k, s) for k in models for s in seeds if (k, s) not in done]
    print(f"{len(models)} models x {len(seeds)} seeds; {len(jobs)} trainings to run", flush=True)

    def record(r: dict) -> None:
        r["run_id"] = ids[r["key"]]
        done[(r["key"], r["seed"])] = r
        with open(runs_path, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(f"{r['key']} seed {r['seed']}: {100 * r['val_top1']:.2f}% "
              f"({r['seconds']:.0f} s)", flush=True)

    calls = [(k, spec_to_dict(models[k][0]), s, recipe.as_dict(), trainer_ref) for k, s in jobs]
    if workers == 1:  # here, in this process
        for call in calls:
            record(_train(*call))
        return done
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futs: list[Future] = [pool.submit(_train, *call) for call in calls]
        for fut in as_completed(futs):
            record(fut.result())
    return done


def load_runs(path: Path, ids: dict) -> dict:
    """(key, seed) -> run of runs.jsonl whose spec and recipe digest still match."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("run_id") == ids.get(r["key"]):
                done[(r["key"], r["seed"])] = r
    return done


def _run_id(spec: dict, recipe: dict) -> str:
    """What a stored run was trained on: a digest of its spec and recipe."""
    import hashlib

    text = json.dumps([spec, recipe], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    from effnet.nas.presets import NAS_PRESETS
    from effnet.nas.proxy import NAS_RECIPE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", required=True)
    ap.add_argument("--preset", default="standard", choices=sorted(NAS_PRESETS))
    ap.add_argument("--arms", default="search,random",
                    help=f"comma-separated, of {', '.join(ARMS)} (default search,random)")
    ap.add_argument("--search-seeds", default="0,1,2")
    ap.add_argument("--eval-seeds", type=int, default=3)
    ap.add_argument("--random", type=int, default=10)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--storage", default=None, help="default sqlite:///runs/bench-nas-PRESET.db")
    ap.add_argument("--phase", default="all", choices=("search", "eval", "report", "all"))
    ap.add_argument("--budget", type=float, default=None, help="override the preset's budget")
    ap.add_argument("--top-k", type=int, default=None, help="override the preset's top k")
    ap.add_argument("--trainer", default=None, help="package.module:function (tests)")
    args = ap.parse_args(argv)
    args.arms = [a for a in args.arms.split(",") if a]
    bad = [a for a in args.arms if a not in ARMS]
    if bad or len(args.arms) < 1:
        ap.error(f"--arms: unknown {bad}; use {', '.join(ARMS)}")
    args.search_seeds = [int(s) for s in args.search_seeds.split(",") if s]
    preset = NAS_PRESETS[args.preset]
    changes = {k: v for k, v in (("budget", args.budget), ("top_k", args.top_k))
               if v is not None}
    if changes:
        preset = replace(preset, name=f"{preset.name} (changed: {changes})", **changes)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{Path('runs').resolve()}/bench-nas-{args.preset}.db"
    Path("runs").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    if args.phase in ("search", "all"):
        run_searches(args, preset, storage)
    results = collect(list(ARMS), args.search_seeds, preset, storage)
    done: dict = {}
    models = {}
    if args.phase != "search" and results:
        models = eval_models(results, args.random, args.tolerance)
        ids_only = args.phase == "report"
        if ids_only:
            from effnet.spec import spec_to_dict

            done = load_runs(out / "runs.jsonl", {k: _run_id(spec_to_dict(m[0]),
                                                             NAS_RECIPE.as_dict())
                                                  for k, m in models.items()})
        else:
            done = run_evals(models, eval_seeds(args.eval_seeds), out, args.workers,
                             NAS_RECIPE, args.trainer)
    _log_invocation(out, args, time.perf_counter() - t0)
    if args.phase != "search":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _nas_report import write_summary

        write_summary(out, args, preset, results, models, done, storage)
    return 0


def _log_invocation(out: Path, args, wall: float) -> None:
    """Append this piece's command and wall time to OUTPUT/pieces.jsonl (RUN.md sums them)."""
    with open(out / "pieces.jsonl", "a") as f:
        f.write(json.dumps({"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                            "command": "python " + " ".join(sys.argv), "phase": args.phase,
                            "arms": args.arms, "search_seeds": args.search_seeds,
                            "wall_s": wall, "python": platform.python_version()}) + "\n")


def per_seed_means(results: dict, done: dict, seeds: list[int],
                   value: Callable[[str, float], float] | None = None
                   ) -> dict[str, dict[int, float]]:
    """arm -> search seed -> mean evaluation accuracy of its pick (seeds all done only), or
    the mean of `value(model key, accuracy)` (e.g. the reward)."""
    out: dict = {}
    for arm, by_seed in results.items():
        for s in by_seed:
            key = f"{arm}-s{s}"
            accs = [done[(key, e)]["val_top1"] if value is None
                    else value(key, done[(key, e)]["val_top1"]) for e in seeds
                    if (key, e) in done]
            if len(accs) == len(seeds):
                out.setdefault(arm, {})[s] = statistics.fmean(accs)
    return out


if __name__ == "__main__":
    sys.exit(main())
