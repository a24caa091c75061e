"""`effnet study`: the paper's scaling study at proxy scale (Fig. 3, 7, 8; Tables 3, 7)."""

from __future__ import annotations

import argparse
import time

from .options import add_verbose


def cmd_study(args: argparse.Namespace) -> int:
    """Run (or resume) the study and print where its report is."""
    from ..study.run import run_study

    t0 = time.perf_counter()
    report = run_study(args.preset, args.output, seeds=args.seeds, progress=not args.no_progress,
                       root=args.data, download=args.download, workers=args.workers,
                       reference=args.reference, storage=args.storage,
                       study_name=args.study_name, verbose=args.verbose)
    if report is None:
        return 0
    print(f"done in {(time.perf_counter() - t0) / 60:.1f} min; the report is {report.resolve()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `effnet study` to the `effnet` parser."""
    from ..study.presets import PRESETS

    p = sub.add_parser("study", help="the paper's scaling study at proxy scale (Fig. 3, 7, 8; "
                       "Tables 3, 7)",
                       description="Scale small bases by depth, width, resolution and compound "
                       "scaling to equal measured MACs, train each to the end of one recipe "
                       "for several seeds, and report compound against each single dimension "
                       "(Holm-corrected intervals). The method presets run the paper's grid "
                       "search on each base first, then a sweep of directions. Resumable.")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS),
                   help="quick: B0 base, one short budget (12-35 min on 2 cores, what "
                   "`make run` runs); standard: three bases, two budgets (the committed "
                   "reference, about 90 min); full: larger bases and budgets, for a GPU; "
                   "method: the grid search on three bases that keep the cost law (B0 at 14 "
                   "and 20 px), then about a dozen directions at 2x and 4x (days on 2 cores; "
                   "resumable); method-b0: the same on the 14-px B0 base alone, fewer seeds")
    p.add_argument("--output", default="study", help="folder for report.md, plots, results.json")
    p.add_argument("--seeds", type=int, default=None, help="override the preset's seeds (>= 2)")
    p.add_argument("--data", default=None, help="dataset folder (default: the system copy)")
    p.add_argument("--download", action="store_true", help="allow downloading (cifar10)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel training processes, one thread each (default: one per core)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage the workers share: sqlite:///FILE (default: "
                   "OUTPUT/study.db) or postgresql://USER@HOST:PORT/DB for several machines")
    p.add_argument("--study-name", default=None,
                   help="name of the study in the storage (default: effnet-study-PRESET)")
    p.add_argument("--reference", default=None,
                   help="results.json to rank against (default: the committed standard run)")
    p.add_argument("--no-progress", action="store_true",
                   help="no line per finished job (done / total, time left)")
    add_verbose(p)
    p.set_defaults(func=cmd_study)
