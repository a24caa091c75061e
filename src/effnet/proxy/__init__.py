"""The proxy-experiment engine: many small models trained on a budget, by any number of workers.

Shared by the grid search (:mod:`effnet.search`), the scaling study
(:mod:`effnet.study`) and the baseline search (:mod:`effnet.nas`):

* :mod:`.candidates`: a baseline scaled in width, depth and resolution (:class:`Scaled`),
  the proxy network built from it, and its measured cost (:func:`measure`);
* :mod:`.trainer`: the proxy trainer (:class:`ProxyRecipe`, :class:`ProxyData`,
  :func:`train_proxy`);
* :mod:`.queue`: jobs on Optuna's storage, shared by any number of workers (:func:`run_jobs`);
* :mod:`.storage`: Optuna's RDB storage with heartbeats and retries (:func:`open_storage`);
* :mod:`.workers`: worker processes (:func:`run_parallel`) and Optuna kept quiet.

The names below load their module on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "Cost": "candidates",
    "Scaled": "candidates",
    "measure": "candidates",
    "ProxyData": "trainer",
    "ProxyRecipe": "recipe",
    "train_proxy": "trainer",
    "JobContext": "queue",
    "run_jobs": "queue",
    "open_storage": "storage",
}

__all__ = ["Cost", "JobContext", "ProxyData", "ProxyRecipe", "Scaled", "measure", "open_storage",
           "run_jobs", "train_proxy"]

if TYPE_CHECKING:
    from .candidates import Cost, Scaled, measure
    from .queue import JobContext, run_jobs
    from .recipe import ProxyRecipe
    from .storage import open_storage
    from .trainer import ProxyData, train_proxy

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
