"""`effnet convert`, `export`, `predict` and `eval`: weights in other layouts, and inference."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from ..errors import EffnetError
from ..weights import LAYOUTS


def cmd_convert(args: argparse.Namespace) -> int:
    """Load any supported checkpoint into a named model and save it in effnet's format."""
    from ..inference.predict import check_finite
    from ..model_factory import build_model, model_blueprint
    from ..weights import load_weights, resolve_weights
    from ..weights.resolve import FOLDER, RUN_FILE

    weights = resolve_weights(args.source)  # a training run folder: its best weights
    source = weights.source
    out = Path(args.output)
    if (out.is_file() or (out.is_dir() and any(out.iterdir()))) and not args.force:
        raise EffnetError(f"--output {out} exists: add --force to replace the model there, or "
                          "give another folder")
    kwargs: dict = {"num_classes": args.num_classes}
    if weights.kind == RUN_FILE or (weights.kind == FOLDER and args.num_classes is None):
        # the weights keep their classes and channels
        kwargs.update(num_classes=args.num_classes or int(weights.num_classes),
                      in_chans=int(weights.in_chans))
    name = args.model or (weights.model_name if weights.kind == RUN_FILE else None)
    if name is not None:
        blueprint = model_blueprint(name, **kwargs)
    elif weights.kind == FOLDER:  # its config.json names the model (or holds its spec)
        blueprint = model_blueprint(pretrained=weights, **kwargs)
    else:
        raise EffnetError(f"give --model: {source} is not a save_pretrained folder or a training "
                          "run, so it does not say which model it holds")
    model = build_model(blueprint.spec, **blueprint.build)  # the weights: loaded once, below
    result = load_weights(model, weights, layout=args.layout, adapt=False)
    check_finite(model, source)
    if args.to != "effnet":  # timm's or torchvision's layout
        from ..weights.convert import save_foreign

        print(f"read   {result}\nwrote  {save_foreign(model, args.output, args.to)}")
        return 0
    out = model.save_pretrained(args.output)
    print(f"read   {result}")
    print(f"wrote  {out}/model.safetensors and {out}/config.json "
          f"(model {model.model_name}, {model.num_classes} classes)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model with its weights to ONNX (dynamic batch), TorchScript or OpenVINO IR; INT8
    (--int8 --calibration DIR); or the engine measured fastest here (--format best)."""
    from ..inference.export import check_opset
    from ..inference.predict import model_from_weights
    from ..limits import check_resolution
    from ..model_factory import create_model
    from ..weights import resolve_weights

    _check_export_args(args)
    name = args.name
    if args.weights is None and (named := resolve_weights(name)).names_model:
        name, weights = None, named  # a folder or run that names its model
    else:
        weights = resolve_weights(args.weights) if args.weights is not None else None
    _check_output(args.output, weights.source if weights is not None else None, args.force)
    check_opset(args.opset)
    model = (model_from_weights(name, weights) if weights is not None
             else create_model(name)).eval()
    if weights is None:
        print("effnet: note: no --weights given; exporting randomly initialised weights",
              file=sys.stderr)
    size = args.image_size or model.pretrained_cfg["input_size"][-1]
    check_resolution(model, size)
    if args.int8:
        from ..inference.quantize import check_int8_allowed

        check_int8_allowed(model, args.allow_swish_int8)
    if args.format == "best":
        return _export_best(model, size, args)
    if args.int8:
        return _export_int8(model, size, args)
    if args.format == "openvino":
        return _export_openvino(model, size, args)
    return _export_plain(model, size, args)


def _check_export_args(args: argparse.Namespace) -> None:
    """Flags that only make sense together, checked before any model is built."""
    if args.int8 and args.format not in ("onnx", "best"):
        raise EffnetError(f"--int8 writes ONNX: use --format onnx or best, not {args.format}")
    if args.int8 and args.calibration is None:
        raise EffnetError("--int8 needs --calibration DIR: a folder of images like those the "
                          "model will see (a few hundred are enough)")
    if args.calibration is not None and not args.int8:
        raise EffnetError("--calibration is for INT8: add --int8")
    if args.batch_size < 1 or (args.threads is not None and args.threads < 1):
        raise EffnetError("--batch-size and --threads must be >= 1")


def _export_plain(model, size: int, args: argparse.Namespace) -> int:
    from ..inference.export import export, max_onnx_difference

    exported = model
    if not args.no_optimize:  # BN folded into the convs: a smaller graph, same outputs
        from ..inference.optimize import export_form, optimize_for_inference

        exported = (export_form(model, size) if args.format == "onnx" else
                    optimize_for_inference(model))
    path = export(exported, args.output, args.format, size, args.opset)
    line = f"wrote  {path} ({args.format}, input Nx{model.stem.conv.in_channels}x{size}x{size}"
    line += ", dynamic batch)" if args.format == "onnx" else ")"
    print(line)
    if args.format == "onnx" and not args.no_check:
        diff = max_onnx_difference(model, path, size)
        print(f"check  onnxruntime vs PyTorch on random inputs: max |logit diff| {diff:.2e}")
        if diff > 1e-3:
            raise EffnetError(f"the ONNX file disagrees with PyTorch by {diff:.2e}: report this "
                              "as a bug, with the model name")
    return 0


def _calibration(model, size: int, args: argparse.Namespace):
    from ..inference.quantize import calibration_batch

    data = calibration_batch(model, args.calibration, size, args.calibration_images)
    print(f"calib  {len(data)} images from {args.calibration}, preprocessed as the model's "
          f"pretrained_cfg says ({size}px)")
    return data


def _export_int8(model, size: int, args: argparse.Namespace) -> int:
    """INT8 ONNX, then its logits against FP32 eager on the calibration images."""
    from ..inference.engines import eager_logits, get_engine, require
    from ..inference.quantize import CALIBRATION_METHODS, export_int8

    require("onnxruntime-int8")
    data = _calibration(model, size, args)
    path = export_int8(model, args.output, data, size, args.calibration_method,
                       allow_swish=True, reduce_range=None)
    print(f"wrote  {path} (onnx INT8 QDQ, per-channel weights, {args.calibration_method} "
          f"calibration, input Nx{model.stem.conv.in_channels}x{size}x{size}, dynamic batch)")
    if not args.no_check:
        from ..inference.export import onnx_session

        session = onnx_session(path)
        ours = session.run(None, {session.get_inputs()[0].name: data})[0]
        check = get_engine("onnxruntime-int8").check(ours, eager_logits(model, data))
        print(f"check  INT8 vs FP32 PyTorch on the calibration images: {check.describe()}")
        if not check.passed:
            print(f"effnet: warning: the INT8 file is far from FP32 (relative error "
                  f"{check.relative_error:.2f} > {check.allowed:.2f}): calibrate on more images "
                  "like those the model will see, or try --calibration-method "
                  + " or ".join(m for m in CALIBRATION_METHODS if m != args.calibration_method),
                  file=sys.stderr)
    return 0


def _export_openvino(model, size: int, args: argparse.Namespace) -> int:
    from ..inference.engines import Setting, require

    engine = require("openvino")
    with tempfile.TemporaryDirectory(prefix="effnet-export-") as tmp:
        runner = engine.prepare(model, Setting(size, in_chans=model.stem.conv.in_channels,
                                               threads=args.threads or 1), Path(tmp), True, None)
        files = runner.save(Path(args.output))
    print(f"wrote  {', '.join(map(str, files))} (OpenVINO IR, FP32, input "
          f"Nx{model.stem.conv.in_channels}x{size}x{size})")
    return 0


def _export_best(model, size: int, args: argparse.Namespace) -> int:
    """Measure the engines here, write the fastest one's file, say which and why."""
    import torch

    from ..inference import fastest
    from ..inference.engines import Setting

    threads = args.threads or torch.get_num_threads()
    setting = Setting(size, args.batch_size, threads, model.stem.conv.in_channels)
    data = _calibration(model, size, args) if args.int8 else None
    from ..inference.engines import get_engine

    engines = [get_engine(e.strip()).name for e in args.engines.split(",") if e.strip()] \
        if args.engines else None
    print(f"timing {', '.join(engines or fastest.exportable(args.int8))} at batch "
          f"{setting.batch}, {threads} thread(s)...", file=sys.stderr)
    pick, files = fastest.export_fastest(model, args.output, setting, engines, args.int8, data,
                                         timer=TIMER, force=args.force)
    print(pick.describe())
    print(f"wrote  {', '.join(map(str, files))} ({pick.engine})")
    return 0


# The timer `--format best` measures with (a test replaces it by a fake one).
TIMER = None


def _check_output(output: str, weights: object, force: bool) -> None:
    """Never write over the weights being read; replace another existing file only if forced."""
    from ..inference.export import weights_file

    out = Path(output)
    source = weights_file(weights)
    if source is not None:
        sources = {source.resolve(), source.parent.resolve() / "config.json"} if \
            source.name == "model.safetensors" else {source.resolve()}
        if out.resolve() in sources:
            raise EffnetError(f"--output {out} is the model being exported: give another "
                              "file name")
    if out.is_dir():
        raise EffnetError(f"--output {out} is a folder: give a file name, e.g. {out}/model.onnx")
    if out.exists() and not force:
        raise EffnetError(f"--output {out} exists: add --force to replace it, or give another "
                          "file name")


def cmd_predict(args: argparse.Namespace) -> int:
    """Top-k classes of each image; undecodable images are reported and skipped."""
    from ..inference.predict import Failure, image_paths, predict, prepare_model

    if args.batch_size < 1 or args.topk < 1:
        raise EffnetError(f"--batch-size ({args.batch_size}) and --topk ({args.topk}) must be "
                          ">= 1")
    prepared = prepare_model(args.model, args.weights, runtime=args.runtime,
                             image_size=args.image_size, optimize=not args.no_optimize)
    paths = image_paths(args.images)
    if not paths:
        raise EffnetError("no image files given: pass image paths or folders of images")
    failed = 0
    for result in predict(prepared, paths, topk=args.topk, batch_size=args.batch_size):
        if isinstance(result, Failure):
            failed += 1
            print(f"effnet: error: {result.error} (skipped)", file=sys.stderr)
            continue
        print(result.path)
        for index, label, prob in result.top:
            print(f"  {100 * prob:6.2f}%  {label} ({index})")
    if failed:
        print(f"effnet: {failed} of {len(paths)} image(s) could not be read", file=sys.stderr)
        return 1
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Top-1 / top-5 accuracy on an ImageFolder tree."""
    from ..inference.evaluate import evaluate
    from ..inference.predict import prepare_model
    from ..limits import check_workers

    if args.limit is not None and args.limit < 1:
        raise EffnetError(f"--limit {args.limit} must be >= 1 (the number of images to evaluate)")
    if args.batch_size < 1:
        raise EffnetError(f"--batch-size ({args.batch_size}) must be >= 1")
    check_workers(args.workers)
    prepared = prepare_model(args.model, args.weights, runtime=args.runtime,
                             image_size=args.image_size, optimize=not args.no_optimize)
    result = evaluate(prepared, args.data, batch_size=args.batch_size, workers=args.workers,
                      limit=args.limit, progress=not args.no_progress,
                      class_order=args.class_order)
    print(f"model {prepared.model_name} at {prepared.image_size}px ({prepared.runtime})")
    print(result.summary())
    return 0


def _add_inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="model name (b0..b8, l2, lite0..lite4); optional when --weights is a "
                        "folder from save_pretrained / convert")
    p.add_argument("--weights", default=None,
                   help="checkpoint file (timm, torchvision, TF-ported, effnet), a "
                        "save_pretrained folder, or 'packaged' (Lite0 ImageNet weights)")
    p.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                   help="'onnxruntime' exports to ONNX once (cached next to the weights)")
    p.add_argument("--image-size", type=int, default=None,
                   help="crop size (default: the model's pretrained_cfg)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="images per forward pass (default 16 for predict, 32 for eval)")
    _add_no_optimize(p)


def _add_no_optimize(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-optimize", action="store_true",
                   help="run the plain model instead of effnet.optimize_for_inference "
                        "(BN folding, channels_last; same outputs to 1e-4)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the `effnet` parser."""
    p = sub.add_parser("convert", help="convert a timm/torchvision/TF-ported checkpoint to "
                                       "effnet's format (safetensors + config.json)")
    p.add_argument("source", help="checkpoint file or folder, or 'packaged'")
    p.add_argument("--model", default=None,
                   help="model name the checkpoint belongs to; optional for a save_pretrained "
                        "folder or a training run (their config names the model)")
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS),
                   help="the checkpoint's key layout (default: detected)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the checkpoint's classifier (default 1000)")
    p.add_argument("--to", choices=("effnet", "timm", "torchvision"), default="effnet",
                   help="layout to write: effnet (default), or timm's / torchvision's "
                        "(OUTPUT/<architecture>.safetensors)")
    p.add_argument("--force", action="store_true",
                   help="replace the model in --output if the folder holds one")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="export to ONNX (dynamic batch), TorchScript or "
                                      "OpenVINO; INT8; or the engine measured fastest here")
    p.add_argument("name", help="model name, or a save_pretrained folder")
    p.add_argument("--weights", default=None, help="checkpoint, folder or 'packaged'")
    p.add_argument("--format", choices=("onnx", "torchscript", "openvino", "best"),
                   default="onnx",
                   help="onnx (default; runs in onnxruntime), torchscript (traced), openvino "
                        "(IR: .xml + .bin; pip install 'effnet[openvino]'), or best: time every "
                        "engine installed here at --batch-size and --threads, check each "
                        "against PyTorch, write the fastest one's file (its suffix replaces "
                        "--output's)")
    p.add_argument("--output", required=True, help="file to write")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size the file takes (default: the model's resolution)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    _add_no_optimize(p)
    p.add_argument("--no-check", action="store_true",
                   help="skip running the exported file against PyTorch")
    g = p.add_argument_group("INT8 (post-training static quantization, ONNX Runtime's quantizer)")
    g.add_argument("--int8", action="store_true",
                   help="quantize to INT8 (QDQ, per-channel weights), calibrated on --calibration")
    g.add_argument("--calibration", default=None,
                   help="folder of images like those the model will see (any depth; "
                        "preprocessed with the model's own pretrained_cfg)")
    g.add_argument("--calibration-images", type=int, default=256,
                   help="use at most N of them, evenly spread (default 256)")
    g.add_argument("--calibration-method", choices=("minmax", "percentile", "entropy"),
                   default="minmax", help="how activation ranges are set (default minmax)")
    g.add_argument("--allow-swish-int8", action="store_true",
                   help="quantize a Swish (SiLU) model anyway (B-models; Lite models, ReLU6, "
                        "are built for INT8): B0 on Fashion-MNIST lost 0.11 points here, "
                        "ImageNet-scale Swish models are not measured")
    g = p.add_argument_group("--format best")
    g.add_argument("--batch-size", type=int, default=1,
                   help="batch size to time the engines at (default 1)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads to time them with (default: torch's, all cores)")
    g.add_argument("--engines", default=None,
                   help="comma-separated candidates (default: every engine that writes a "
                        "file: torchscript, onnxruntime, openvino; with --int8 "
                        "onnxruntime-int8, openvino-int8)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="top-k ImageNet classes of images")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...) or folders")
    _add_inference_args(p)
    p.add_argument("--topk", type=int, default=5,
                   help="classes to print per image, most likely first (default 5)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("eval", help="top-1 / top-5 accuracy on an ImageFolder tree")
    p.add_argument("--data", required=True,
                   help="folder of class folders (ImageNet val: synset folders n01440764 ...)")
    _add_inference_args(p)
    p.set_defaults(batch_size=32)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data loading processes")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--class-order", choices=("names", "sorted"), default="names",
                   help="names (default): map class folders by the model's class names "
                        "(ImageNet synsets, class indices, or sorted order when the model has "
                        "none); sorted: sorted folder names are classes 0..N-1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)
