"""The machine's matmul peak and copy bandwidth, the depthwise bytes-moved bound, and each model's
fraction of the peak.

Usage: python benchmarks/bench_peak.py [effnet bench options], e.g. --threads 1 --repeats 7.
Prints a table and writes JSON to benchmarks/results/limits.json (or --json PATH).
"""

import sys
from pathlib import Path

from effnet.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--json" not in args:
        args += ["--json", str(Path(__file__).parent / "results" / "limits.json")]
    sys.exit(main(["bench", "limits", "--with-inference", *args]))
