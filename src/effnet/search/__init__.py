"""Compound scaling end to end: the alpha/beta/gamma grid search and the scaling study.

* :mod:`.grid`: the (alpha, beta, gamma) grid of paper Eq. 3;
* :mod:`.candidates`: scaled networks and their measured cost;
* :mod:`.budget`: the trainer seam (a fixed, short training budget);
* :mod:`.search`: the resumable, shareable Optuna grid search (`effnet search`);
* :mod:`.study`: Fig. 3, Fig. 7, Fig. 8 / Table 7 and Table 3 at proxy scale (`effnet study`);
* :mod:`.report`: report.md, PNG plots and results.json.
"""

from .budget import Budget, ProxyData, train_candidate
from .candidates import Cost, Scaled, measure
from .grid import GridPoint, enumerate_grid
from .search import SearchConfig, best_coefficients, run_search

__all__ = [
    "Budget",
    "Cost",
    "GridPoint",
    "ProxyData",
    "Scaled",
    "SearchConfig",
    "best_coefficients",
    "enumerate_grid",
    "measure",
    "run_search",
    "train_candidate",
]
