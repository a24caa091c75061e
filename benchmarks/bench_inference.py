"""Inference images/s at batch 1 and 32: timm, torchvision, effnet eager, effnet fast paths, ONNX
Runtime.

Usage: python benchmarks/bench_inference.py [effnet bench options], e.g. --threads 1 --repeats 7.
Prints a table and writes JSON to benchmarks/results/inference.json (or --json PATH).
"""

import sys
from pathlib import Path

from effnet.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--json" not in args:
        args += ["--json", str(Path(__file__).parent / "results" / "inference.json")]
    sys.exit(main(["bench", "inference", *args]))
