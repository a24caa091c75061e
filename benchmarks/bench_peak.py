"""The machine's matmul peak and copy bandwidth, the depthwise bytes-moved bound, and each model's
fraction of the peak.

Usage: python benchmarks/bench_peak.py [effnet bench options], e.g. --threads 1 --repeats 7.
Prints a table and writes JSON to benchmarks/results/limits.json (or --json PATH).
"""

from _runner import run

if __name__ == "__main__":
    run("limits", "limits", "--with-inference")
