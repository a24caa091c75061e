#!/bin/bash
# Issue 19's must-show: the baseline search (regularized evolution + successive halving) against
# random search at the same budget of trainings, 3 search seeds each, every pick retrained with
# 3 evaluation seeds, beside B0 and 10 random specs of the found baseline's MACs.
# Run from the repository root with the project's .venv. Resumable: rerun the same command after
# a kill (the searches live in runs/bench-nas-standard.db, the retrainings in runs.jsonl).
# In pieces, e.g.: --phase search --arms search --search-seeds 0, ... then --phase all.
set -euo pipefail
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
mkdir -p runs results/nas-standard
date -u +"start %F %T UTC" | tee -a results/nas-standard/run.log
/usr/bin/time -v $PY benchmarks/bench_nas.py --preset standard --output results/nas-standard \
    --arms search,random --search-seeds 0,1,2 --eval-seeds 3 --random 10 --workers 2 \
    2>&1 | tee -a results/nas-standard/run.log
date -u +"end %F %T UTC" | tee -a results/nas-standard/run.log
