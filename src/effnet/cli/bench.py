"""`effnet bench`: inference, training and memory speed against timm and torchvision."""

from __future__ import annotations

import argparse
import sys

from ..errors import EffnetError

TASKS = ("inference", "training", "memory", "table4", "limits", "deploy")


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise EffnetError(f"bad batch list {text!r}: give numbers separated by commas, "
                         "e.g. 1,32") from None
    if not values or min(values) < 1:
        raise EffnetError(f"bad batch list {text!r}: batch sizes must be >= 1")
    return values


def _threads(text: str) -> list[int]:
    """--threads: a count, or several separated by commas ('all': every CPU of this process)."""
    from ..bench.deploy import all_threads

    try:
        values = [all_threads() if v.strip() == "all" else int(v) for v in text.split(",")
                  if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad thread count {text!r}: give a number, 'all', or "
                                         "several separated by commas (deploy)") from None
    return values


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


def _progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run one benchmark, print its table and optionally write JSON."""
    from .. import bench

    _check_args(args)
    progress = None if args.quiet else _progress
    results = TASK_RUNNERS[args.task](args, progress)
    print(bench.format_table(results))
    if args.json:
        path = bench.write_json(results, args.json)
        print(f"wrote {path}")
    return 0


def _check_args(args: argparse.Namespace) -> None:
    """Threads, repeats (default 7, training 3) and the device, checked before any work."""
    if args.threads is not None and (not args.threads or min(args.threads) < 1):
        raise EffnetError("--threads must be >= 1")
    if args.task != "deploy" and args.threads is not None:
        if len(args.threads) > 1:
            raise EffnetError(f"--threads takes one count for {args.task} (several are for "
                              "deploy)")
        args.threads = args.threads[0]
    if args.repeats is None:
        args.repeats = 3 if args.task == "training" else 7
    if args.repeats < 1:
        raise EffnetError("--repeats must be >= 1")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise EffnetError("--device cuda: no CUDA device here; use --device cpu")


def _inference(args: argparse.Namespace, progress):
    from .. import bench

    impls = _names(args.impls) or list(bench.INFERENCE_IMPLS)
    if args.compile and "effnet-compile" not in impls:
        impls.append("effnet-compile")
    return bench.inference(args.model, _ints(args.batch or "1,32"), impls, args.resolution,
                           args.repeats, threads=args.threads, device=args.device, amp=args.amp,
                           progress=progress)


def _training(args: argparse.Namespace, progress):
    from .. import bench

    impls = _names(args.impls) or list(bench.TRAINING_IMPLS)
    return bench.training(args.model, _ints(args.batch or "64")[0], impls, args.resolution,
                          args.repeats, threads=args.threads, device=args.device, amp=args.amp,
                          channels_last=args.channels_last, peak=not args.no_peak,
                          progress=progress)


def _memory(args: argparse.Namespace, progress):
    from .. import bench

    impls = _names(args.impls) or ["timm", "effnet", "effnet-memeff"]
    return bench.memory_report(args.model, _ints(args.batch or "8")[0], args.resolution, impls)


def _table4(args: argparse.Namespace, progress):
    from .. import bench

    return bench.table4(args.repeats, threads=args.threads or 1, progress=progress)


def _limits(args: argparse.Namespace, progress):
    from .. import bench

    rows: tuple[bench.InferenceRow, ...] | None = None
    if args.with_inference:
        rows = bench.inference(args.model, _ints(args.batch or "1,32"),
                               ["timm", "effnet", "effnet-fast", "effnet-ts", "onnxruntime"],
                               args.resolution, args.repeats, threads=args.threads,
                               progress=progress).rows
    return bench.machine_limits(args.model, args.threads, rows)


def _deploy(args: argparse.Namespace, progress):
    from ..bench.deploy import DEPLOY_MODELS, deploy

    if args.device != "cpu":
        raise EffnetError("deploy compares CPU engines: use --device cpu")
    return deploy(_names(args.models) or list(DEPLOY_MODELS), _ints(args.batch or "1,32"),
                  args.threads, _names(args.impls), args.repeats, isolate=not args.in_process,
                  resolution=args.resolution, peak_size=args.peak_size, progress=progress,
                  command=" ".join(["effnet", *sys.argv[1:]]))


# Each task of `effnet bench`: (args, progress callback) -> its result.
TASK_RUNNERS = {"inference": _inference, "training": _training, "memory": _memory,
                "table4": _table4, "limits": _limits, "deploy": _deploy}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `effnet bench` (also used by the scripts in benchmarks/)."""
    p.add_argument("task", choices=TASKS,
                   help="inference: images/s at --batch sizes; training: step images/s and "
                        "memory; memory: what backward keeps, op by op; table4: paper Table 4 "
                        "(B1 vs ResNet-152, batch 1, one thread); limits: matmul peak and the "
                        "depthwise bytes-moved bound")
    p.add_argument("--model", default="b0", help="b0..b7 (timm and torchvision must have it)")
    p.add_argument("--models", default=None,
                   help="deploy: comma-separated models (default b0,lite0,b3)")
    p.add_argument("--batch", "--batch-sizes", dest="batch", default=None,
                   help="batch sizes, e.g. 1,32 (inference and deploy, default) or 64 "
                        "(training)")
    p.add_argument("--resolution", type=int, default=None, help="default: the model's own")
    p.add_argument("--impls", "--engines", dest="impls", default=None,
                   help="comma-separated implementations (default: all of the task's; deploy: "
                        "every installed engine and the timm-* reference rows)")
    p.add_argument("--repeats", "--rounds", dest="repeats", type=int, default=None,
                   help="rounds, medians are reported (default 7; training 3)")
    p.add_argument("--threads", type=_threads, default=None,
                   help="torch intra-op threads; deploy: a list such as 1,all (the default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--compile", action="store_true",
                   help="inference: add optimize_for_inference(compile=True) (slow start)")
    p.add_argument("--channels-last", action="store_true", help="training in channels_last")
    p.add_argument("--no-peak", action="store_true",
                   help="training: skip the peak-memory child processes")
    p.add_argument("--with-inference", action="store_true",
                   help="limits: also measure models' fraction of the matmul peak")
    p.add_argument("--in-process", action="store_true",
                   help="deploy: run every engine in this process (quicker start, no isolation)")
    p.add_argument("--peak-size", type=int, default=2048,
                   help="deploy: matrix size of the matmul peak measurement (default 2048)")
    p.add_argument("--json", "--output", dest="json", default=None,
                   help="write the results here as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the `effnet` parser."""
    from ..bench.impls import IMPL_HELP

    impls = "; ".join(f"{k}: {v}" for k, v in IMPL_HELP.items())
    p = sub.add_parser("bench", help="speed and memory against timm and torchvision",
                       description="Benchmarks on the same weights, alternating between "
                                   f"implementations, medians over rounds. Implementations: "
                                   f"{impls}.")
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
