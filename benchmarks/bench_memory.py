"""What one training step keeps for backward, op by op and module by module (timm, effnet, effnet
memory-efficient).

Usage: python benchmarks/bench_memory.py [effnet bench options], e.g. --threads 1 --repeats 7.
Prints a table and writes JSON to benchmarks/results/memory.json (or --json PATH).
"""

import sys
from pathlib import Path

from effnet.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--json" not in args:
        args += ["--json", str(Path(__file__).parent / "results" / "memory.json")]
    sys.exit(main(["bench", "memory", *args]))
