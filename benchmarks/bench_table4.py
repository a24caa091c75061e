"""Paper Table 4 on this machine: EfficientNet-B1 vs ResNet-152 latency at batch 1 on one thread
(paper: 5.7x).

Usage: python benchmarks/bench_table4.py [effnet bench options], e.g. --threads 1 --repeats 7.
Prints a table and writes JSON to benchmarks/results/table4.json (or --json PATH).
"""

from _runner import run

if __name__ == "__main__":
    run("table4", "table4")
