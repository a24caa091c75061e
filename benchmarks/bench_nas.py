"""Is the searched baseline better than B0 and than random points of the space? (issue 11)

Retrains, with several seeds and the search's own proxy recipe, three kinds of
baseline on the proxy (B0's proxy scale: width 0.25, depth 0.6, stem stride 1,
Fashion-MNIST at 14 px):

* the baseline `effnet nas` found (its spec.json);
* B0 itself;
* N random specs of the same search space whose measured MACs are within 10% of
  the found baseline's (drawn with a seeded RNG, in order, the first N that fit).

The random side is summarised per seed by the median over its N specs, so each
side has one value per seed; differences come with Welch's 95% interval
(:func:`effnet.study.stats.compare`) and a verdict. Every finished training is
appended to OUTPUT/runs.jsonl, so a rerun resumes.

    python benchmarks/bench_nas.py --search results/nas-quick/search --output results/nas-quick
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

_DATA = {}


def _train(key: str, spec_dict: dict, seed: int, recipe_dict: dict) -> dict:
    """One training run in a worker process (one thread): returns its row."""
    import torch

    from effnet.nas.proxy import Proxy
    from effnet.proxy.trainer import ProxyData, ProxyRecipe, train_proxy
    from effnet.spec import spec_from_dict

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
    return {"key": key, "seed": seed, "val_top1": out["val_top1"], "curve": out["curve"],
            "seconds": out["seconds"]}


def random_specs(space, proxy, target_macs: int, n: int, tolerance: float, seed: int,
                 max_draws: int = 5000) -> list[tuple[dict, int]]:
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


def main(argv: list[str] | None = None) -> int:
    from effnet.io_utils import atomic_write_json, atomic_write_text
    from effnet.nas.proxy import NAS_RECIPE, Proxy
    from effnet.nas.space import SearchSpace, describe
    from effnet.spec import EFFICIENTNET_B0, load_spec, spec_to_dict

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search", required=True, help="the `effnet nas` output folder")
    ap.add_argument("--output", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--random", type=int, default=10)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    found = load_spec(Path(args.search) / "spec.json")
    recipe = NAS_RECIPE
    proxy = Proxy(recipe=recipe)
    space = SearchSpace()
    found_macs = proxy.measure(found).macs
    models = {"found": (found, found_macs), "b0": (EFFICIENTNET_B0,
                                                  proxy.measure(EFFICIENTNET_B0).macs)}
    for i, (spec, macs) in enumerate(random_specs(space, proxy, found_macs, args.random,
                                                  args.tolerance, seed=2026)):
        models[f"random{i}"] = (spec, macs)

    runs_path = out / "runs.jsonl"
    ids = {k: _run_id(spec_to_dict(spec), recipe.as_dict()) for k, (spec, _) in models.items()}
    done = {}
    if runs_path.exists():  # a rerun keeps the runs of the same spec and recipe only
        for line in runs_path.read_text().splitlines():
            r = json.loads(line)
            if r.get("run_id") == ids.get(r["key"]):
                done[(r["key"], r["seed"])] = r
    jobs = [(k, s) for k in models for s in range(args.seeds) if (k, s) not in done]
    print(f"{len(models)} models x {args.seeds} seeds; {len(jobs)} trainings to run",
          flush=True)
    t0 = time.perf_counter()
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        futs = [pool.submit(_train, k, spec_to_dict(models[k][0]), s, recipe.as_dict())
                for k, s in jobs]
        for fut in as_completed(futs):
            r = fut.result()
            r["run_id"] = ids[r["key"]]
            done[(r["key"], r["seed"])] = r
            with open(runs_path, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{r['key']} seed {r['seed']}: {100 * r['val_top1']:.2f}% "
                  f"({r['seconds']:.0f} s)", flush=True)
    wall = time.perf_counter() - t0
    write_summary(out, models, done, args, recipe, wall, describe, atomic_write_json,
                  atomic_write_text)
    return 0


def _run_id(spec: dict, recipe: dict) -> str:
    """What a stored run was trained on: a digest of its spec and recipe."""
    import hashlib

    text = json.dumps([spec, recipe], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_summary(out, models, done, args, recipe, wall, describe, write_json, write_text):
    """summary.json and REPORT.md: per-model means, the two comparisons, provenance."""
    import torch

    import effnet
    from effnet.bench.harness import machine_info
    from effnet.study.stats import compare

    seeds = range(args.seeds)
    acc = {k: [done[(k, s)]["val_top1"] for s in seeds] for k in models}
    rand = [k for k in models if k.startswith("random")]
    median_random = [statistics.median(acc[k][s] for k in rand) for s in seeds]
    vs_b0 = compare(acc["found"], acc["b0"])
    vs_random = compare(acc["found"], median_random)
    rows = [{"model": k, "macs": models[k][1], "mean": statistics.fmean(acc[k]),
             "seeds": acc[k], "spec": describe(models[k][0])} for k in models]
    provenance = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "python": platform.python_version(), "torch": torch.__version__,
        "effnet": effnet.__version__, "command": "python " + " ".join(sys.argv),
        "workers": args.workers, "wall_s": wall, "recipe": recipe.as_dict()}
    write_json(out / "summary.json", {"rows": rows, "median_random_per_seed": median_random,
                                      "found_vs_b0": vs_b0.as_dict(),
                                      "found_vs_median_random": vs_random.as_dict(),
                                      "provenance": provenance})
    lines = ["# Found baseline vs B0 vs random specs of the same space (issue 11)", "",
             f"- date: {provenance['date']}; machine: {provenance['machine']}; Python "
             f"{provenance['python']}, torch {provenance['torch']}, effnet "
             f"{provenance['effnet']}",
             f"- command: `{provenance['command']}`",
             f"- recipe (the search's proxy recipe): {recipe.as_dict()}",
             f"- {args.seeds} seeds per model; random specs: the first {len(rand)} seeded "
             f"draws within {args.tolerance:.0%} of the found baseline's measured MACs", "",
             "| model | MACs (M) | val top-1 % (mean) | per seed | spec |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['macs'] / 1e6:.3f} | {100 * r['mean']:.2f} | "
                     + ", ".join(f"{100 * v:.2f}" for v in r["seeds"])
                     + f" | {r['spec'].replace(' | ', ' / ')} |")
    lines += ["", "Differences of mean validation top-1 (points), Welch 95% interval:", ""]
    for name, c in (("found - B0", vs_b0), ("found - median of random (per seed)", vs_random)):
        lines.append(f"- {name}: {100 * c.diff:+.2f} [{100 * c.ci_low:+.2f}, "
                     f"{100 * c.ci_high:+.2f}] -> {c.verdict}")
    lines += ["", f"Wall time: {wall / 60:.1f} min with {args.workers} worker(s).", ""]
    write_text(out / "REPORT.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
