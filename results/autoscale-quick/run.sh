#!/bin/bash
# Must-show (b) of issue 11: `effnet autoscale --preset quick` in a fresh clone, timed.
# The clone is the one `make run` was timed in (results/study-quick/RUN.md): its .venv is what
# `make run` installed from scratch; `git pull` brought it to the commit named in RUN.md.
set -euo pipefail
cd /tmp/fresh
git pull -q
git log --oneline -1
/usr/bin/time -v .venv/bin/effnet autoscale --preset quick --phi 1..3 --output runs/autoscale-quick
