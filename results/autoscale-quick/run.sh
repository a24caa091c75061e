#!/bin/bash
# Issue 19, must-show: `effnet autoscale --preset quick` (at most 20 min on 2 cores) with the
# improved search (one epoch on all training images per trial, successive halving, evolution,
# the top 2 retrained with 3 seeds). Run from the repository root with the project's .venv.
set -euo pipefail
date -u +"start %F %T UTC"
/usr/bin/time -v .venv/bin/effnet autoscale --preset quick --phi 1..3 --output runs/autoscale-quick
date -u +"end %F %T UTC"
