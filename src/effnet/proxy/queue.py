"""A job queue on Optuna's own storage: each job trained once, by any number of workers.

A *job* is one training run (a grid point of the search, a model and seed of
the study), named by a key. :func:`run_jobs` puts every job of a study in
Optuna's trial queue (``Study.enqueue_trial``) and works through it with
``Study.optimize``, which pops WAITING trials atomically, so any number of
processes on any number of machines can share one storage (an SQLite file on
one machine, PostgreSQL across machines).

What happens when things go wrong, all with Optuna's own facilities:

* a worker that dies (SIGKILL, power cut) stops writing its trial's heartbeat
  (``RDBStorage(heartbeat_interval=...)``, written by ``Study.optimize``);
  once it is older than ``grace_period``, the next worker that starts a job
  or waits for one (:func:`optuna.storages.fail_stale_trials`) marks the
  trial FAIL, and ``RetryHeartbeatStaleTrialCallback`` queues the job again,
  up to ``max_retry`` times;
* a job whose work function raises fails (FAIL) and the error reaches the
  caller; other workers leave it alone; the next run of the same study
  queues failed jobs again (the user has presumably fixed the cause);
* a pruned job (``optuna.TrialPruned`` from :meth:`JobContext.report`) is done.

Where Optuna cannot do something, the code says so next to the work-around.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ParameterError
from ..io_utils import first_line
from .storage import CONNECT_TIMEOUT_S, GRACE_S, HEARTBEAT_S, MAX_RETRY, open_storage, storage_url
from .workers import quiet_optuna

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

__all__ = ["CONNECT_TIMEOUT_S", "GRACE_S", "HEARTBEAT_S", "MAX_RETRY", "SKIP_ATTR", "JobContext",
           "finished_jobs", "job_states", "mark_started", "open_storage", "run_jobs", "serve",
           "storage_url", "study_identities"]


QUEUE_ATTR = "effnet_queue"  # study user attr: {"identity": ..., "jobs": ...}, one write
KEY_ATTR = "job"          # user attr of each trial: its job's key (also its only param)
RESULT_ATTR = "result"    # user attr: what the work function returned
PARTIAL_ATTR = "partial"  # user attr: what JobContext.set stored (kept when pruned)
STARTED_ATTR = "started"  # user attr: the number of the trial that reached its job
SKIP_ATTR = "effnet_skipped"  # user attr of trials that ran nothing (their slot was taken)


# ---------------------------------------------------------------- jobs
@dataclass
class JobContext:
    """What a work function gets: its job's key and params, and a way to report progress."""

    key: str
    params: dict
    trial: Any = field(repr=False)
    partial: dict = field(default_factory=dict)
    _steps: set = field(default_factory=set, repr=False)

    def report(self, step: int, value: float) -> None:
        """Report an intermediate score; raise ``optuna.TrialPruned`` if the pruner says stop."""
        import optuna

        if step in self._steps:  # Optuna ignores (and warns about) a step reported twice
            return
        self._steps.add(step)
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")

    def set(self, name: str, value: Any) -> None:
        """Store a JSON-able partial result on the job (kept if the job is pruned)."""
        self.update({name: value})

    def update(self, values: dict[str, Any]) -> None:
        """:meth:`set` for several names at once (one write to the storage)."""
        self.partial.update(json.loads(json.dumps(values)))
        self.trial.set_user_attr(PARTIAL_ATTR, self.partial)


def _key(t) -> str | None:
    """The job key of a trial, or None for trials that ran no job."""
    if SKIP_ATTR in t.user_attrs:
        return None
    return t.user_attrs.get(KEY_ATTR)


def _taken_by_another(trials, key: str, number: int) -> bool:
    """Whether another trial holds job `key`: it finished it, or is ahead of trial `number`.

    ``enqueue_trial(skip_if_exists=True)`` is not atomic (its documentation
    says two processes can enqueue the same params at once), and a rerun
    queues failed jobs again while a retry may be queued too. So a job can sit
    in the queue twice; the trial with the lower number keeps it and the other
    one steps aside. Both decide alike, so exactly one of them runs it.
    """
    from optuna.trial import TrialState

    for t in trials:
        if t.number == number or _key(t) != key:
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            return True
        if t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number < number:
            return True
    return False


def _states(trials, keys) -> dict[str, str]:
    """key -> waiting | running | done | failed, from the trials of a study."""
    from optuna.trial import TrialState

    rank = {TrialState.FAIL: 0, TrialState.WAITING: 1, TrialState.RUNNING: 2,
            TrialState.PRUNED: 3, TrialState.COMPLETE: 3}
    name = {0: "failed", 1: "waiting", 2: "running", 3: "done"}
    best: dict[str, int] = {}
    for t in trials:
        k = _key(t)
        if k is not None:
            best[k] = max(best.get(k, 0), rank[t.state])
    # A job without any trial yet is about to be queued (its creator is still enqueueing).
    return {k: name[best.get(k, 1)] for k in keys}


def _results(trials) -> dict[str, dict]:
    """key -> result of every finished job (pruned ones: their partial results, pruned=True)."""
    from optuna.trial import TrialState

    out: dict[str, dict] = {}
    for t in sorted(trials, key=lambda t: t.number):
        k = _key(t)
        if k is None or k in out:
            continue
        if t.state == TrialState.COMPLETE:
            out[k] = dict(t.user_attrs.get(RESULT_ATTR, {}))
        elif t.state == TrialState.PRUNED:
            out[k] = {**t.user_attrs.get(PARTIAL_ATTR, {}), "pruned": True}
    return out


def _load(storage, study_name: str, pruner=None, create: bool = True):
    import optuna

    if create:
        return optuna.create_study(storage=storage, study_name=study_name, direction="maximize",
                                   load_if_exists=True, pruner=pruner,
                                   sampler=optuna.samplers.RandomSampler(seed=0))
    try:
        return optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    except KeyError:
        raise ParameterError(f"no study {study_name!r} in this storage: check study_name "
                             "(or run it first)", "study_name") from None


def _check_identity(study, study_name: str, identity: dict, jobs: dict[str, dict]) -> None:
    """Store `identity` and the jobs on a new study; refuse a stored one that differs.

    Both go in one user attr, written at once, so that a worker starting at
    the same moment never sees one without the other.
    """
    mine = json.loads(json.dumps({"identity": identity, "jobs": jobs}))
    if study.user_attrs.get(QUEUE_ATTR) is None:
        # Workers set the identity before they queue anything: trials without one come from
        # an older effnet (or another program) and mean something else.
        if study.get_trials(deepcopy=False):
            raise ParameterError(f"study {study_name!r} was not made by this version of effnet: "
                                 "pass a new name (study_name) or another storage",
                                 "study_name", "storage")
        study.set_user_attr(QUEUE_ATTR, mine)
    stored = study.user_attrs[QUEUE_ATTR]  # read back: two new workers may have written at once
    old, new = stored.get("identity") or {}, mine["identity"]
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if not diff and stored.get("jobs") != mine["jobs"]:
        diff = ["jobs"]
    if diff:
        raise ParameterError(f"study {study_name!r} was run with other settings "
                             f"({', '.join(diff)} differ): rerun with the same settings or a new "
                             "name (study_name)", "study_name")


def _enqueue_missing(study, jobs: dict[str, dict]) -> None:
    """Queue every job that has no trial yet, and every failed job once more."""
    trials = study.get_trials(deepcopy=False)
    states = _states(trials, jobs)
    have = {_key(t) for t in trials}
    for key in jobs:
        if key not in have:
            study.enqueue_trial({KEY_ATTR: key}, user_attrs={KEY_ATTR: key}, skip_if_exists=True)
        elif states[key] == "failed":  # skip_if_exists would see the failed trial and skip
            study.enqueue_trial({KEY_ATTR: key}, user_attrs={KEY_ATTR: key})


@dataclass
class _Outcome:
    key: str | None = None
    result: dict | None = None


def _objective(jobs: dict[str, dict], work: Callable[[JobContext], dict], outcome: _Outcome):
    """The function Study.optimize calls: run the popped trial's job, or step aside."""
    import optuna

    def objective(trial) -> float:
        outcome.key = outcome.result = None
        key = trial.user_attrs.get(KEY_ATTR)
        # Optuna has no public "pop a waiting trial or return None": when another worker took
        # the last queued job between our check and ask(), ask() makes a fresh trial. It runs
        # nothing and is closed as PRUNED, marked so that every view ignores it.
        if key not in jobs:
            trial.set_user_attr(SKIP_ATTR, "idle")
            raise optuna.TrialPruned("no job left")
        if _taken_by_another(trial.study.get_trials(deepcopy=False), key, trial.number):
            trial.set_user_attr(SKIP_ATTR, "duplicate")
            raise optuna.TrialPruned(f"job {key} is run by another trial")
        outcome.key = key
        ctx = JobContext(key, dict(jobs[key]), trial)
        trial.set_user_attr(PARTIAL_ATTR, {})  # a retried trial copies the dead attempt's attrs
        mark_started(trial)
        try:
            result = work(ctx)
        except optuna.TrialPruned:
            outcome.result = {**ctx.partial, "pruned": True}
            raise
        except BaseException as err:
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", first_line(err))
            raise
        result = json.loads(json.dumps(result))
        trial.set_user_attr(RESULT_ATTR, result)
        outcome.result = result
        value = result.get("value")
        return float(value) if value is not None else 0.0

    return objective


def run_jobs(storage: str | RDBStorage, study_name: str, jobs: dict[str, dict],
             work: Callable[[JobContext], dict], *, identity: dict, max_jobs: int | None = None,
             pruner=None, on_done: Callable[[str, dict], None] | None = None,
             wait: bool = True, poll_s: float | None = None) -> dict[str, dict]:
    """Run the jobs of study `study_name` (with any other workers); return every finished result.

    `jobs` maps each key to JSON-able params; `work(ctx)` trains one and
    returns a JSON-able dict (its "value", if any, is the trial's value).
    `identity` is stored on the study: a stored study with another identity
    (or other jobs) is refused. `storage` is a URL or path, or an RDBStorage
    from :func:`open_storage` with other heartbeat settings (every worker of
    a study should use the same ones: the worker that checks decides).

    This worker stops after `max_jobs` jobs, or when no job is queued and
    (with `wait`) none runs in another worker: it waits for those to finish,
    or to die and be retried here. `on_done(key, result)` runs after each job
    this worker finished (pruned ones included).
    """
    import optuna

    store = _store(storage)
    with quiet_optuna():
        study = _load(store, study_name, pruner or optuna.pruners.NopPruner())
    _check_identity(study, study_name, identity, jobs)
    _enqueue_missing(study, jobs)
    interval = store.get_heartbeat_interval() or HEARTBEAT_S
    poll = poll_s if poll_s is not None else min(float(interval), 5.0)
    outcome = _Outcome()
    done = [0]

    def next_action() -> str:
        if max_jobs is not None and done[0] >= max_jobs:
            return "stop"
        states = _states(study.get_trials(deepcopy=False), jobs)
        if "waiting" in states.values():
            return "run"
        return "wait" if wait and "running" in states.values() else "stop"

    def after_trial() -> None:
        if outcome.key is not None and outcome.result is not None:
            done[0] += 1
            if on_done is not None:
                on_done(outcome.key, outcome.result)

    serve(study, store, _objective(jobs, work, outcome), next_action, poll=poll,
          after_trial=after_trial, after_reap=lambda: _enqueue_missing(study, jobs))
    return _results(study.get_trials(deepcopy=False))


def serve(study, store: RDBStorage, objective: Callable, next_action: Callable[[], str], *,
          poll: float, after_trial: Callable[[], None] | None = None,
          after_reap: Callable[[], None] | None = None) -> None:
    """The worker loop of every study on shared storage, until `next_action()` says "stop".

    "run": pop one waiting trial (or ask a new one) and run `objective` on it
    (``Study.optimize`` writes its heartbeats), then `after_trial()` if its
    result was recorded. "wait": other workers (or dead ones) hold the last
    trials: sleep `poll` seconds and fail the stale ones. Optuna fails stale
    trials only when a worker starts one, so an idle worker does it here; and a
    worker killed between popping a trial and its first heartbeat leaves a
    trial Optuna never calls stale (it has none): :func:`_fail_never_started`,
    then `after_reap()` when it failed any.
    """
    import optuna

    while (action := next_action()) != "stop":
        if action == "run":
            if _optimize_once(study, objective) and after_trial is not None:
                after_trial()
            continue
        time.sleep(poll)
        with quiet_optuna():
            optuna.storages.fail_stale_trials(study)
        if _fail_never_started(study, store) and after_reap is not None:
            after_reap()


def _optimize_once(study, objective) -> bool:
    """Pop one waiting trial and run it (Study.optimize fails stale trials and heartbeats).

    False when the trial was ended by someone else before we could record it. SQLite has
    no row locks, so two workers can pop the same waiting trial and both run its job; the
    first to finish records it, and Optuna refuses the second's result ("Cannot tell a
    COMPLETE trial"). A worker whose trial was failed as stale (a heartbeat missed under
    load) gets the same refusal for a FAIL trial; the retry copy runs the job again.
    """
    import optuna

    try:
        with quiet_optuna(optuna.logging.ERROR):  # a failed job's error reaches the caller
            study.optimize(objective, n_trials=1)
    except ValueError as err:
        if not str(err).startswith(("Cannot tell a COMPLETE trial", "Cannot tell a FAIL trial")):
            raise
        return False
    return True


def mark_started(trial) -> None:
    """Mark `trial` as having reached its job (STARTED_ATTR), after writing its first heartbeat.

    Optuna's heartbeat thread writes its first beat a moment after the trial
    starts; a worker killed after the mark but before that beat left a trial
    that was neither "never started" (:func:`_fail_never_started`) nor stale to
    Optuna (no heartbeat at all), and the other workers waited for it forever.
    Writing one beat first closes that gap: a marked trial always has one.
    """
    storage = trial.storage
    if getattr(storage, "get_heartbeat_interval", lambda: None)():
        storage.record_heartbeat(trial._trial_id)  # Optuna exposes no public trial id here
    trial.set_user_attr(STARTED_ATTR, trial.number)


def _fail_never_started(study, store: RDBStorage) -> int:
    """Fail RUNNING trials that never reached their job within the grace period; count them.

    A live worker marks its trial (STARTED_ATTR) moments after popping it, so a
    trial still unmarked a whole grace period after it started belongs to a
    worker that died in between, before Optuna's first heartbeat: Optuna would
    call it running forever. Failing it lets the waiting worker queue the job
    again (:func:`_enqueue_missing`).
    """
    from datetime import datetime, timedelta

    from optuna.trial import TrialState

    grace = timedelta(seconds=store.grace_period or 2 * (store.get_heartbeat_interval() or 60))
    now, failed = datetime.now(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = t.datetime_start
        if t.user_attrs.get(STARTED_ATTR) != t.number and started and now - started > grace:
            with contextlib.suppress(Exception):  # another worker may have failed it first
                study.tell(t.number, state=TrialState.FAIL)
                failed += 1
    return failed


def _store(storage: str | RDBStorage, must_exist: bool = False) -> RDBStorage:
    """`storage` opened with :func:`open_storage`, or an RDBStorage it made (own intervals)."""
    return open_storage(storage, must_exist) if isinstance(storage, str) else storage


def finished_jobs(storage: str | RDBStorage, study_name: str) -> dict[str, dict]:
    """key -> result of every finished job of a stored study (read-only; for reports)."""
    study = _load(_store(storage, must_exist=True), study_name, create=False)
    return _results(study.get_trials(deepcopy=False))


def job_states(storage: str | RDBStorage, study_name: str) -> dict[str, str]:
    """key -> waiting | running | done | failed for every job of a stored study."""
    study = _load(_store(storage, must_exist=True), study_name, create=False)
    jobs = (study.user_attrs.get(QUEUE_ATTR) or {}).get("jobs") or {}
    return _states(study.get_trials(deepcopy=False), jobs)


def study_identities(storage: str | RDBStorage) -> dict[str, dict]:
    """Name -> identity of every study in `storage` that :func:`run_jobs` made."""
    import optuna

    store = _store(storage, must_exist=True)
    return {s.study_name: s.user_attrs[QUEUE_ATTR]["identity"]
            for s in optuna.study.get_all_study_summaries(store, include_best_trial=False)
            if QUEUE_ATTR in s.user_attrs}
