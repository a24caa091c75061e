"""Training-step images/s, bytes kept for backward and peak memory at batch 64: timm, torchvision,
effnet plain / memory-efficient / checkpointed.

Usage: python benchmarks/bench_training.py [effnet bench options], e.g. --threads 1 --repeats 7.
Prints a table and writes JSON to benchmarks/results/training.json (or --json PATH).
"""

from _runner import run

if __name__ == "__main__":
    run("training", "training")
