"""One model identity: a weights source is resolved once (`resolve_weights`), and run folders
written before runs saved best/ as save_pretrained folders still load everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import effnet
from effnet.cli import main
from effnet.errors import ParameterError
from effnet.inference.predict import prepare_model
from effnet.weights import resolve_weights

LABELS = ["cat", "dog"]


def _old_run(run: Path) -> dict[str, torch.Tensor]:
    """A run folder as `effnet train` wrote it before best/ and final/ were save_pretrained
    folders: RUN/best.safetensors and RUN/final.safetensors, the model in their metadata
    (every value a string; numbers and dicts JSON-encoded), next to the run's config.json."""
    torch.manual_seed(0)
    model = effnet.create_model("b0", num_classes=2)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    cfg = {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
           "crop_pct": 1.0, "interpolation": "bilinear", "num_classes": 2,
           "first_conv": "stem.conv", "classifier": "classifier", "label_names": LABELS}
    meta = {"format": "pt", "padding": "symmetric", "bn_eps": "0.001", "model_name": "b0",
            "pretrained_cfg": json.dumps(cfg), "num_classes": "2"}
    run.mkdir()
    for name in ("best", "final"):
        save_file(state, str(run / f"{name}.safetensors"), metadata=meta)
    (run / "config.json").write_text(json.dumps({"epochs": 1, "batch_size": 4}))
    (run / "metrics.csv").write_text("epoch,step\n1,1\n")
    return state


def _image(path: Path) -> Path:
    Image.fromarray(np.full((40, 40, 3), 100, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("where", ["RUN", "RUN/best.safetensors"])
def test_an_old_run_folder_still_loads(tmp_path, where):
    state = _old_run(tmp_path / "run")
    source = tmp_path / where.replace("RUN", "run")
    model = effnet.create_model(pretrained=source)
    assert model.model_name == "b0" and model.num_classes == 2
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    cfg = model.pretrained_cfg
    assert cfg["label_names"] == LABELS and cfg["input_size"] == [3, 32, 32]
    assert cfg["mean"] == [0.5, 0.5, 0.5] and cfg["crop_pct"] == 1.0


def test_an_old_run_folder_predicts_and_converts(tmp_path, capsys):
    _old_run(tmp_path / "run")
    img = _image(tmp_path / "a.png")
    assert main(["predict", str(img), "--weights", str(tmp_path / "run"), "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert "cat (0)" in out and "dog (1)" in out  # its class names, not ImageNet's
    assert main(["convert", str(tmp_path / "run"), "--output", str(tmp_path / "conv")]) == 0
    config = json.loads((tmp_path / "conv" / "config.json").read_text())
    assert config["model_name"] == "b0" and config["num_classes"] == 2
    assert config["pretrained_cfg"]["label_names"] == LABELS


def test_a_run_folder_stands_for_its_best_folder(tmp_path):
    torch.manual_seed(0)
    effnet.create_model("b0", num_classes=3).save_pretrained(tmp_path / "run" / "best")
    resolved = resolve_weights(tmp_path / "run")
    assert resolved.kind == "folder" and resolved.source == tmp_path / "run" / "best"
    assert resolved.model_name == "b0" and resolved.num_classes == 3
    assert resolve_weights(resolved) is resolved
    plain = resolve_weights(tmp_path / "nothing.pth")
    assert plain.kind == "weights" and not plain.names_model


def test_predict_reads_config_json_once(tmp_path, monkeypatch):
    """`effnet predict --weights RUN` parsed the folder's config.json several times before."""
    import effnet.weights.pretrained as pretrained
    import effnet.weights.read as read

    torch.manual_seed(0)
    model = effnet.create_model("b0", num_classes=2)
    model.pretrained_cfg.update(input_size=(3, 32, 32), label_names=LABELS)
    model.save_pretrained(tmp_path / "run" / "best")
    reads: list[Path] = []
    original = read.read_json

    def counting(path: Path) -> dict:
        reads.append(Path(path))
        return original(path)

    monkeypatch.setattr(read, "read_json", counting)
    monkeypatch.setattr(pretrained, "read_json", counting)
    prepared = prepare_model(None, tmp_path / "run", optimize=False)
    assert reads == [tmp_path / "run" / "best" / "config.json"]
    assert prepared.labels == LABELS and prepared.image_size == 32


def test_the_config_spec_is_spec_py_s_serialisation(tmp_path):
    from effnet.spec import spec_from_dict, spec_to_dict

    model = effnet.create_model("b0", phi=0.5, num_classes=3)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["spec"] == spec_to_dict(model.spec)
    assert spec_from_dict(config["spec"]) == model.spec
    # phi also stands at the top for readers of the file; the spec holds the same
    assert config["phi"] == config["spec"]["phi"] == 0.5


def test_parameter_errors_read_as_flags():
    err = ParameterError("dataset='imagefolder' needs root=DIR; drop download=False or use "
                         "to='timm' (lr too high)", "dataset", "root", "download", "to", "lr")
    assert err.with_flags({"root": "--data"}) == (
        "--dataset imagefolder needs --data DIR; drop --no-download or use --to timm "
        "(--lr too high)")
