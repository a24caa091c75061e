"""Options and argument parsers that several `effnet` command groups share."""

from __future__ import annotations

import argparse
import math

from ..errors import EffnetError

MIN_RESOLUTION = 32  # px: the network downsamples 32x
# The library's parameters whose flag is not --name-with-dashes (ParameterError.with_flags).
FLAGS = {"n_trials": "--trials", "phis": "--phi", "root": "--data", "num_workers": "--workers",
         "allow_swish": "--allow-swish-int8", "method": "--calibration-method"}


def parse_phis(text: str) -> list[float]:
    """'2.5' -> [2.5]; '0,1,2' -> [0, 1, 2]; '1..7' -> [1, 2, ..., 7] (integers, ascending)."""
    try:
        if ".." in text and text.count("..") == 1 and not text.replace("..", "").count("."):
            lo, hi = (int(v) for v in text.split(".."))
            phis = [float(v) for v in range(lo, hi + 1)]
        else:
            phis = [float(v) for v in text.split(",")]
    except ValueError:
        raise EffnetError(f"bad --phi {text!r}: give a number (2.5), a list (0,1,2) "
                          "or a range (1..7)") from None
    if not phis:
        raise EffnetError(f"empty --phi range {text!r}: give LOW..HIGH with LOW <= HIGH, "
                          f"e.g. {hi}..{lo}")
    if not all(math.isfinite(p) for p in phis):
        raise EffnetError(f"bad --phi {text!r}: give finite numbers")
    return phis


def parse_macs(text: str) -> float:
    """'750000', '0.75M', '1.2G' or '300K' -> MACs as a number (> 0)."""
    t = str(text).strip()
    mult = {"k": 1e3, "m": 1e6, "g": 1e9}.get(t[-1:].lower(), 1.0)
    try:
        value = float(t[:-1] if mult != 1.0 else t) * mult
    except ValueError:
        raise EffnetError(f"bad --target-macs {text!r}: give a number of MACs, e.g. 750000 or "
                          "0.75M") from None
    if not (math.isfinite(value) and value > 0):
        raise EffnetError(f"--target-macs must be > 0, got {text!r}: give the MACs you aim at "
                          "(default: the proxy B0's)")
    return value


def check_dataset(name: str) -> None:
    """One line unless `name` is a dataset effnet knows (--dataset)."""
    from ..data.registry import DATASETS

    if name not in DATASETS:
        raise EffnetError(f"unknown --dataset {name!r}: use one of {', '.join(DATASETS)}")


def add_verbose(p: argparse.ArgumentParser) -> None:
    """--verbose: Optuna's own log lines (study, search, nas, autoscale; off by default)."""
    p.add_argument("--verbose", action="store_true", help="show Optuna's own log lines")


def add_heartbeat_options(p: argparse.ArgumentParser) -> None:
    """--heartbeat-interval and --grace-period of the shared Optuna storage (search, nas)."""
    from ..proxy.storage import GRACE_S, HEARTBEAT_S

    p.add_argument("--heartbeat-interval", type=int, default=HEARTBEAT_S,
                   help=f"seconds between a worker's heartbeats (default {HEARTBEAT_S})")
    p.add_argument("--grace-period", type=int, default=GRACE_S,
                   help="seconds without a heartbeat after which a worker counts as dead and "
                   f"its job is run again (default {GRACE_S})")


def check_heartbeat_options(args: argparse.Namespace) -> None:
    """One line unless 1 <= --heartbeat-interval < --grace-period."""
    if not 1 <= args.heartbeat_interval < args.grace_period:
        raise EffnetError("give 1 <= --heartbeat-interval < --grace-period (seconds)")
