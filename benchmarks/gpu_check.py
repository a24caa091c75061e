"""B0 on a CUDA GPU: effnet against timm, inference and training, fp32 / bf16, channels_last.

Run by benchmarks/gpu_check.sh (PYTHONPATH=src, no install needed). Stages run
in order of importance and stop when the time budget is spent; every stage
that finished is in the printed tables and in OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results", help="folder for gpu_check.json")
    p.add_argument("--budget", type=float, default=240.0, help="seconds for all stages")
    p.add_argument("--model", default="b0")
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--infer-batches", default="1,256")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile stage")
    p.add_argument("--device", default="cuda", help="cuda; cpu only to dry-run this script")
    p.add_argument("--resolution", type=int, default=None, help="default: the model's own")
    args = p.parse_args()
    start = time.time()

    import torch

    from effnet import bench

    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; nothing to measure")
        return 1
    have_timm = importlib.util.find_spec("timm") is not None
    if not have_timm:
        print("gpu_check: timm is missing: measuring effnet only (no ratios)")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    report: dict[str, Any] = {
        "device": bench.describe_device(torch.device(dev)), "torch": torch.__version__,
        "cuda": torch.version.cuda, "timm": _version("timm"), "tf32": True, "stages": {}}
    print(f"device {report['device']}, torch {report['torch']}, CUDA {report['cuda']}, "
          f"timm {report['timm']}", flush=True)
    batches = [int(b) for b in args.infer_batches.split(",")]
    base = ["timm"] if have_timm else []
    stages = [
        ("training_bf16_cl", lambda: bench.training(
            args.model, args.train_batch, base + ["effnet", "effnet-memeff"], args.resolution,
            repeats=5,
            device=dev, amp=True, channels_last=True, min_time=1.0)),
        ("inference_bf16_cl", lambda: bench.inference(
            args.model, batches, base + ["effnet", "effnet-fast"], args.resolution, repeats=5,
            min_time=0.3,
            device=dev, amp=True)),
        ("inference_fp32_cl", lambda: bench.inference(
            args.model, batches, base + ["effnet", "effnet-fast"], args.resolution, repeats=5,
            min_time=0.3,
            device=dev, amp=False)),
        ("training_fp32_cl", lambda: bench.training(
            args.model, args.train_batch, base + ["effnet", "effnet-memeff"], args.resolution,
            repeats=5,
            device=dev, amp=False, channels_last=True, min_time=1.0)),
    ]
    if not args.no_compile:
        stages.append(("inference_bf16_compile", lambda: bench.inference(
            args.model, batches[-1:], base + ["effnet-fast", "effnet-compile"], args.resolution,
            repeats=5, min_time=0.3, device=dev, amp=True)))
    out = Path(args.out)
    for name, run in stages:
        left = args.budget - (time.time() - start)
        if left < 20:
            print(f"\n[{name}] skipped: {left:.0f} s of the budget left", flush=True)
            report["stages"][name] = {"skipped": "time budget"}
            continue
        print(f"\n[{name}]", flush=True)
        t0 = time.time()
        try:
            res = run()
            report["stages"][name] = {**res.as_dict(), "wall_s": time.time() - t0}
            print(bench.format_table(res), flush=True)
        except Exception as err:  # report and go on with the next stage
            traceback.print_exc(limit=3)
            report["stages"][name] = {"error": f"{type(err).__name__}: {err}"}
        if dev == "cuda":
            torch.cuda.empty_cache()
        bench.write_json(report, out / "gpu_check.json")
    print(f"\nwrote {out / 'gpu_check.json'} after {time.time() - start:.0f} s")
    return 0


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(__import__(module), "__version__", "?")


if __name__ == "__main__":
    sys.exit(main())
