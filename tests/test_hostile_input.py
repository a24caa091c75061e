"""Issue 13, inference side: hostile or odd input gets the right answer or a one-line refusal.

Each test is named after the issue's item. A b0 with 2 classes at 32 px keeps them fast.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.cli import main
from effnet.errors import EffnetError

sys.path.insert(0, str(Path(__file__).parent / "data"))
from train_tiny import make_image_folder  # noqa: E402


def _one_line(capsys, pattern: str) -> str:
    import re

    err = capsys.readouterr().err.strip()
    assert err.startswith("effnet: error:") and len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err
    return err


def _image(path: Path, value: int = 100) -> Path:
    Image.fromarray(np.full((40, 40, 3), value, np.uint8)).save(path)
    return path


# ---------------------------------------------------------------- 2
def test_export_never_overwrites_its_source_and_others_only_with_force(cat_dog, tmp_path,
                                                                       capsys):
    source = (cat_dog / "model.safetensors").read_bytes()
    assert main(["export", str(cat_dog), "--output", str(cat_dog / "model.safetensors"),
                 "--no-check"]) == 2
    _one_line(capsys, r"is the model being exported")
    assert (cat_dog / "model.safetensors").read_bytes() == source
    other = tmp_path / "keep.pt"
    other.write_bytes(b"precious")
    args = ["export", str(cat_dog), "--output", str(other), "--format", "torchscript"]
    assert main(args) == 2
    _one_line(capsys, r"keep\.pt exists: add --force")
    assert other.read_bytes() == b"precious"
    assert main([*args, "--force"]) == 0
    assert torch.jit.load(str(other))(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


# ---------------------------------------------------------------- 6
def test_eval_refuses_folders_matching_no_class_name_unless_sorted(cat_dog, tmp_path, capsys):
    for name in ("apple", "zebra"):
        (tmp_path / "d" / name).mkdir(parents=True)
        _image(tmp_path / "d" / name / "1.png")
    args = ["eval", "--data", str(tmp_path / "d"), "--weights", str(cat_dog), "--workers", "0",
            "--no-progress"]
    assert main(args) == 2
    _one_line(capsys, r"match none of the model's class names \(cat, dog.*--class-order sorted")
    assert main([*args, "--class-order", "sorted"]) == 0
    out = capsys.readouterr().out
    assert "by sorted folder order (apple=0, zebra=1)" in out


# ---------------------------------------------------------------- 8
def test_exif_orientation_is_applied(tmp_path):
    from effnet.data.datasets import load_train_image as train_load
    from effnet.inference.predict import load_image

    upright = np.zeros((20, 40, 3), np.uint8)  # wide, with a red left half
    upright[:, :20, 0] = 255
    stored = np.ascontiguousarray(np.rot90(upright))  # stored turned 90 degrees anticlockwise
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # EXIF orientation 6: display rotated 90 degrees clockwise
    img.save(tmp_path / "side.png", exif=exif)
    assert np.array_equal(np.asarray(load_image(tmp_path / "side.png")), upright)
    assert np.array_equal(np.asarray(train_load(str(tmp_path / "side.png"))), upright)


# ---------------------------------------------------------------- 10
def test_training_run_weights_work_everywhere_and_survive_convert(tmp_path, capsys):
    make_image_folder(tmp_path / "d", classes=2, per_class=6)
    run = tmp_path / "run"
    assert main(["train", "--model", "b0", "--dataset", "imagefolder", "--data",
                 str(tmp_path / "d"), "--image-size", "32", "--epochs", "1", "--batch-size", "5",
                 "--no-progress", "--workers", "0", "--threads", "1", "--output", str(run)]) == 0
    img = str(tmp_path / "d" / "class0" / "0.png")
    for weights in (run / "best", run / "final", run):  # no --model, no --num-classes
        assert main(["predict", img, "--weights", str(weights), "--topk", "2"]) == 0
        out = capsys.readouterr().out  # the run's class names, not "class 0" / "class 1"
        assert "class0 (0)" in out and "class1 (1)" in out
    assert main(["convert", str(run / "final"), "--model", "b0", "--output",
                 str(tmp_path / "conv")]) == 0
    cfg = json.loads((tmp_path / "conv" / "config.json").read_text())["pretrained_cfg"]
    stored = json.loads((run / "best" / "config.json").read_text())["pretrained_cfg"]
    assert cfg["label_names"] == ["class0", "class1"] == stored["label_names"]
    assert cfg["input_size"] == stored["input_size"] == [3, 32, 32]
    assert cfg["mean"] == stored["mean"] and cfg["crop_pct"] == stored["crop_pct"]


# ---------------------------------------------------------------- 11
def test_missing_data_dir_is_an_error_for_every_dataset(tmp_path):
    from effnet.cli.options import FLAGS
    from effnet.data.datasets import build_data
    from effnet.errors import ParameterError

    for name in ("fashion-mnist", "cifar10"):  # the library names its parameter, the CLI a flag
        with pytest.raises(ParameterError, match=r"^root \S*nowhere does not exist") as err:
            build_data(name, tmp_path / "nowhere", image_size=32, download=False)
        assert err.value.with_flags(FLAGS).startswith(f"--data {tmp_path / 'nowhere'} does not")


# ---------------------------------------------------------------- 12
def test_nan_weights_and_bad_bn_eps_are_refused(cat_dog, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    img = str(_image(tmp_path / "a.png"))
    state = load_file(cat_dog / "model.safetensors")
    state["classifier.bias"][0] = float("nan")
    save_file(state, str(cat_dog / "model.safetensors"), metadata={"format": "pt"})
    assert main(["predict", img, "--weights", str(cat_dog)]) == 2
    _one_line(capsys, r"hold NaN or infinite values .*classifier\.bias")
    for eps in ("nan", -1):
        torch.manual_seed(0)
        d = effnet.create_model("b0", num_classes=2).save_pretrained(tmp_path / f"eps{eps}")
        config = json.loads((d / "config.json").read_text())
        config["bn_eps"] = eps
        (d / "config.json").write_text(json.dumps(config))
        assert main(["predict", img, "--weights", str(d)]) == 2
        _one_line(capsys, r"BN eps .* is outside \(0, 1\)")


@pytest.mark.parametrize("argv, pattern", [
    (["predict", "IMG", "--weights", "W", "--image-size", "0"], r"at least 32"),
    (["predict", "IMG", "--weights", "W", "--image-size", "1"], r"at least 32"),
    (["eval", "--data", "D", "--weights", "W", "--limit", "0"], r"--limit 0 must be >= 1"),
    (["eval", "--data", "D", "--weights", "W", "--limit", "-5"], r"--limit -5 must be >= 1"),
    (["profile", "b0", "--resolution", "0"], r"use at least 32"),
    (["scale", "--phi", "5..1"], r"empty --phi range '5..1'.*1..5"),
    (["train", "--dataset", "imagefolder", "--data", "D", "--image-size", "0"],
     r"--image-size 0 is out of range: use at least 32"),
    (["train", "--dataset", "imagefolder", "--data", "D", "--eval-every", "0"],
     r"--eval-every 0 is out of range"),
    (["export", "b0", "--output", "OUT", "--opset", "3"], r"--opset 3 is not supported: use 7"),
])
def test_out_of_range_numbers_are_one_line_errors(cat_dog, tmp_path, capsys, argv, pattern):
    make_image_folder(tmp_path / "d", classes=2, per_class=2)
    subst = {"IMG": str(_image(tmp_path / "a.png")), "W": str(cat_dog), "D": str(tmp_path / "d"),
             "OUT": str(tmp_path / "x.onnx")}
    assert main([subst.get(a, a) for a in argv]) == 2
    _one_line(capsys, pattern)
    assert not (tmp_path / "x.onnx").exists()


# ---------------------------------------------------------------- 13
def test_profile_at_32_px(capsys):
    assert main(["profile", "b0", "--resolution", "32"]) == 0
    out = capsys.readouterr().out
    assert "resolution   32" in out and "5,288,548" in out and "activations" in out


# ---------------------------------------------------------------- 14
def test_16_bit_and_float_images_scale_by_bit_depth(tmp_path):
    from effnet.data.datasets import load_train_image as train_load
    from effnet.inference.predict import load_image

    dark = (np.arange(16 * 16).reshape(16, 16) % 256).astype(np.uint16) * 40  # <= 10200 of 65535
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    expected = np.rint(dark / 65535.0 * 255.0).astype(np.uint8)
    assert Image.open(tmp_path / "dark16.png").mode == "I;16"
    assert np.array_equal(np.asarray(load_image(tmp_path / "dark16.png"))[..., 0], expected)
    assert np.array_equal(np.asarray(train_load(str(tmp_path / "dark16.png"))), expected)

    unit = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)  # float TIFF in [0, 1]
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    expected = np.rint(unit.astype(np.float64) * 255.0).astype(np.uint8)
    assert np.array_equal(np.asarray(load_image(tmp_path / "unit.tif"))[..., 1], expected)
    assert np.array_equal(np.asarray(train_load(str(tmp_path / "unit.tif"))), expected)


# ---------------------------------------------------------------- 16
def test_size_estimate_is_exact_for_params():
    from effnet.limits import estimate_size
    from effnet.zoo import MODELS

    for name in ("b0", "b2", "lite1"):
        model = effnet.create_model(name, num_classes=10, in_chans=1)
        params = sum(p.numel() for p in model.parameters())  # what torch built
        est = estimate_size(model.spec, MODELS[name].resolution, in_chans=1, num_classes=10)
        assert est.params == params, name


def test_huge_models_are_refused_before_building(cat_dog, monkeypatch, capsys):
    import effnet.model_factory as factory

    def never(*args, **kwargs):  # building would grow memory until the process is killed
        raise AssertionError("the model was built before its size was checked")

    monkeypatch.setattr(factory, "EfficientNet", never)
    config = json.loads((cat_dog / "config.json").read_text())
    config["spec"]["stages"][0]["repeats"] = 10**7
    (cat_dog / "config.json").write_text(json.dumps(config))
    with pytest.raises(EffnetError, match=r"over the limit .*EFFNET_MAX_"):
        effnet.create_model(pretrained=cat_dog)
    assert main(["scale", "--phi", "100"]) == 2
    _one_line(capsys, r"b0-phi100 would have .* parameters, over the limit 2e\+09.*"
                      r"EFFNET_MAX_PARAMS")


def test_size_limit_can_be_raised(monkeypatch):
    from effnet.limits import check_model_size
    from effnet.zoo import MODELS

    spec = MODELS["b0"].spec
    monkeypatch.setenv("EFFNET_MAX_PARAMS", "1e6")
    with pytest.raises(EffnetError, match=r"5\.29e\+06 parameters, over the limit 1e\+06"):
        check_model_size(spec, 224)
    monkeypatch.setenv("EFFNET_MAX_PARAMS", "1e7")
    assert check_model_size(spec, 224).params == 5_288_548  # paper Table 2: 5.3M


# ---------------------------------------------------------------- 17
def test_decompression_bomb_is_an_undecodable_image(cat_dog, tmp_path, monkeypatch, capsys):
    from effnet.data.datasets import load_train_image as train_load

    good = _image(tmp_path / "good.png")
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # 10,000 pixels > 2x the limit
    assert main(["predict", str(tmp_path / "bomb.png"), str(good), "--weights",
                 str(cat_dog)]) == 1
    captured = capsys.readouterr()
    assert "good.png" in captured.out and "bomb.png" not in captured.out
    assert "bomb.png" in captured.err and "MAX_IMAGE_PIXELS" in captured.err
    with pytest.raises(EffnetError, match=r"cannot decode image .*bomb\.png"):
        train_load(str(tmp_path / "bomb.png"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # between 1x and 2x: decodes, quietly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train_load(str(tmp_path / "bomb.png")).size == (100, 100)


# ---------------------------------------------------------------- small things
def test_help_texts(capsys):
    from effnet.cli import build_parser

    text = build_parser().format_help()
    assert "EfficientNet (Tan & Le, 2019)" in text and "Thin:" not in text
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for cmd in ("profile", "predict", "eval", "train", "export", "convert"):
        for action in sub[cmd]._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{cmd} {action.option_strings[0]} has no help"
    assert sub["train"].format_help().count("short-sgd:") == 1


def test_layout_warning_speaks_cli_and_is_one_line(tmp_path, capsys):
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model("efficientnet_b0").state_dict(), tmp_path / "weights.pth")
    img = str(_image(tmp_path / "a.png"))
    assert main(["predict", img, "--model", "b0", "--weights", str(tmp_path / "weights.pth"),
                 "--image-size", "32"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("effnet: warning:"), err
    assert "--layout timm" in err[0] and "layout='timm'" not in err[0]


def test_damaged_onnx_cache_says_delete_it(cat_dog, tmp_path, capsys):
    from effnet.inference.export import onnx_cache_path
    from effnet.inference.predict import model_from_weights

    img = str(_image(tmp_path / "a.png"))
    net = model_from_weights(None, cat_dog)
    cache = onnx_cache_path(net, cat_dog, 32)
    cache.write_bytes(b"not an onnx file")
    assert main(["predict", img, "--weights", str(cat_dog), "--runtime", "onnxruntime"]) == 2
    _one_line(capsys, rf"delete {cache} \(a damaged cached export")


class Payload:
    """Any pickled object that is not a tensor."""


def test_pickle_refusal_does_not_advise_convert(tmp_path, capsys):
    torch.save({"model": Payload()}, tmp_path / "x.pt")
    assert main(["convert", str(tmp_path / "x.pt"), "--model", "b0", "--output",
                 str(tmp_path / "o")]) == 2
    err = _one_line(capsys, r"never unpickles")
    assert "convert it with" not in err


def test_progress_is_lines_not_bars_when_not_a_terminal(tmp_path, monkeypatch):
    from train_tiny import TinyNet, float_tf, synthetic

    from effnet.data.datasets import TensorImageDataset, TransformedDataset
    from effnet.train import epoch, fit

    monkeypatch.setattr(epoch, "PROGRESS_EVERY_S", 0.0)
    lines: list[str] = []
    x, y = synthetic(32)
    fit(TinyNet(), TransformedDataset(TensorImageDataset(x, y), float_tf()), None, epochs=1,
        batch_size=16, recipe="short", num_workers=0, channels_last=False, progress=True,
        log=lines.append)
    assert any("epoch 1/1: step 2/2 loss=" in ln for ln in lines), lines
    assert not any("\r" in ln for ln in lines)


# ---------------------------------------------------------------- probes beyond the issue
@pytest.mark.parametrize("change, pattern", [
    ({"crop_pct": 0}, r"crop_pct in \(0, 1\]"),
    ({"std": [0, 0, 0]}, r"std > 0"),
    ({"input_size": [3, 0, 0]}, r"image size 0 .* is too small"),
])
def test_broken_preprocessing_config_is_one_line(cat_dog, tmp_path, capsys, change, pattern):
    config = json.loads((cat_dog / "config.json").read_text())
    config["pretrained_cfg"].update(change)
    (cat_dog / "config.json").write_text(json.dumps(config))
    assert main(["predict", str(_image(tmp_path / "a.png")), "--weights", str(cat_dog)]) == 2
    _one_line(capsys, pattern)
