"""What one training step keeps for backward, op by op and module by module (timm, effnet, effnet
memory-efficient).

Usage: python benchmarks/bench_memory.py [effnet bench options], e.g. --threads 1 --repeats 7.
Prints a table and writes JSON to benchmarks/results/memory.json (or --json PATH).
"""

from _runner import run

if __name__ == "__main__":
    run("memory", "memory")
