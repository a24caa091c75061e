"""Every CPU engine head to head (issue 21): eager, optimize_for_inference, TorchScript,
torch.compile, ONNX Runtime, OpenVINO and INT8, each in its own process, against timm with
each engine's defaults; B0, Lite0 and B3 at their resolutions, batch 1 and 32, 1 and all threads.

Usage: python benchmarks/bench_deploy.py [effnet bench options], e.g. --threads 1,all --rounds 7.
Prints a table and writes JSON to benchmarks/results/deploy.json (or --output PATH).
"""

from _runner import run

if __name__ == "__main__":
    run("deploy", "deploy")
