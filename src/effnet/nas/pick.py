"""Seeds before the pick: the search's top k retrained with new seeds, the pick by the mean.

One training's score is half signal on the proxy (issue 19: seed SD 0.85
points against 0.88 between architectures' means on the old recipe), so the
best single score of a search is partly the luckiest seed. The top k
finished trials (by their search reward) are trained again with
`pick_seeds` seeds that the search never used, and the pick is the best
mean reward over those seeds: the search's own run, selected for being
high, is left out of the mean (it is biased upwards, the winner's curse).

The retrainings are jobs of :func:`effnet.proxy.queue.run_jobs` in the
search's storage, so they resume and any number of workers share them.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from typing import TYPE_CHECKING

from ..errors import ParameterError
from ..proxy.queue import finished_jobs, run_jobs
from ..proxy.trainer import ProxyData, Trainer, train_proxy
from ..spec import spec_from_dict
from .reward import reward

if TYPE_CHECKING:
    from .search import NasConfig


def pick_seeds(search_seed: int, n: int) -> list[int]:
    """`n` training seeds for the retrainings, none of them the search's own `search_seed`."""
    return [1000 * (search_seed + 1) + i for i in range(n)]


def top_trials(rows: list[dict], k: int) -> list[dict]:
    """The `k` finished trials with the highest reward (ties: fewer MACs, then lower number)."""
    done = [r for r in rows if r["status"] == "complete" and r["reward"] is not None]
    return sorted(done, key=lambda r: (-r["reward"], r["macs"], r["trial"]))[:k]


def pick_jobs(top: list[dict], seeds: list[int]) -> dict[str, dict]:
    """One job per candidate and seed: key 't{trial}-s{seed}'."""
    return {f"t{r['trial']}-s{s}": {"trial": r["trial"], "seed": s, "spec": r["spec"]}
            for r in top for s in seeds}


def pick_study(study_name: str, jobs: dict[str, dict]) -> str:
    """The pick's study name: the search's, with a digest of its jobs (a longer search whose
    top k changed retrains in a study of its own)."""
    digest = hashlib.sha256(json.dumps(sorted(jobs), sort_keys=True).encode()).hexdigest()[:10]
    return f"{study_name}-pick-{digest}"


def pick_rows(top: list[dict], results: dict[str, dict], seeds: list[int], target: float,
              w: float) -> list[dict]:
    """Per candidate: accuracies over the seeds, their mean and the mean's reward."""
    rows = []
    for r in top:
        accs = [results[f"t{r['trial']}-s{s}"]["val_top1"] for s in seeds
                if f"t{r['trial']}-s{s}" in results
                and not results[f"t{r['trial']}-s{s}"].get("pruned")]
        mean = statistics.fmean(accs) if accs else None
        rows.append({"trial": r["trial"], "macs": r["macs"], "search_accuracy": r["accuracy"],
                     "accuracies": accs, "seeds": seeds[:len(accs)], "mean_accuracy": mean,
                     "mean_reward": None if mean is None else reward(mean, r["macs"], target, w),
                     "complete": len(accs) == len(seeds)})
    return rows


def picked(rows: list[dict]) -> dict | None:
    """The candidate with the best mean reward over all its seeds (ties: fewer MACs, lower trial);
    None until every candidate has all its seeds."""
    if not rows or not all(r["complete"] for r in rows):
        return None
    return max(rows, key=lambda r: (r["mean_reward"], -r["macs"], -r["trial"]))


def run_pick(cfg: NasConfig, rows: list[dict], storage: str, study_name: str, target: float,
             trainer: Trainer | None = None, data: ProxyData | None = None,
             root: str | None = None) -> list[dict]:
    """Retrain the top `cfg.top_k` of `rows` with `cfg.pick_seeds` new seeds (resumable, shared
    by any number of workers); return :func:`pick_rows`."""
    import torch

    if cfg.top_k < 1:
        return []
    top = top_trials(rows, cfg.top_k)
    if not top:
        raise ParameterError("the search finished no trial to pick from: give it a larger "
                             "budget", "budget")
    seeds = pick_seeds(cfg.seed, cfg.pick_seeds)
    jobs = pick_jobs(top, seeds)
    proxy, train = cfg.proxy, trainer or train_proxy
    if data is None:
        data = ProxyData(proxy.dataset, root, proxy.recipe)

    def work(ctx) -> dict:
        spec = spec_from_dict(ctx.params["spec"])
        torch.manual_seed(ctx.params["seed"])
        model = proxy.build(spec, data.num_classes, data.in_chans)
        out = train(model, proxy.resolution, data, proxy.recipe, ctx.params["seed"])
        acc = float(out["val_top1"])
        return {"value": acc, "val_top1": acc, "curve": out.get("curve", []),
                "seconds": out.get("seconds")}

    name = pick_study(study_name, jobs)
    results = run_jobs(storage, name, jobs, work, identity={
        "kind": "baseline-pick", "search": study_name, "seeds": seeds,
        "trials": [r["trial"] for r in top], "proxy": proxy.identity()})
    return pick_rows(top, results, seeds, target, cfg.w)


def stored_picks(cfg: NasConfig, rows: list[dict], storage: str, study_name: str,
                 target: float) -> list[dict]:
    """:func:`pick_rows` of what is stored (no training); [] when the pick has not started."""
    if cfg.top_k < 1:
        return []
    top = top_trials(rows, cfg.top_k)
    seeds = pick_seeds(cfg.seed, cfg.pick_seeds)
    if not top:
        return []
    try:
        results = finished_jobs(storage, pick_study(study_name, pick_jobs(top, seeds)))
    except ParameterError:  # no such study yet
        return []
    return pick_rows(top, results, seeds, target, cfg.w)
