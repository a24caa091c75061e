"""Names the old scaling study (search/study.py, search/report.py) still imports from here.

The grid search now lives in :mod:`.config`, :mod:`.queue`, :mod:`.run` and
:mod:`.results`. Delete this module together with search/study.py when the
study moves to :mod:`effnet.study`.
"""

from __future__ import annotations

from ..train.checkpoint import atomic_write_text

# Classes and input channels of the built-in datasets (the old study's only use).
DATASET_SHAPES = {"fashion-mnist": (10, 1), "cifar10": (10, 3), "cifar100": (100, 3)}

__all__ = ["DATASET_SHAPES", "atomic_write_text"]
