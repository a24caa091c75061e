"""The `effnet` command: one module per command group, the options they share in :mod:`.options`.

* :mod:`.models`: models, profile, scale (the paper's models, their cost, Eq. 3);
* :mod:`.inference`: convert, export, predict, eval;
* :mod:`.train`: train; :mod:`.bench`: bench;
* :mod:`.search`: search (step 1); :mod:`.study`: study; :mod:`.nas`: nas, autoscale;
* :mod:`.app`: the parser and :func:`main`, the entry point (one-line errors, exit codes).
"""

from .app import build_parser, main
from .options import parse_phis

__all__ = ["build_parser", "main", "parse_phis"]
