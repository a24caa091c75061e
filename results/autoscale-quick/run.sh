#!/bin/bash
# Must-show (b) of issue 11: `effnet autoscale --preset quick` from a fresh clone, timed.
set -euo pipefail
rm -rf /tmp/fresh-i11
git clone -q --branch i11 /work/i11 /tmp/fresh-i11
cd /tmp/fresh-i11
git log --oneline -1
export PYTHONPATH=src OMP_NUM_THREADS=1
date -u +"start %F %T UTC"
/usr/bin/time -v /work/main/.venv/bin/python -m effnet autoscale --preset quick --phi 1..3 \
    --output runs/autoscale-quick
date -u +"end %F %T UTC"
