#!/usr/bin/env bash
# B0 on a lent CUDA GPU: effnet against timm, training and inference throughput,
# bf16 autocast and channels_last. Run from anywhere; needs no install and no network.
# Writes $OUT/gpu_check.json (or benchmarks/results/gpu_check.json) and prints tables.
# Usage: bash benchmarks/gpu_check.sh [--budget SECONDS] [--no-compile] [--train-batch N]
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
echo "== $($PY --version 2>&1) at $(command -v "$PY")"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi: not available"
missing=""
for mod in torch timm numpy; do
  "$PY" -c "import $mod" 2>/dev/null || missing="$missing $mod"
done
"$PY" -c 'import torch, timm' 2>&1 | tail -1
if [ -n "$missing" ]; then
  echo "MISSING python modules:$missing"
fi
case " $missing " in
  *" torch "*) echo "gpu_check: cannot run without torch"; exit 3 ;;
esac
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
"available:", torch.cuda.is_available())'
OUT_DIR=${OUT:-benchmarks/results}
mkdir -p "$OUT_DIR"
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" timeout 285 "$PY" benchmarks/gpu_check.py \
  --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
