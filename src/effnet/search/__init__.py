"""Compound scaling step 1: the alpha/beta/gamma grid search (paper Sec. 3.3).

* :mod:`.grid`: the (alpha, beta, gamma) grid of paper Eq. 3;
* :mod:`.config`, :mod:`.run`, :mod:`.results`: the search (`effnet search`) and its table.

Each grid point is a job of the proxy engine (:mod:`effnet.proxy`): scaled,
measured and trained small by the same trainer the scaling study uses.
"""

from .config import SearchConfig
from .grid import GridPoint, enumerate_grid
from .results import best_coefficients
from .run import run_search

__all__ = [
    "GridPoint",
    "SearchConfig",
    "best_coefficients",
    "enumerate_grid",
    "run_search",
]
