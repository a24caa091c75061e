"""Step 1 of compound scaling: the alpha/beta/gamma grid search (paper Sec. 3.3), on Optuna.

Every grid point (:func:`~effnet.search.grid.enumerate_grid`) is a candidate:
the base network scaled at phi = 1 (depth alpha, width beta, resolution
gamma), its MACs measured and compared with the target (2x the base's),
trained on a fixed budget for several seeds, and scored on a validation
split held out of the training set.

The study lives in an Optuna RDB storage (SQLite file or PostgreSQL), so:

* rerunning the same command resumes it: finished candidates (complete,
  pruned or off-budget) are never trained again, and candidates whose worker
  died are trained again from scratch;
* several processes or machines can share one study (``postgresql://...``).

Optuna's GridSampler picks the grid points, but on its own it can hand the
same point to two workers (its documentation says so) and it never returns to
a failed point. So every claim of a point happens under a small lock held in
the storage itself (a lock study, created atomically), where the worker checks
which points are done, running or free; a point whose worker died (its process
is gone on this host, or its heartbeat stopped) is queued again.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import socket
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EffnetError
from .budget import Budget, ProxyData, Trainer, train_candidate
from .candidates import Cost, Scaled, measure, scaled_resolution
from .grid import GridPoint, enumerate_grid
from .queue import open_storage as _open_storage
from .queue import storage_url

HEARTBEAT_S = 15.0        # a running candidate's worker writes a heartbeat this often
GRACE_S = 90.0            # ...and counts as dead after this long without one
LOCK_STALE_S = 120.0      # a queue lock held this long belongs to a dead worker
LOCK_SUFFIX = "::queue-lock"
CONFIG_ATTR = "effnet_search"
OWNER_ATTR = "effnet_owner"
DUPLICATE_ATTR = "effnet_duplicate"
DEFAULT_STUDY = "effnet-search"

@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Hide Optuna's notes that heartbeats are experimental and meant for Study.optimize."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        yield


# Classes and input channels of the built-in datasets (image folders are looked up).
DATASET_SHAPES = {"fashion-mnist": (10, 1), "cifar10": (10, 3), "cifar100": (100, 3)}


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search: a stored study only resumes with the same config.

    The base network is ``BASELINES[base]`` scaled by (`base_width`,
    `base_depth`) at `image_size` (1, 1 and 224 in the paper; a smaller base
    makes a cheaper proxy). A candidate whose measured MACs are more than
    `mac_tolerance` (a fraction) away from `target` x the base's is recorded
    but not trained; None trains every candidate.
    """

    base: str = "b0"
    dataset: str = "fashion-mnist"
    image_size: int = 32
    base_width: float = 1.0
    base_depth: float = 1.0
    grid_step: float = 0.05
    target: float = 2.0
    tolerance: float = 0.1
    max_value: float | None = None
    seeds: int = 2
    budget: Budget = field(default_factory=Budget)
    mac_tolerance: float | None = 0.25
    num_classes: int | None = None
    in_chans: int | None = None

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}")
        if self.image_size < 8:
            raise ValueError(f"--image-size must be >= 8, got {self.image_size}")
        if self.mac_tolerance is not None and self.mac_tolerance < 0:
            raise ValueError("--mac-tolerance must be >= 0")

    def shapes(self) -> tuple[int | None, int]:
        """(num_classes, in_chans): given, or known for the built-in datasets."""
        known = DATASET_SHAPES.get(self.dataset, (None, 3))
        return (self.num_classes or known[0], self.in_chans or known[1])

    def points(self) -> list[GridPoint]:
        return enumerate_grid(self.grid_step, self.target, self.tolerance, self.max_value)

    def identity(self) -> dict[str, Any]:
        """The JSON-able settings stored with the study."""
        return json.loads(json.dumps(asdict(self)))

    def scaled(self, point: GridPoint, phi: float = 1.0) -> Scaled:
        """The base scaled by `point` at `phi` (paper Eq. 3)."""
        return Scaled(self.base, self.base_width * point.beta**phi,
                      self.base_depth * point.alpha**phi,
                      scaled_resolution(self.image_size, point.gamma**phi))

    def base_scaled(self) -> Scaled:
        return Scaled(self.base, self.base_width, self.base_depth, self.image_size)


@dataclass
class SearchResult:
    """What a search run leaves: the ranked rows and what this run did."""

    study_name: str
    storage: str
    rows: list[dict]
    trained_now: list[str]
    base_cost: Cost
    running_elsewhere: int = 0

    @property
    def best(self) -> dict | None:
        done = [r for r in self.rows if r["status"] == "complete"]
        return done[0] if done else None


# ---------------------------------------------------------------- storage
def open_storage(url: str, must_exist: bool = False):
    """The queue's storage with this module's heartbeat timings."""
    return _open_storage(url, must_exist, heartbeat_interval=int(HEARTBEAT_S),
                         grace_period=int(GRACE_S))


@contextlib.contextmanager
def queue_lock(storage, study_name: str, stale_s: float = LOCK_STALE_S) -> Iterator[None]:
    """Mutual exclusion between workers of one study, held in the storage.

    Creating a study is atomic (its name is unique), so the lock is a study
    named ``<study>::queue-lock``. A lock whose holder is a dead process on this
    host, or that is held longer than `stale_s`, is broken (by its id, so two
    breakers cannot both win).
    """
    import optuna
    from optuna.exceptions import DuplicatedStudyError

    name = study_name + LOCK_SUFFIX
    first_seen: dict[int, float] = {}
    host = socket.gethostname()
    while True:
        try:
            lock_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], name)
            storage.set_study_user_attr(lock_id, OWNER_ATTR, {"host": host, "pid": os.getpid()})
            break
        except DuplicatedStudyError:
            try:
                held = storage.get_study_id_from_name(name)
                owner = storage.get_study_user_attrs(held).get(OWNER_ATTR) or {}
            except KeyError:
                continue
            since = first_seen.setdefault(held, time.monotonic())
            dead = owner.get("host") == host and not _pid_alive(int(owner.get("pid", 0)))
            if dead or time.monotonic() - since > stale_s:
                with contextlib.suppress(KeyError):
                    storage.delete_study(held)
                continue
            time.sleep(0.02 + random.random() * 0.08)
    try:
        yield
    finally:
        with contextlib.suppress(KeyError):
            storage.delete_study(lock_id)


def _grid_sampler(labels: list[str]):
    import optuna

    class ClaimedGridSampler(optuna.samplers.GridSampler):
        """GridSampler over the grid points; the worker loop, not `Study.stop`, ends the grid."""

        def after_trial(self, study, trial, state, values) -> None:  # noqa: D102
            return None

    return ClaimedGridSampler({"point": labels}, seed=0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: dead for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _point_of(trial) -> str | None:
    if "point" in trial.params:
        return trial.params["point"]
    return trial.system_attrs.get("fixed_params", {}).get("point")


_RANK = {"todo": 0, "failed": 1, "queued": 2, "running": 3, "done": 4}


def _statuses(study, labels: list[str]) -> dict[str, str]:
    """Per grid point: done, running, queued, failed (only failed trials) or todo (none)."""
    from optuna.trial import TrialState

    state_name = {TrialState.COMPLETE: "done", TrialState.PRUNED: "done",
                  TrialState.RUNNING: "running", TrialState.WAITING: "queued",
                  TrialState.FAIL: "failed"}
    status = dict.fromkeys(labels, "todo")
    for t in study.get_trials(deepcopy=False):
        p = _point_of(t)
        if p not in status or t.system_attrs.get(DUPLICATE_ATTR):
            continue
        s = state_name[t.state]
        if _RANK[s] > _RANK[status[p]]:
            status[p] = s
    return status


def _fail_dead_trials(study) -> int:
    """Mark RUNNING trials of dead workers FAIL: process gone on this host, or heartbeat stale.

    Call it under the queue lock.
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.system_attrs.get(OWNER_ATTR)
        # Called under the queue lock, where claims get their owner: a running trial without
        # one belongs to a worker that died while claiming it.
        if owner is None or (owner.get("host") == host and owner.get("pid") != os.getpid()
                             and not _pid_alive(int(owner.get("pid", 0)))):
            with contextlib.suppress(UpdateFinishedTrialError):
                if study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                    failed += 1
    with _quiet_optuna():
        optuna.storages.fail_stale_trials(study)
    return failed


def _claim(study, storage, study_name: str, labels: list[str]):
    """Under the queue lock: a RUNNING trial for a free grid point, or None when none is free."""
    from optuna.trial import TrialState

    with queue_lock(storage, study_name):
        _fail_dead_trials(study)
        for _ in range(len(labels) + 2):
            status = _statuses(study, labels)
            queued = [p for p in labels if status[p] == "queued"]
            failed = [p for p in labels if status[p] == "failed"]
            todo = [p for p in labels if status[p] == "todo"]
            if not (queued or failed or todo):
                return None
            if not queued and failed:
                study.enqueue_trial({"point": failed[0]})
            with _quiet_optuna():
                trial = study.ask()  # pops a queued trial, or GridSampler picks a fresh point
            point = trial.suggest_categorical("point", labels)
            taken = [t for t in study.get_trials(deepcopy=False)
                     if t.number != trial.number and _point_of(t) == point
                     and not t.system_attrs.get(DUPLICATE_ATTR)
                     and t.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)]
            if not taken:
                study._storage.set_trial_system_attr(
                    trial._trial_id, OWNER_ATTR,
                    {"host": socket.gethostname(), "pid": os.getpid()})
                storage.record_heartbeat(trial._trial_id)
                return trial
            # The sampler offered a point that is taken (it only happens after a worker died
            # between asking and choosing): record that, then queue a free point explicitly.
            study._storage.set_trial_system_attr(trial._trial_id, DUPLICATE_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            free = failed + todo
            if free:
                study.enqueue_trial({"point": free[0]})
        return None


class _Heartbeat:
    """Writes the trial's heartbeat every HEARTBEAT_S seconds while training runs."""

    def __init__(self, storage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat only risks a late retry
                self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------- one candidate
def _evaluate(study, trial, point: GridPoint, cfg: SearchConfig, base_cost: Cost,
              data: ProxyData, trainer: Trainer, prune: bool,
              status: Callable[[str], None]) -> None:
    """Measure, check and train one candidate; tell the study how it went."""
    import optuna
    import torch
    from optuna.trial import TrialState

    num_classes, in_chans = cfg.shapes()
    scaled = cfg.scaled(point)
    cost = measure(scaled, num_classes or 10, in_chans)
    ratio = cost.macs / base_cost.macs
    attrs = {**point.as_dict(), "resolution": scaled.resolution,
             "width_mult": scaled.width_mult, "depth_mult": scaled.depth_mult,
             "params": cost.params, "macs": cost.macs, "base_macs": base_cost.macs,
             "mac_ratio": ratio, "mac_target": cfg.target, "mac_distance": ratio / cfg.target - 1}
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    if cfg.mac_tolerance is not None and abs(ratio / cfg.target - 1) > cfg.mac_tolerance:
        trial.set_user_attr("skipped", "off-budget")
        study.tell(trial, state=TrialState.PRUNED)
        return
    epochs = cfg.budget.epochs
    last_step = cfg.seeds * epochs
    tops: list[float] = []
    seconds = 0.0
    reported: set[int] = set()

    def report(step: int, value: float) -> None:
        if step not in reported:
            reported.add(step)
            trial.report(value, step)
            trial.set_user_attr("last_val_top1", value)
            if prune and step < last_step and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

    for i in range(cfg.seeds):
        status(f"{point.label} seed {i + 1}/{cfg.seeds}")
        torch.manual_seed(i)
        model = scaled.build(num_classes=num_classes or 10, in_chans=in_chans)
        t0 = time.perf_counter()
        try:
            out = trainer(model, scaled.resolution, data, cfg.budget, i,
                          lambda epoch, top1, i=i: report(i * epochs + epoch, top1))
            seconds += float(out.get("seconds", time.perf_counter() - t0))
            tops.append(float(out["val_top1"]))
            trial.set_user_attr("val_top1_seeds", tops)
            trial.set_user_attr("seconds", seconds)
            if i + 1 < cfg.seeds:
                report((i + 1) * epochs, float(out["val_top1"]))
        except optuna.TrialPruned:
            seconds += time.perf_counter() - t0
            trial.set_user_attr("seconds", seconds)
            trial.set_user_attr("epochs_done", max(reported) if reported else 0)
            trial.set_user_attr("epochs_budget", cfg.seeds * epochs)
            trial.set_user_attr("skipped", "pruned")
            study.tell(trial, state=TrialState.PRUNED)
            return
    mean = statistics.fmean(tops)
    trial.set_user_attr("val_top1_std", statistics.stdev(tops) if len(tops) > 1 else 0.0)
    trial.set_user_attr("epochs_done", cfg.seeds * epochs)
    study.tell(trial, mean)


# ---------------------------------------------------------------- the search
def load_study(storage, study_name: str, cfg: SearchConfig | None, prune: bool = False):
    """Create or load the study; a stored study must have been made with the same settings."""
    import optuna

    labels = [p.label for p in cfg.points()] if cfg else []
    # Prune from the end of the first seed's run on: a candidate whose first-seed score is
    # below the median of the finished candidates' at the same step skips its other seeds
    # (or remaining epochs). Earlier epochs are too noisy (warm-up) to judge by.
    warmup = cfg.budget.epochs if cfg else 1
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup) if prune
              else optuna.pruners.NopPruner())
    with queue_lock(storage, study_name):
        study = optuna.create_study(storage=storage, study_name=study_name,
                                    sampler=_grid_sampler(labels) if cfg else None,
                                    pruner=pruner, direction="maximize", load_if_exists=True)
        if cfg is not None:
            stored = study.user_attrs.get(CONFIG_ATTR)
            mine = cfg.identity()
            if stored is None:
                study.set_user_attr(CONFIG_ATTR, mine)
            elif stored != mine:
                diff = [k for k in mine if stored.get(k) != mine[k]]
                raise EffnetError(
                    f"study {study_name!r} was run with other settings ({', '.join(diff)} "
                    f"differ): rerun with the same settings to resume it, or pass a new "
                    "--study-name")
    return study


def run_search(cfg: SearchConfig, storage: str = "sqlite:///search.db",
               study_name: str = DEFAULT_STUDY, trainer: Trainer | None = None,
               data: ProxyData | None = None, prune: bool = False, progress: bool = True,
               max_candidates: int | None = None, root: str | None = None,
               download: bool = False) -> SearchResult:
    """Run (or resume) the grid search; return the ranked table of every grid point.

    `max_candidates` stops this worker after training that many (the rest stay
    queued for a rerun or other workers). `trainer` defaults to
    :func:`~effnet.search.budget.train_candidate` (effnet.train.fit).
    """
    from optuna.trial import TrialState
    from tqdm.auto import tqdm

    url = storage_url(storage)
    points = cfg.points()
    if not points:
        raise EffnetError(f"the grid is empty: no (alpha, beta, gamma) with step {cfg.grid_step} "
                          f"has alpha*beta^2*gamma^2 within {cfg.tolerance} of {cfg.target}; "
                          "raise --tolerance or lower --grid-step")
    labels = [p.label for p in points]
    by_label = {p.label: p for p in points}
    num_classes, in_chans = cfg.shapes()
    base_cost = measure(cfg.base_scaled(), num_classes or 10, in_chans)
    store = open_storage(url)
    study = load_study(store, study_name, cfg, prune)
    trainer = trainer or train_candidate
    if data is None:
        data = ProxyData(cfg.dataset, root, in_chans, cfg.budget, download=download)
    done0 = sum(s == "done" for s in _statuses(study, labels).values())
    bar = tqdm(total=len(points), initial=done0, desc="grid search", unit="cand",
               disable=not progress, dynamic_ncols=True)
    trained: list[str] = []
    try:
        while max_candidates is None or len(trained) < max_candidates:
            trial = _claim(study, store, study_name, labels)
            if trial is None:
                break
            label = trial.params["point"]
            try:
                with _Heartbeat(store, trial._trial_id):
                    _evaluate(study, trial, by_label[label], cfg, base_cost, data, trainer,
                              prune, lambda s: bar.set_postfix_str(s, refresh=True))
            except BaseException:
                with contextlib.suppress(Exception):
                    study.tell(trial, state=TrialState.FAIL)
                raise
            trained.append(label)
            bar.update(1)
    finally:
        bar.close()
    status = _statuses(study, labels)
    return SearchResult(study_name, url, ranked_rows(study, points), trained, base_cost,
                        running_elsewhere=sum(s == "running" for s in status.values()))


def ranked_rows(study, points: list[GridPoint]) -> list[dict]:
    """One row per grid point: trained ones ranked by mean validation top-1, then the rest."""
    from optuna.trial import TrialState

    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2,
             TrialState.WAITING: 3, TrialState.FAIL: 4}
    best: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        p = _point_of(t)
        if p is None or t.system_attrs.get(DUPLICATE_ATTR):
            continue
        if p not in best or order[t.state] < order[best[p].state]:
            best[p] = t
    rows = []
    for pt in points:
        t = best.get(pt.label)
        row: dict[str, Any] = {**pt.as_dict(), "label": pt.label}
        if t is None:
            row["status"] = "todo"
        else:
            ua = t.user_attrs
            status = {TrialState.COMPLETE: "complete", TrialState.RUNNING: "running",
                      TrialState.WAITING: "queued", TrialState.FAIL: "failed"}.get(t.state)
            row["status"] = status or ua.get("skipped", "pruned")
            row["trial"] = t.number
            for k in ("resolution", "width_mult", "depth_mult", "params", "macs", "base_macs",
                      "mac_ratio", "mac_distance", "val_top1_seeds", "val_top1_std", "seconds",
                      "epochs_done", "epochs_budget", "last_val_top1"):
                if k in ua:
                    row[k] = ua[k]
            if t.state == TrialState.COMPLETE:
                row["val_top1"] = t.value
        rows.append(row)
    rows.sort(key=lambda r: (r["status"] != "complete", -(r.get("val_top1") or 0.0),
                             r["alpha"], r["beta"], r["gamma"]))
    for i, r in enumerate(rows):
        r["rank"] = i + 1 if r["status"] == "complete" else None
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The ranked table as text (or a Markdown table)."""
    cols = ["rank", "alpha", "beta", "gamma", "a*b^2*g^2", "res", "params(M)", "MACs(M)",
            "x base", "vs target", "val top-1 %", "std", "seeds", "time(s)", "status"]
    lines = []
    for r in rows:
        seeds = r.get("val_top1_seeds") or []
        vals = [str(r["rank"] or "-"), f"{r['alpha']:.2f}", f"{r['beta']:.2f}",
                f"{r['gamma']:.2f}", f"{r['constraint']:.4f}", str(r.get("resolution", "-")),
                f"{r['params'] / 1e6:.3f}" if "params" in r else "-",
                f"{r['macs'] / 1e6:.2f}" if "macs" in r else "-",
                f"{r['mac_ratio']:.2f}" if "mac_ratio" in r else "-",
                f"{100 * r['mac_distance']:+.1f}%" if "mac_distance" in r else "-",
                _pct(r.get("val_top1")) if r["status"] != "pruned"
                else f"({_pct(r.get('last_val_top1'))})",
                _pct(r.get("val_top1_std")), str(len(seeds)),
                f"{r['seconds']:.1f}" if "seconds" in r else "-", r["status"]]
        lines.append(vals)
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(v) + " |" for v in lines]
        return "\n".join(out)
    widths = [max(len(c), *(len(v[i]) for v in lines)) if lines else len(c)
              for i, c in enumerate(cols)]
    out = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    out.append("-" * len(out[0]))
    out += ["  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True)) for vals in lines]
    return "\n".join(out)


def pruning_saving(rows: list[dict]) -> dict[str, float] | None:
    """Time pruning saved, from each pruned candidate's own measured seconds per epoch.

    A pruned candidate that trained `e` of its `E` epochs in `s` seconds would
    have needed about s * E / e; the saving is the sum of s * (E / e - 1).
    """
    pruned = [r for r in rows if r["status"] == "pruned" and r.get("epochs_done")]
    if not pruned:
        return None
    spent = sum(r.get("seconds", 0.0) for r in rows if "seconds" in r)
    saved = sum(r["seconds"] * (r["epochs_budget"] / r["epochs_done"] - 1) for r in pruned)
    return {"pruned": len(pruned), "seconds_spent": spent, "seconds_saved": saved,
            "fraction_saved": saved / (spent + saved) if spent + saved > 0 else 0.0}


def write_results(result: SearchResult, cfg: SearchConfig, out_dir: str | Path) -> tuple[Path,
                                                                                            Path]:
    """Save the ranked table as Markdown and JSON (written to temp names, then renamed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"search-{result.study_name}"
    saving = pruning_saving(result.rows)
    payload = {"study": result.study_name, "storage": result.storage, "config": cfg.identity(),
               "base_params": result.base_cost.params, "base_macs": result.base_cost.macs,
               "target_macs": cfg.target * result.base_cost.macs, "pruning": saving,
               "rows": result.rows}
    md = [f"# Grid search `{result.study_name}`", "",
          f"Base: {cfg.base} (width {cfg.base_width:g}, depth {cfg.base_depth:g}) at "
          f"{cfg.image_size} px on {cfg.dataset}: {result.base_cost.params / 1e6:.3f} M params, "
          f"{result.base_cost.macs / 1e6:.2f} M MACs (measured). Target: {cfg.target:g}x the "
          f"base's MACs; 'vs target' is each candidate's measured distance from it.", "",
          f"Budget per candidate and seed: {cfg.budget.epochs} epoch(s) over "
          f"{cfg.budget.train_size or 'all'} training images, recipe {cfg.budget.recipe}; "
          f"score: mean validation top-1 over {cfg.seeds} seed(s) (validation held out of the "
          "training set). A short budget is a proxy: it ranks candidates by how fast they "
          "learn, not only by how well they end up. A pruned candidate shows, in brackets, "
          "its last validation score before it was stopped.", "",
          format_table(result.rows, True), ""]
    if saving:
        total = saving["seconds_spent"] + saving["seconds_saved"]
        md.append(f"Pruning stopped {saving['pruned']} candidates early and saved about "
                  f"{saving['seconds_saved']:.0f} s of {total:.0f} s "
                  f"({100 * saving['fraction_saved']:.0f}%), from their measured time per epoch.")
    md_path, json_path = out / f"{stem}.md", out / f"{stem}.json"
    atomic_write_text(md_path, "\n".join(md) + "\n")
    atomic_write_text(json_path, json.dumps(payload, indent=1) + "\n")
    return md_path, json_path


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary name in the same folder, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- step 2: the result
def search_studies(storage: str) -> list[str]:
    """Names of the grid-search studies in `storage`."""
    import optuna

    store = open_storage(storage, must_exist=True)
    names = []
    for s in optuna.study.get_all_study_summaries(store, include_best_trial=False):
        if not s.study_name.endswith(LOCK_SUFFIX) and CONFIG_ATTR in s.user_attrs:
            names.append(s.study_name)
    return names


def best_coefficients(storage: str, study_name: str | None = None) -> tuple[Any, dict]:
    """The best (alpha, beta, gamma) of a finished search, as a CompoundScaling and its row.

    `storage` is a URL or an SQLite file path; ``PATH#STUDY`` names the study
    when the storage holds several.
    """
    import optuna
    from optuna.trial import TrialState

    from ..scaling import CompoundScaling

    if study_name is None and "#" in storage:
        storage, study_name = storage.rsplit("#", 1)
    names = search_studies(storage)
    if study_name is None:
        if not names:
            raise EffnetError(f"{storage} holds no grid search: run `effnet search --storage "
                              f"{storage_url(storage)}` first")
        if len(names) > 1:
            raise EffnetError(f"{storage} holds several searches ({', '.join(names)}): pick one "
                              f"with {storage}#NAME")
        study_name = names[0]
    elif study_name not in names:
        raise EffnetError(f"no grid search {study_name!r} in {storage} (found: "
                          f"{', '.join(names) or 'none'})")
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage, True))
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    if not done:
        raise EffnetError(f"search {study_name!r} has no finished candidate yet: run "
                          "`effnet search` with the same settings to finish it")
    t = max(done, key=lambda t: (t.value, -t.number))
    ua = t.user_attrs
    row = {"alpha": ua["alpha"], "beta": ua["beta"], "gamma": ua["gamma"], "val_top1": t.value,
           "val_top1_std": ua.get("val_top1_std"), "trial": t.number, "study": study_name}
    return CompoundScaling(ua["alpha"], ua["beta"], ua["gamma"]), row
