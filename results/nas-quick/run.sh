#!/bin/bash
# Must-show (a) of issue 11: a short NAS on the quick proxy, then found vs B0 vs random (3 seeds).
# Run from the repository root with the project's .venv; the storage starts empty.
set -euo pipefail
export OMP_NUM_THREADS=1
PY=.venv/bin/python
rm -f runs/nas-quick.db && mkdir -p runs
date -u +"start %F %T UTC"
/usr/bin/time -v $PY -m effnet nas --trials 16 --workers 2 --output results/nas-quick/search \
    --storage sqlite:///$PWD/runs/nas-quick.db --no-progress
date -u +"search done %F %T UTC"
/usr/bin/time -v $PY benchmarks/bench_nas.py --search results/nas-quick/search \
    --output results/nas-quick --seeds 3 --random 10 --workers 2
date -u +"end %F %T UTC"
