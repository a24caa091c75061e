#!/usr/bin/env bash
# INT8 accuracy on real data (issue 21). Run from the repository root on a quiet machine:
#   bash results/int8/run.sh            # about 25-35 min on 2 free cores (see RUN.md)
# Writes results/int8/{lite0,b0,photos}.json and int8.json (the three merged), plus the two
# training runs under runs/int8-*/ (not committed).
#   1. Lite0 fine-tuned from the packaged ImageNet weights, and B0 from scratch (no ImageNet
#      B0 weights ship offline), 3 epochs each on Fashion-MNIST at 32 px;
#   2. each: FP32 vs INT8 top-1 on the 10,000 test images, both in ONNX Runtime, INT8
#      calibrated on 500 training images (`effnet export --int8 --calibration DIR`);
#   3. the packaged ImageNet Lite0: INT8 vs FP32 top-1 agreement on scikit-image's photos.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
EPOCHS=${EPOCHS:-3}
SIZE=${SIZE:-32}
THREADS=${THREADS:-2}
OUT=results/int8
export OMP_NUM_THREADS=$THREADS

date -u +"start %Y-%m-%dT%H:%M:%SZ"
# Lite0: fine-tuned from ImageNet (greyscale repeated to the 3 channels its stem expects)
$PY -m effnet train --model lite0 --pretrained packaged --dataset fashion-mnist --image-size "$SIZE" \
    --epochs "$EPOCHS" --batch-size 128 --bn-momentum 0.1 --threads "$THREADS" --workers 1 \
    --no-progress --output runs/int8-lite0 --resume
# B0 from scratch (Swish: quantized only with --allow-swish-int8, which is the point here)
$PY -m effnet train --model b0 --dataset fashion-mnist --image-size "$SIZE" --epochs "$EPOCHS" \
    --batch-size 128 --zero-init-head --threads "$THREADS" --workers 1 --no-progress \
    --output runs/int8-b0 --resume
$PY benchmarks/int8_accuracy.py fashion runs/int8-lite0 --calibration-images 500 --output $OUT/lite0.json
$PY benchmarks/int8_accuracy.py fashion runs/int8-b0 --calibration-images 500 --allow-swish-int8 \
    --output $OUT/b0.json
$PY benchmarks/int8_accuracy.py photos --output $OUT/photos.json
$PY - <<'PYEOF'
import json
from pathlib import Path
out = Path("results/int8")
merged = {k: json.loads((out / f"{k}.json").read_text()) for k in ("lite0", "b0", "photos")}
(out / "int8.json").write_text(json.dumps(merged, indent=1))
for k in ("lite0", "b0"):
    r = merged[k]
    print(f"{k}: FP32 {r['fp32_top1']:.2f}%  INT8 {r['int8_top1']:.2f}%  "
          f"drop {r['top1_drop_points']:+.2f} points  agreement {r['agreement']:.2f}%")
p = merged["photos"]
print(f"packaged Lite0 on {p['images']} photo views: INT8 agrees with FP32 on "
      f"{p['agreement']:.1f}%")
PYEOF
date -u +"end %Y-%m-%dT%H:%M:%SZ"
