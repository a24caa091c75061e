"""Compound scaling step 1: the alpha/beta/gamma grid search (paper Sec. 3.3).

* :mod:`.grid`: the (alpha, beta, gamma) grid of paper Eq. 3;
* :mod:`.candidates`: scaled networks and their measured cost;
* :mod:`.trainer`: the proxy trainer (``Recipe``, ``ProxyData``, ``train_proxy``), shared with
  the scaling study;
* :mod:`.queue`: jobs on Optuna's storage, shared by any number of workers (``run_jobs``);
* :mod:`.config`, :mod:`.run`, :mod:`.results`: the search (`effnet search`) and its table.
"""

from .candidates import Cost, Scaled, measure
from .config import SearchConfig
from .grid import GridPoint, enumerate_grid
from .results import best_coefficients
from .run import run_search
from .trainer import ProxyData, Recipe, train_proxy

__all__ = [
    "Cost",
    "GridPoint",
    "ProxyData",
    "Recipe",
    "Scaled",
    "SearchConfig",
    "best_coefficients",
    "enumerate_grid",
    "measure",
    "run_search",
    "train_proxy",
]
