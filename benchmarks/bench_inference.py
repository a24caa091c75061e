"""Inference images/s at batch 1 and 32: timm, torchvision, effnet eager, effnet fast paths, ONNX
Runtime.

Usage: python benchmarks/bench_inference.py [effnet bench options], e.g. --threads 1 --repeats 7.
Prints a table and writes JSON to benchmarks/results/inference.json (or --json PATH).
"""

from _runner import run

if __name__ == "__main__":
    run("inference", "inference")
