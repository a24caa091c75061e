"""Shared by the bench_*.py scripts: run `effnet bench TASK`, JSON to benchmarks/results/."""

import sys
from pathlib import Path

from effnet.cli import main


def run(task: str, result_name: str, *fixed: str) -> None:
    """Run `effnet bench task *fixed *argv`, writing results/<result_name>.json unless --json
    (or --output) is given."""
    args = sys.argv[1:]
    if not {"--json", "--output"} & {a.split("=")[0] for a in args}:
        args += ["--json", str(Path(__file__).parent / "results" / f"{result_name}.json")]
    sys.exit(main(["bench", task, *fixed, *args]))
