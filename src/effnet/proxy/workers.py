"""How the proxy engine's worker processes run: Optuna kept quiet, one torch thread, spawned pools.

* :func:`quiet_optuna`: hides Optuna's experimental-feature warnings (heartbeats,
  the retry callback, TPE's ``constant_liar``) and, with `level`, its log lines;
* :func:`optuna_warnings_only`, :func:`start_worker`: what a command or a spawned worker
  process sets first;
* :func:`run_parallel`: the same function in several spawned processes, or in this one.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def quiet_optuna(level: int | None = None) -> Iterator[None]:
    """Hide Optuna's notes that a feature is experimental; with `level`, also log only that.

    ``quiet_optuna(optuna.logging.ERROR)`` keeps a failed job's traceback out of
    the log: the error reaches the caller anyway. The log level is restored on exit.
    """
    import optuna
    from optuna.exceptions import ExperimentalWarning

    before = optuna.logging.get_verbosity()
    if level is not None:
        optuna.logging.set_verbosity(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            yield
    finally:
        if level is not None:
            optuna.logging.set_verbosity(before)


def optuna_warnings_only() -> None:
    """Optuna logs warnings and errors only, from now on (not a line per trial)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def start_worker(threads: int = 1) -> None:
    """Set up a worker process: `threads` torch threads, Optuna's notices off (a spawned
    process starts with the defaults)."""
    import torch

    torch.set_num_threads(max(1, threads))
    optuna_warnings_only()


def run_parallel(fn: Callable[..., Any], calls: list[tuple]) -> list[Any]:
    """``fn(*args)`` for each `args` of `calls`, each in its own spawned process; the results.

    One call runs here, in this process. Spawned (not forked) processes start
    without this one's threads and torch state; the first error is raised here.
    """
    if len(calls) == 1:
        return [fn(*calls[0])]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(len(calls), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        return [fut.result() for fut in futures]
