"""INT8 accuracy on real data (issue 21): FP32 against INT8, both in ONNX Runtime.

Two measurements, each a subcommand writing one JSON:

* ``fashion RUN``: a model fine-tuned on Fashion-MNIST (an `effnet train` run folder) on
  the 10,000 test images: FP32 and INT8 top-1 and their agreement. The INT8 file is
  written by ``effnet export RUN/best --int8 --calibration DIR``, DIR holding
  ``--calibration-images`` training images (PNG; never test images).
* ``photos``: the packaged ImageNet Lite0 (``--weights packaged``) on scikit-image's real
  photographs (``skimage.data``), each seen as 12 views (3 crop scales x 2 positions x
  horizontal flip). Two-fold cross-calibration: the photos are split in two halves by
  name, the INT8 model calibrated on one half's views is scored on the other half's, and
  the other way round, so no view is scored by a model calibrated on its own photo.
  Reports top-1 agreement of INT8 with FP32 (there are no labels) and the speed of both
  at batch 1, one thread.

Usage (results/int8/run.sh runs both):
  python benchmarks/int8_accuracy.py fashion runs/fm-lite0 --output results/int8/lite0.json
  python benchmarks/int8_accuracy.py photos --output results/int8/photos.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from effnet.bench.harness import machine_info
from effnet.cli import main as effnet
from effnet.data.datasets import native_arrays
from effnet.data.transforms import eval_transform
from effnet.inference.engines import ort_session
from effnet.inference.fastest import alternating_timer
from effnet.inference.quantize import relative_error
from effnet.io_utils import atomic_write_text

# Real photographs bundled with scikit-image (no download): natural scenes, objects,
# astronomy, microscopy and documents.
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass",
          "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "motorcycle_left",
          "motorcycle_right", "page", "retina", "rocket", "text")


def _run(argv: list[str]) -> None:
    print("$ effnet " + " ".join(argv), flush=True)
    if effnet(argv) != 0:
        sys.exit(f"effnet {argv[0]} failed")


def _logits(path: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    session = ort_session(path, threads=torch.get_num_threads())
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch]})[0]
                           for i in range(0, len(x), batch)])


def _export_pair(model: list[str], calib: Path, out: Path, extra: list[str]
                 ) -> tuple[Path, Path]:
    fp32, int8 = out / "fp32.onnx", out / "int8.onnx"
    _run(["export", *model, "--format", "onnx", "--output", str(fp32), "--force"])
    _run(["export", *model, "--int8", "--calibration", str(calib), "--output", str(int8),
          "--force", *extra])
    return fp32, int8


def _speed(fp32: Path, int8: Path, shape: tuple[int, ...]) -> dict[str, float]:
    """Median ms per image at batch 1, one thread, FP32 and INT8 alternating."""
    x = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
    calls = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        s = ort_session(path, threads=1)
        feed = {s.get_inputs()[0].name: x}
        calls[name] = (lambda s=s, feed=feed: s.run(None, feed))
    t = alternating_timer(rounds=7, min_time=0.5)(calls)
    return {"fp32_ms": 1e3 * t["fp32"], "int8_ms": 1e3 * t["int8"],
            "int8_x_fp32": t["fp32"] / t["int8"]}


def fashion(args: argparse.Namespace) -> dict:
    """FP32 vs INT8 test top-1 of a Fashion-MNIST run, calibrated on training images."""
    best = Path(args.run) / "best"
    config = json.loads((best / "config.json").read_text())
    cfg = config["pretrained_cfg"]
    tf = eval_transform(cfg)
    x_train, _, _ = native_arrays("fashion-mnist", split="train")
    x_test, y_test, _ = native_arrays("fashion-mnist", split="test")
    if args.limit:
        x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    with tempfile.TemporaryDirectory(prefix="effnet-int8-") as tmp:
        calib = Path(tmp) / "calib"
        calib.mkdir()
        picks = np.random.default_rng(args.seed).choice(len(x_train), args.calibration_images,
                                                        replace=False)
        for i in picks:  # the user's path: a folder of image files
            Image.fromarray(x_train[i, 0].numpy()).save(calib / f"{i:05d}.png")
        extra = ["--allow-swish-int8"] if args.allow_swish_int8 else []
        fp32, int8 = _export_pair([str(best)], calib, Path(tmp), extra)
        x = torch.stack([tf(img) for img in x_test]).numpy()
        t0 = time.perf_counter()
        f, q = _logits(fp32, x), _logits(int8, x)
        seconds = time.perf_counter() - t0
        speed = _speed(fp32, int8, x.shape[1:])
    y = y_test.numpy()
    top1_f, top1_q = float((f.argmax(1) == y).mean()), float((q.argmax(1) == y).mean())
    return {"run": str(args.run), "model": config.get("model_name"),
            "image_size": int(x.shape[-1]), "test_images": len(y),
            "calibration_images": int(args.calibration_images), "calibration_method": "minmax",
            "fp32_top1": 100 * top1_f, "int8_top1": 100 * top1_q,
            "top1_drop_points": 100 * (top1_f - top1_q),
            "agreement": 100 * float((f.argmax(1) == q.argmax(1)).mean()),
            "relative_logit_error": relative_error(q, f),
            "eval_seconds": seconds, "speed_batch1_1thread": speed}


def _views(img: np.ndarray) -> list[Image.Image]:
    """12 views of a photo: crops of 100%, 80% and 60% of the short side at two positions
    (top-left and bottom-right corner, the same for a full crop), each also flipped."""
    pil = Image.fromarray(img).convert("RGB")
    w, h = pil.size
    out = []
    for scale in (1.0, 0.8, 0.6):
        side = int(min(w, h) * scale)
        for x0, y0 in ((0, 0), (w - side, h - side)):
            crop = pil.crop((x0, y0, x0 + side, y0 + side))
            out += [crop, crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return out


def _photo(name: str) -> np.ndarray:
    import skimage.data as data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(data, name)()


def photos(args: argparse.Namespace) -> dict:
    """Packaged ImageNet Lite0: INT8 vs FP32 top-1 agreement, two-fold cross-calibration."""
    names = PHOTOS[:args.limit] if args.limit else PHOTOS
    halves = (names[0::2], names[1::2])
    with tempfile.TemporaryDirectory(prefix="effnet-int8-") as tmp:
        root = Path(tmp)
        views: dict[str, list[Path]] = {}
        for name in names:
            views[name] = []
            for k, view in enumerate(_views(_photo(name))):
                path = root / f"half{int(name in halves[1])}" / f"{name}-{k:02d}.png"
                path.parent.mkdir(exist_ok=True)
                view.save(path)
                views[name].append(path)
        import effnet

        cfg = effnet.create_model("lite0", pretrained="packaged").pretrained_cfg
        tf = eval_transform(cfg)
        agree, per_photo, errors = 0, {}, []
        for fold, (calib_half, eval_half) in enumerate(((0, 1), (1, 0))):
            out = root / f"fold{fold}"
            out.mkdir()
            fp32, int8 = _export_pair(["lite0", "--weights", "packaged"],
                                      root / f"half{calib_half}", out, [])
            for name in halves[eval_half]:
                x = torch.stack([tf(Image.open(p).convert("RGB")) for p in views[name]]).numpy()
                f, q = _logits(fp32, x), _logits(int8, x)
                errors.append(relative_error(q, f))
                same = f.argmax(1) == q.argmax(1)
                per_photo[name] = float(same.mean())
                agree += int(same.sum())
        speed = _speed(fp32, int8, (3, 224, 224))
    total = sum(len(v) for v in views.values())
    return {"model": "lite0 (packaged ImageNet weights)", "photos": list(names),
            "views_per_photo": 12, "images": total, "calibration": "two-fold: each half's "
            "views calibrate the INT8 model scored on the other half",
            "agreement": 100 * agree / total, "agreement_per_photo": per_photo,
            "relative_logit_error": {"median_per_photo": float(np.median(errors)),
                                     "max_per_photo": float(np.max(errors))},
            "speed_batch1_1thread": speed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fashion", help="FP32 vs INT8 top-1 of a Fashion-MNIST run")
    f.add_argument("run", help="an `effnet train` run folder (its best/ is used)")
    f.add_argument("--calibration-images", type=int, default=500)
    f.add_argument("--allow-swish-int8", action="store_true")
    f.add_argument("--seed", type=int, default=0)
    g = sub.add_parser("photos", help="packaged Lite0: INT8 vs FP32 agreement on real photos")
    for q in (f, g):
        q.add_argument("--limit", type=int, default=None,
                       help="toy runs: the first N test images (fashion) or photos (photos)")
        q.add_argument("--output", required=True, help="JSON to write")
    args = p.parse_args(argv)
    result = fashion(args) if args.what == "fashion" else photos(args)
    result.update(command=" ".join(["python", "benchmarks/int8_accuracy.py", *(argv or
                                                                              sys.argv[1:])]),
                  machine=machine_info())
    atomic_write_text(args.output, json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
