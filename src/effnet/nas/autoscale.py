"""The whole method on your data (Tan & Le 2019, Sec. 3.3 and 4): search, grid-search, scale.

1. search a baseline (:mod:`.search`, the paper's Sec. 4 objective);
2. grid-search (alpha, beta, gamma) at phi = 1 on it (:mod:`effnet.search`, Sec. 3.3 step 1);
3. build and train the scaled family for each phi (step 2), beside B0 scaled with the
   paper's coefficients (1.2, 1.1, 1.15), all at the proxy scale and recipe.

Each step keeps its results in one Optuna storage (``OUTPUT/autoscale.db`` by default),
so a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import EffnetError, ParameterError
from ..proxy.candidates import Cost, Scaled
from ..proxy.queue import finished_jobs, run_jobs
from ..proxy.trainer import ProxyData, load_trainer
from ..proxy.workers import run_parallel, start_worker
from ..scaling import CompoundScaling
from ..search.config import SearchConfig
from ..search.results import write_results
from ..search.run import run_search
from ..spec import EFFICIENTNET_B0, NetworkSpec, load_spec, save_spec
from .autoscale_report import PAPER, family_rows, write_autoscale_report
from .presets import AutoscalePreset
from .proxy import SHORT_RECIPE, Proxy
from .search import NasConfig, load_result, run_workers


def _family_jobs(phis: list[float], seeds: int) -> dict[str, dict]:
    return {f"{fam}-phi{phi:g}-s{s}": {"family": fam, "phi": phi, "seed": s}
            for phi in [0.0, *phis] for fam in ("found", "b0-paper") for s in range(seeds)}


def _family_member(spec: NetworkSpec, coeffs: tuple[float, float, float], phi: float,
                   proxy: Proxy) -> Scaled:
    """The proxy of `spec` compound-scaled by phi (Eq. 3)."""
    c = CompoundScaling(*coeffs).coefficients(phi, proxy.resolution)
    return proxy.scaled(spec, c.width_mult, c.depth_mult, c.resolution)


def family_worker(found_path: str, coeffs: tuple[float, float, float], phis: list[float],
                  seeds: int, proxy: Proxy, storage: str, root: str | None,
                  trainer_ref: str | None = None, worker: int = 0) -> None:
    """Train the family's jobs (a queue shared by any number of workers)."""
    import torch

    start_worker()
    train = load_trainer(trainer_ref)
    data = ProxyData(proxy.dataset, root, proxy.recipe)
    bases = {"found": (load_spec(found_path), coeffs), "b0-paper": (EFFICIENTNET_B0, PAPER)}

    def work(ctx) -> dict:
        spec, base_coeffs = bases[ctx.params["family"]]
        member = _family_member(spec, base_coeffs, ctx.params["phi"], proxy)
        res = member.resolution
        torch.manual_seed(ctx.params["seed"])
        model = member.build(num_classes=data.num_classes, in_chans=data.in_chans)
        cost = Cost.of(model, res)
        macs, params = cost.macs, cost.params
        ctx.update({"macs": macs, "params": params, "resolution": res})
        out = train(model, res, data, proxy.recipe, ctx.params["seed"])
        return {"macs": macs, "params": params, "resolution": res, "value": out["val_top1"],
                "val_top1": out["val_top1"], "curve": out.get("curve", []),
                "seconds": out.get("seconds")}

    run_jobs(storage, "autoscale-family", _family_jobs(phis, seeds), work,
             identity={"kind": "autoscale-family", "found": str(found_path),
                       "coefficients": list(coeffs), "phis": phis, "seeds": seeds,
                       "proxy": proxy.identity()})


def grid_worker(cfg: SearchConfig, storage: str, root: str | None,
                trainer_ref: str | None = None, worker: int = 0):
    """One worker of the grid search (step 1) on the found baseline; returns its result."""
    start_worker()
    return run_search(cfg, storage, "autoscale-grid", trainer=load_trainer(trainer_ref),
                      progress=False, root=root)


def _parallel(fn, args: tuple, workers: int) -> None:
    run_parallel(fn, [(*args, i) for i in range(max(1, workers))])


def run_autoscale(preset: AutoscalePreset, output: str | Path, phis: list[float],
                  dataset: str = "fashion-mnist", target_macs: float | None = None,
                  w: float = -0.07, workers: int = 1, storage: str | None = None,
                  root: str | None = None, progress: bool = True,
                  trainer_ref: str | None = None) -> Path:
    """Run (or resume) the three steps; write OUTPUT/report.md and return its path."""
    from .report import write_report

    if not phis or any(p < 1 for p in phis):
        raise ParameterError(f"phis must be >= 1 (phi 0 is the baseline itself), got "
                             f"{','.join(f'{p:g}' for p in phis)}", "phis")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'autoscale.db').resolve()}"
    # The search trains its trials with the NAS recipe (one epoch on all the data); the grid
    # search and the family keep the shorter recipe they were sized with.
    cfg = NasConfig(proxy=Proxy(dataset=dataset), target_macs=target_macs, w=w,
                    startup=preset.nas.startup, top_k=preset.nas.top_k,
                    pick_seeds=preset.nas.pick_seeds)
    proxy = Proxy(dataset=dataset, recipe=SHORT_RECIPE)
    times: dict[str, float] = {}

    def say(text: str) -> None:
        if progress:
            print(text, flush=True)

    t0 = time.perf_counter()
    say(f"step 1/3: baseline search, a budget of {preset.nas.budget:g} trainings, the top "
        f"{preset.nas.top_k} retrained with {preset.nas.pick_seeds} seeds ({workers} worker(s))")
    run_workers(cfg, preset.nas.max_trials, url, "autoscale-nas", workers, root, trainer_ref,
                progress=progress, budget=preset.nas.budget)
    nas = load_result(cfg, url, "autoscale-nas", root=root)
    paths = write_report(nas, cfg, out / "nas")
    if "spec" not in paths:
        raise EffnetError("the baseline search finished no trial: see " + str(out / "nas"))
    found = load_spec(paths["spec"])
    times["search"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    grid_base = out / "grid_base.json"  # the found baseline with the proxy's stem stride
    save_spec(found.with_(stem_stride=proxy.stem_stride), grid_base)
    gcfg = SearchConfig(base=str(grid_base.resolve()), dataset=dataset,
                        image_size=proxy.resolution, base_width=proxy.width,
                        base_depth=proxy.depth, grid_step=preset.grid_step,
                        tolerance=preset.grid_tolerance, max_value=preset.grid_max,
                        seeds=preset.grid_seeds, recipe=proxy.recipe)
    say(f"step 2/3: (alpha, beta, gamma) grid search at phi = 1, {len(gcfg.points())} points")
    _parallel(grid_worker, (gcfg, url, root, trainer_ref), workers)
    grid = grid_worker(gcfg, url, root, trainer_ref)
    write_results(grid, gcfg, out / "grid")
    if grid.best is None:
        raise EffnetError("the grid search finished no candidate: see " + str(out / "grid"))
    coeffs = (grid.best["alpha"], grid.best["beta"], grid.best["gamma"])
    times["grid"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    say(f"step 3/3: the scaled family, phi {','.join(f'{p:g}' for p in phis)}, beside B0 "
        "scaled with the paper's coefficients")
    _parallel(family_worker, (str(paths["spec"].resolve()), coeffs, phis,
                              preset.family_seeds, proxy, url, root, trainer_ref), workers)
    family = finished_jobs(url, "autoscale-family")
    times["family"] = time.perf_counter() - t2
    return write_autoscale_report(out, preset, found, nas, grid, coeffs, family, phis, times,
                                  workers, step_trainings(nas, grid.rows, family))


def step_trainings(nas, grid_rows: list[dict], family: dict[str, dict]) -> dict[str, float]:
    """Trainings each step cost, in full trainings of its recipe: the search's trials (a pruned
    one its share), the pick's retrainings, the grid's seeds (a pruned point its share), the
    family's jobs."""
    grid = 0.0
    for r in grid_rows:
        if r["status"] == "complete":
            grid += len(r.get("val_top1_seeds") or [None])
        elif r["status"] == "pruned" and r.get("epochs_budget"):
            grid += r.get("epochs_done", 0) / r["epochs_budget"]
    cost = nas.trainings()
    return {"search_trials": cost["trials"], "search": cost["search"], "pick": cost["pick"],
            "grid": grid, "family": float(sum(not r.get("pruned") for r in family.values()))}


__all__ = ["PAPER", "family_rows", "run_autoscale"]
