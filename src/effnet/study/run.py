"""Running the study: plan every model, train each for every budget and seed, write the report.

One job is (budget, model, seed). Jobs run in worker processes with one
thread each (many small models train faster side by side than one after the
other on several threads), longest first. Results are saved after every job
(``state.json``), so a rerun with the same preset only trains what is missing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import EffnetError
from ..search.trainer import ProxyData, Recipe, train_proxy
from ..train.checkpoint import atomic_write, atomic_write_text
from .plan import Run, plan
from .presets import PRESETS, Preset

_WORKER: dict[str, Any] = {}


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def job_key(budget: str, run_key: str, seed: int) -> str:
    """The name of one training job: budget/model/seed."""
    return f"{budget}/{run_key}/{seed}"


def _data(dataset: str, root: str | None, recipe: Recipe, download: bool) -> ProxyData:
    """This worker's in-memory data for `recipe`'s subsets (kept while the recipe repeats)."""
    key = json.dumps([dataset, root, recipe.train_size, recipe.val_size, recipe.val_fraction])
    if _WORKER.get("data_key") != key:
        _WORKER["data"] = ProxyData(dataset, root, recipe, download=download, cache=1)
        _WORKER["data_key"] = key
    return _WORKER["data"]


def _trainer(ref: str | None):
    """The proxy trainer, or a user's one named 'package.module:function' (same signature)."""
    if not ref:
        return train_proxy
    import importlib

    mod, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise EffnetError(f"cannot load trainer {ref!r} ({err}): write it as "
                          "package.module:function, importable from here") from None


def train_job(run: dict, seed: int, recipe: dict, preset: dict, root: str | None,
              download: bool, weights_path: str | None, trainer: str | None = None) -> dict:
    """Train one study model for one seed with one budget's recipe; return its result."""
    import torch

    rec = Recipe(**recipe)
    data = _data(preset["dataset"], root, rec, download)
    scaled = Run.from_dict(run).scaled
    torch.manual_seed(seed)
    model = scaled.build(num_classes=data.num_classes, in_chans=data.in_chans,
                         drop_rate=preset["drop_rate"], drop_path_rate=preset["drop_path_rate"])
    out = _trainer(trainer)(model, scaled.resolution, data, rec, seed)
    if weights_path:
        from safetensors.torch import save_file

        sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        atomic_write(weights_path, lambda tmp: save_file(sd, tmp))
    return {"val_top1": float(out["val_top1"]), "seconds": float(out["seconds"]),
            "images_per_s": float(out["images_per_s"]),
            "curve": [float(v) for v in out["curve"]]}


def cam_runs(runs: list[Run], preset: Preset) -> list[Run]:
    """The models shown in Fig. 7: the B0 base and its four scalings at the largest budget."""
    b0 = preset.bases[0].name
    top = max(preset.targets)
    return [r for r in runs if r.group == b0 and (r.strategy == "baseline" or r.target == top)]


def resolve_preset(preset: str | Preset, seeds: int | None = None) -> Preset:
    """A preset by name (or as given), with `seeds` overridden when set."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise EffnetError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    if seeds is not None:
        if seeds < 2:
            raise EffnetError("--seeds must be >= 2: every verdict needs a spread over seeds")
        preset = replace(preset, seeds=seeds)
    return preset


def _load_state(path: Path, identity: dict) -> dict:
    state: dict[str, Any] = {"preset": identity, "results": {}, "wall_s": 0.0}
    if not path.exists():
        return state
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        raise EffnetError(f"{path} is damaged: delete it to start the study over") from None
    if old.get("preset") != identity:
        raise EffnetError(f"{path.parent} holds a study with other settings: pass a new "
                          f"--output, or delete {path} to start over")
    return old


def _workers(requested: int | None) -> int:
    if requested:
        return max(1, requested)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_study(preset: str | Preset, output: str | Path, seeds: int | None = None,
              progress: bool = True, root: str | None = None, download: bool = False,
              workers: int | None = None, reference: str | Path | None = None,
              trainer: str | None = None) -> Path:
    """Run (or resume) the study into `output`; return the path of report.md.

    `reference` is a results.json of another run (by default the committed
    `standard` reference) whose ranking of the B0 models this run is compared
    with (Kendall's tau). `trainer` names a replacement for the proxy trainer
    ('package.module:function', the signature of
    :func:`~effnet.search.trainer.train_proxy`); tests use a fast fake one.
    """
    from tqdm.auto import tqdm

    from .report import write_report

    t_start = time.perf_counter()
    preset = resolve_preset(preset, seeds)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    data = ProxyData(preset.dataset, root, preset.budgets[0].recipe, download=download)
    num_classes, in_chans = data.num_classes, data.in_chans
    state_path = out / "state.json"
    state = _load_state(state_path, preset.identity())
    if state.get("plan"):
        runs = [Run.from_dict(d) for d in state["plan"]]
    else:
        bar = tqdm(desc="matching MAC budgets", unit="model", disable=not progress,
                   dynamic_ncols=True)
        runs = plan(preset, num_classes, in_chans,
                    progress=lambda s: (bar.set_postfix_str(s, refresh=False), bar.update(1)))
        bar.close()
        state["plan"] = [r.as_dict() for r in runs]
        atomic_write_text(state_path, json.dumps(state, indent=1))
    show = {r.key for r in cam_runs(runs, preset)}
    last = preset.budgets[-1].name
    models_dir = out / "models"
    models_dir.mkdir(exist_ok=True)
    jobs = []
    for b in preset.budgets:
        for r in (r for r in runs if b.covers(r.group)):
            for s in range(preset.seeds):
                key = job_key(b.name, r.key, s)
                keep = (models_dir / f"{r.key}.safetensors") if (
                    b.name == last and s == 0 and r.key in show) else None
                if key not in state["results"] or (keep is not None and not keep.exists()):
                    jobs.append((key, b, r, s, keep))
    # Longest first (by MACs x epochs x images), so parallel workers finish together.
    jobs.sort(key=lambda j: -j[2].cost.macs * j[1].recipe.epochs
              * (j[1].recipe.train_size or 60_000) * max(1.0, j[2].scaled.depth_mult))
    n_workers = min(_workers(workers), max(1, len(jobs)))
    total = preset.seeds * sum(b.covers(r.group) for b in preset.budgets for r in runs)
    bar = tqdm(total=total, desc="training", unit="run", initial=total - len(jobs),
               disable=not progress, dynamic_ncols=True)
    ident = preset.identity()

    def record(key: str, res: dict) -> None:
        state["results"][key] = res
        atomic_write_text(state_path, json.dumps(state, indent=1))
        bar.set_postfix_str(f"{key}: {100 * res['val_top1']:.1f}%", refresh=False)
        bar.update(1)

    def args(b, r: Run, s: int, keep: Path | None) -> tuple:
        return (r.as_dict(), s, b.recipe.as_dict(), ident, root, download,
                str(keep) if keep else None, trainer)

    if n_workers == 1:
        _init_worker(1)
        for key, b, r, s, keep in jobs:
            record(key, train_job(*args(b, r, s, keep)))
    elif jobs:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(1,)) as pool:
            futures = {pool.submit(train_job, *args(b, r, s, keep)): key
                       for key, b, r, s, keep in jobs}
            try:
                for fut in as_completed(futures):
                    record(futures[fut], fut.result())
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    bar.close()
    state["wall_s"] = state.get("wall_s", 0.0) + (time.perf_counter() - t_start)
    if jobs:
        state["workers"] = n_workers
    atomic_write_text(state_path, json.dumps(state, indent=1))
    return write_report(out, preset, runs, state, data, reference=reference)
