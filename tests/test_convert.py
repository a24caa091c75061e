"""`effnet convert --to timm|torchvision`: the written file loads there and gives the same outputs.

The references are timm and torchvision themselves, run here: a model trained
in effnet (random weights and BN statistics stand in for training) is saved,
converted with the CLI, loaded by the other library, and compared to 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file

import effnet
from effnet.cli import main
from effnet.errors import EffnetError
from effnet.weights.convert import foreign_state_dict
from tests.conftest import randomize_bn_stats


def _trained(name: str, tmp_path, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = effnet.create_model(name, num_classes=10, **kw)
    randomize_bn_stats(model, seed=3)
    model.eval().save_pretrained(tmp_path / "trained")
    return model


def _convert(tmp_path, name: str, to: str, capsys) -> str:
    code = main(["convert", str(tmp_path / "trained"), "--model", name, "--num-classes", "10",
                 "--output", str(tmp_path / "out"), "--to", to])
    out = capsys.readouterr().out
    assert code == 0, out
    return out.strip().splitlines()[-1].split()[-1]  # "wrote  PATH"


def _same_outputs(ours: torch.nn.Module, theirs: torch.nn.Module, size: int) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        torch.testing.assert_close(theirs.eval()(x), ours.eval()(x), atol=1e-5, rtol=1e-5)


# (effnet model, its construction, the timm architecture it must become, input size): symmetric
# padding becomes timm's efficientnet_* (eps 1e-5, so eps 1e-3 models are re-expressed), 'same'
# padding its tf_efficientnet_* TF ports; odd sizes are where 'same' padding differs.
TIMM_CASES = [
    ("b0", {}, "efficientnet_b0", 64),
    ("b3", {"padding": "same"}, "tf_efficientnet_b3", 65),
    ("lite0", {"padding": "same"}, "tf_efficientnet_lite0", 64),
    ("lite0", {"bn_eps": 1e-5}, "efficientnet_lite0", 64),
]


@pytest.mark.parametrize("name,kw,arch,size", TIMM_CASES, ids=[c[2] for c in TIMM_CASES])
def test_convert_to_timm_loads_with_pretrained_cfg_overlay(name, kw, arch, size, tmp_path,
                                                            capsys):
    model = _trained(name, tmp_path, **kw)
    path = _convert(tmp_path, name, "timm", capsys)
    assert path.endswith(f"{arch}.safetensors")
    ref = timm.create_model(arch, pretrained=True, num_classes=10,
                            pretrained_cfg_overlay={"file": path, "num_classes": 10})
    torch.testing.assert_close(ref.state_dict()["conv_stem.weight"],
                               model.state_dict()["stem.conv.weight"], rtol=0, atol=0)
    _same_outputs(model, ref, size)


@pytest.mark.parametrize("name,size", [("b0", 64), ("b5", 64)])
def test_convert_to_torchvision_loads_strictly(name, size, tmp_path, capsys):
    """torchvision's b0 uses BN eps 1e-5 and its b5 1e-3 (a TF port): both from effnet's 1e-3."""
    model = _trained(name, tmp_path)
    path = _convert(tmp_path, name, "torchvision", capsys)
    ref = getattr(torchvision.models, f"efficientnet_{name}")(num_classes=10)
    ref.load_state_dict(load_file(path), strict=True)
    _same_outputs(model, ref, size)


@pytest.mark.parametrize("to", ["timm", "torchvision"])
def test_convert_reads_the_model_from_a_save_pretrained_folder(to, tmp_path, capsys):
    """No --model: the folder's config.json names the model; the file is the same as with it."""
    _trained("b0", tmp_path)
    with_model = Path(_convert(tmp_path, "b0", to, capsys))
    code = main(["convert", str(tmp_path / "trained"), "--to", to,
                 "--output", str(tmp_path / "out2")])
    out = capsys.readouterr().out
    assert code == 0, out
    written = Path(out.strip().splitlines()[-1].split()[-1])
    assert written.name == with_model.name
    ours, theirs = load_file(with_model), load_file(written)
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(theirs[k], ours[k], rtol=0, atol=0)


def test_convert_without_model_needs_a_folder_that_names_it(tmp_path, capsys):
    model = _trained("b0", tmp_path)
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    code = main(["convert", str(tmp_path / "plain.pth"), "--output", str(tmp_path / "out")])
    assert code == 2 and "give --model" in capsys.readouterr().err


def test_convert_refuses_what_the_target_cannot_hold():
    with pytest.raises(EffnetError, match="no TF 'same' padding"):
        foreign_state_dict(effnet.create_model("b0", padding="same"), "torchvision")
    with pytest.raises(EffnetError, match="no EfficientNet-lite0"):
        foreign_state_dict(effnet.create_model("lite0"), "torchvision")
    with pytest.raises(EffnetError, match="not one of the named models"):
        foreign_state_dict(effnet.create_model("b0", phi=0.5), "timm")
