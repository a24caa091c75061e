"""Running the study: plan every model, train each for every budget and seed, write the report.

One job is (budget, model, seed). Jobs go through the same Optuna storage as
the grid search (:func:`effnet.proxy.queue.run_jobs`): by default an SQLite
file in the output folder, so a rerun resumes; with ``--storage
postgresql://...`` any number of workers on any number of machines split one
study, each job is trained once, and the job of a worker that died is
retried by another. On one machine the study starts one worker process per
core, each training one model at a time on one thread (many small models
train faster side by side than one after another on several threads).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import EffnetError, ParameterError
from ..proxy.queue import finished_jobs, job_states, run_jobs, storage_url
from ..proxy.recipe import ProxyRecipe
from ..proxy.trainer import ProxyData, Trainer, load_trainer, train_proxy
from ..proxy.workers import optuna_warnings_only, run_parallel
from ..train.loop import save_weights
from .plan import CostCache, Run, cam_runs, plan
from .presets import PRESETS, Budget, Preset
from .report import write_report

_WORKER: dict[str, Any] = {}


def job_key(budget: str, run_key: str, seed: int) -> str:
    """The name of one training job: budget/model/seed."""
    return f"{budget}/{run_key}/{seed}"


def _data(dataset: str, root: str | None, recipe: ProxyRecipe, download: bool) -> ProxyData:
    """This worker's in-memory data for `recipe`'s subsets (kept while the recipe repeats)."""
    key = json.dumps([dataset, root, recipe.train_size, recipe.val_size, recipe.val_fraction])
    if _WORKER.get("data_key") != key:
        _WORKER["data"] = ProxyData(dataset, root, recipe, download=download, cache=1)
        _WORKER["data_key"] = key
    return _WORKER["data"]


def train_job(run: dict, seed: int, recipe: dict, preset: dict, root: str | None,
              download: bool, weights_path: str | None, trainer: Trainer = train_proxy) -> dict:
    """Train one study model for one seed with one budget's recipe; return its result."""
    import torch

    rec = ProxyRecipe(**recipe)
    data = _data(preset["dataset"], root, rec, download)
    scaled = Run.from_dict(run).scaled
    torch.manual_seed(seed)
    model = scaled.build(num_classes=data.num_classes, in_chans=data.in_chans,
                         drop_rate=preset["drop_rate"], drop_path_rate=preset["drop_path_rate"])
    if torch.cuda.is_available():  # --preset full on a GPU machine: bf16 autocast in the trainer
        model = model.cuda()
    out = trainer(model, scaled.resolution, data, rec, seed)
    if weights_path:
        save_weights(model, weights_path)
    res = {"val_top1": float(out["val_top1"]), "seconds": float(out["seconds"]),
           "images_per_s": float(out["images_per_s"]),
           "curve": [float(v) for v in out["curve"]]}
    if "test_top1" in out:
        res["test_top1"] = float(out["test_top1"])
    return res


def resolve_preset(preset: str | Preset, seeds: int | None = None) -> Preset:
    """A preset by name (or as given), with `seeds` overridden when set."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise EffnetError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    if seeds is not None:
        if seeds < 2:
            raise ParameterError("seeds must be >= 2: every verdict needs a spread over seeds",
                                 "seeds")
        preset = replace(preset, seeds=seeds)
    return preset


def _workers(requested: int | None) -> int:
    if requested:
        return max(1, requested)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def study_jobs(preset: Preset, runs: list[Run],
               seeds_of: Callable[[Run], tuple[int, ...]] | None = None,
               budgets: tuple[Budget, ...] | None = None,
               lr_of: dict[str, float] | None = None) -> dict[str, dict]:
    """Every (budget, model, seed) job of the study, longest first, as JSON-able params.

    `seeds_of` gives a run's seeds (default: the preset's), `budgets` the budgets
    trained (default: all of the preset's), `lr_of` a multiplier of the recipe's
    learning rate per run key (default 1).
    """
    show = {r.key for r in cam_runs(runs, preset)}
    last = preset.budgets[-1].name
    jobs = []
    for b in budgets or preset.budgets:
        for r in (r for r in runs if b.covers(r.group)):
            seeds = seeds_of(r) if seeds_of else preset.seed_list
            for s in seeds:
                keep = b.name == last and s == seeds[0] and r.key in show
                recipe = b.recipe.as_dict()
                recipe["lr"] *= (lr_of or {}).get(r.key, 1.0)
                jobs.append((job_key(b.name, r.key, s), {
                    "run": r.as_dict(), "seed": s, "recipe": recipe,
                    "weights": f"models/{r.key}.safetensors" if keep else None},
                    r.cost.macs * b.recipe.epochs * (b.recipe.train_size or 60_000)
                    * max(1.0, r.scaled.depth_mult)))
    # Longest first, so parallel workers finish together.
    jobs.sort(key=lambda j: -j[2])
    return {key: params for key, params, _ in jobs}


def _work_fn(preset: dict, output: str, root: str | None, download: bool,
             trainer: str | None):
    train = load_trainer(trainer)  # once per worker, not once per job

    def work(ctx) -> dict:
        p = ctx.params
        weights = str(Path(output) / p["weights"]) if p["weights"] else None
        res = train_job(p["run"], p["seed"], p["recipe"], preset, root, download, weights,
                        train)
        return {**res, "value": res["val_top1"]}

    return work


def job_units(params: dict) -> float:
    """A job's work in MAC-images (MACs x epochs x training images): what its seconds scale with."""
    recipe = params["recipe"]
    return (float(params["run"]["cost"]["macs"]) * recipe["epochs"]
            * (recipe["train_size"] or 60_000))


def progress_line(key: str, result: dict, finished: dict[str, dict], jobs: dict[str, dict],
                  workers: int) -> str:
    """`[done/total] key: top-1 in s; about N min left`, the time left from the measured
    seconds per MAC-image of the finished jobs, shared by the workers."""
    done = [k for k in finished if k in jobs]
    line = (f"[{len(done)}/{len(jobs)}] {key}: {100 * result['val_top1']:.2f}% in "
            f"{result['seconds']:.0f} s")
    units = sum(job_units(jobs[k]) for k in done)
    seconds = sum(float(finished[k].get("seconds", 0.0)) for k in done)
    left = sum(job_units(p) for k, p in jobs.items() if k not in finished)
    if units > 0 and left > 0:
        minutes = left * seconds / units / max(1, workers) / 60
        line += (f"; about {round(minutes)} min left" if minutes >= 1
                 else "; under a minute left")
    return line


@contextlib.contextmanager
def _job_bar(storage: str, study_name: str, total: int, poll_s: float = 5.0) -> Iterator[None]:
    """A tqdm bar of the study's finished jobs, updated from the storage while the body runs."""
    from tqdm.auto import tqdm

    stop = threading.Event()

    def catch_up(bar) -> None:
        with contextlib.suppress(Exception):  # the storage may be busy: try again later
            bar.update(sum(v == "done" for v in job_states(storage, study_name).values())
                       - bar.n)

    def poll(bar) -> None:
        while not stop.wait(poll_s):
            catch_up(bar)

    with tqdm(total=total, desc="study jobs", unit="job") as bar:
        thread = threading.Thread(target=poll, args=(bar,), daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            catch_up(bar)


def study_worker(storage: str, study_name: str, jobs: dict[str, dict], preset: dict,
                 output: str, root: str | None, download: bool, trainer: str | None,
                 threads: int = 1, progress: bool = False, workers: int = 1,
                 verbose: bool = False) -> int:
    """One worker: train jobs of the study from the shared storage until none is left.

    With `progress`, a line per finished job (done / total, time left); Optuna's
    own log lines only with `verbose`.
    """
    import torch

    torch.set_num_threads(max(1, threads))
    if not verbose:
        optuna_warnings_only()
    done = []

    def on_done(key: str, res: dict) -> None:
        done.append(key)
        if progress:
            finished = finished_jobs(storage, study_name)
            print(progress_line(key, res, finished, jobs, workers), flush=True)

    run_jobs(storage, study_name, jobs, _work_fn(preset, output, root, download, trainer),
             identity=preset, on_done=on_done)
    return len(done)


def run_study(preset: str | Preset, output: str | Path, seeds: int | None = None,
              progress: bool = True, root: str | None = None, download: bool = False,
              workers: int | None = None, reference: str | Path | None = None,
              trainer: str | None = None, storage: str | None = None,
              study_name: str | None = None, verbose: bool = False) -> Path | None:
    """Run (or resume, or join) the study into `output`; return report.md's path.

    `storage` is an Optuna RDB URL (default: ``OUTPUT/study.db``); workers of
    other processes or machines that run the same preset on the same storage
    share the jobs. Returns None when jobs are still running elsewhere (the
    report is written by whoever finishes last, or by a rerun).
    `reference` is a results.json of another run (by default the committed
    `standard` reference) whose ranking of the B0 models this run is compared
    with (Kendall's tau). `trainer` names a replacement for the proxy trainer
    ('package.module:function', the signature of
    :func:`~effnet.proxy.trainer.train_proxy`); tests use a fast fake one.
    Optuna's own log lines show only with `verbose`.
    """
    t_start = time.perf_counter()
    if not verbose:
        optuna_warnings_only()
    preset = resolve_preset(preset, seeds)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    load_trainer(trainer)  # a bad --trainer fails here, before any work
    data = ProxyData(preset.dataset, root, preset.budgets[0].recipe, download=download)
    url = storage_url(storage or str(out / "study.db"))
    name = study_name or f"effnet-study-{preset.name}"
    if progress:
        print(f"study '{preset.name}': planning (counting MACs), storage {url}, study {name}",
              flush=True)
    train = _Trainer(url, preset, str(out), root, download, trainer, _workers(workers),
                     progress, verbose)
    if preset.design == "method":
        return _run_method(preset, out, data, train, name, reference, t_start)
    runs = plan(preset, data.num_classes, data.in_chans)
    results = train(name, study_jobs(preset, runs), f"{len(runs)} models")
    if results is None:
        return None
    state = {"results": results, "workers": train.workers,
             "wall_s": time.perf_counter() - t_start}
    return write_report(out, preset, runs, state, data, reference=reference)


class _Trainer:
    """Trains one set of jobs in worker processes; returns every result, or None while
    jobs are still running elsewhere (or failed)."""

    def __init__(self, url: str, preset: Preset, out: str, root: str | None, download: bool,
                 trainer: str | None, workers: int, progress: bool, verbose: bool) -> None:
        self.url, self.preset, self.out, self.root = url, preset, out, root
        self.download, self.trainer, self.workers = download, trainer, workers
        self.progress, self.verbose = progress, verbose

    def __call__(self, name: str, jobs: dict[str, dict], what: str) -> dict[str, dict] | None:
        if self.progress:
            print(f"{len(jobs)} training jobs ({what}), {self.workers} worker(s)", flush=True)
        args = (self.url, name, jobs, self.preset.identity(), self.out, self.root,
                self.download, self.trainer)
        # On a terminal a bar (jobs done of all, polled from the storage); elsewhere (a log
        # file, CI) the workers print a line per finished job.
        bar = self.progress and sys.stdout.isatty()
        with _job_bar(self.url, name, len(jobs)) if bar else contextlib.nullcontext():
            run_parallel(study_worker, [(*args, 1, self.progress and not bar, self.workers,
                                         self.verbose) for _ in range(self.workers)])
        waiting = [k for k, v in job_states(self.url, name).items() if v != "done"]
        if waiting:
            print(f"{len(waiting)} job(s) are not done ({waiting[0]}, ...): they run in other "
                  "workers, or failed; rerun this command to finish and write the report")
            return None
        return finished_jobs(self.url, name)


def _run_method(preset: Preset, out: Path, data: ProxyData, train: _Trainer, name: str,
                reference: str | Path | None, t_start: float) -> Path | None:
    """A `method` preset: the grid search on every base (its own study in the storage),
    then every direction at every target with the found coefficients (study/sweep.py)."""
    from .method_report import write_method_report
    from .sweep import lr_jobs, pick_lr, plan_grid, plan_method, run_seeds, searched_coefficients

    cost = CostCache(data.num_classes, data.in_chans)
    grid = plan_grid(preset, cost)
    first = preset.budgets[:1]
    grid_results = train(f"{name}-grid", study_jobs(
        preset, grid, lambda r: run_seeds(preset, r), first), "grid search, step 1")
    if grid_results is None:
        return None
    scores = {r.key: [grid_results[k]["val_top1"] for s in run_seeds(preset, r)
                      if (k := job_key(first[0].name, r.key, s)) in grid_results]
              for r in grid}
    searched = searched_coefficients(grid, scores)
    runs = plan_method(preset, cost, searched)
    lr_of: dict[str, float] = {}
    if preset.lr_sweep:
        lr_results = train(f"{name}-lr", lr_jobs(preset, runs), "learning-rate sweep")
        if lr_results is None:
            return None
        lr_of = pick_lr(preset, runs, lr_results)
    results = train(name, study_jobs(preset, runs, lambda r: run_seeds(preset, r),
                                     lr_of=lr_of),
                    f"{len(runs)} models along {len({r.strategy for r in runs})} directions")
    if results is None:
        return None
    state = {"results": results, "grid_scores": scores, "lr": lr_of, "workers": train.workers,
             "wall_s": time.perf_counter() - t_start}
    return write_method_report(out, preset, grid, runs, searched, state, data,
                               reference=reference)
