"""Paper Table 4 on this machine: EfficientNet-B1 vs ResNet-152 latency at batch 1 on one thread
(paper: 5.7x).

Usage: python benchmarks/bench_table4.py [effnet bench options], e.g. --threads 1 --repeats 7.
Prints a table and writes JSON to benchmarks/results/table4.json (or --json PATH).
"""

import sys
from pathlib import Path

from effnet.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--json" not in args:
        args += ["--json", str(Path(__file__).parent / "results" / "table4.json")]
    sys.exit(main(["bench", "table4", *args]))
