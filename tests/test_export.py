"""ONNX export (checked in onnxruntime), TorchScript export, and the cached ONNX file."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import effnet
from effnet.cli import main
from effnet.inference import export as export_mod
from effnet.inference.export import cached_onnx, export_onnx, export_torchscript
from tests.conftest import randomize_bn_stats


def _random_b0() -> torch.nn.Module:
    torch.manual_seed(0)
    model = effnet.create_model("b0")
    randomize_bn_stats(model, seed=1)
    return model.eval()


def _run_onnx(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_onnx_dynamic_batch_agrees_with_pytorch(tmp_path):
    model = _random_b0()
    path = export_onnx(model, tmp_path / "b0.onnx", image_size=96)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b0.onnx"]  # no temp files left
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 96, 96]
    for batch in (1, 3):
        x = torch.randn(batch, 3, 96, 96, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(_run_onnx(path, x), expected, atol=1e-4, rtol=1e-4)


def test_onnx_of_tf_padded_packaged_lite0_via_cli(tmp_path, capsys):
    out = tmp_path / "lite0.onnx"
    code = main(["export", "lite0", "--weights", "packaged", "--format", "onnx", "--output",
                 str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "dynamic batch" in stdout and "max |logit diff|" in stdout
    model = effnet.create_model("lite0", pretrained="packaged").eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(_run_onnx(out, x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_agrees_and_carries_config(tmp_path):
    model = _random_b0()
    path = export_torchscript(model, tmp_path / "b0.pt", image_size=64)
    extra = {"effnet_config.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["effnet_config.json"])["model_name"] == "b0"
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)


def test_cached_onnx_is_reused_until_weights_change(tmp_path, monkeypatch):
    model = _random_b0()
    weights = model.save_pretrained(tmp_path / "b0")
    first = cached_onnx(model, weights, 64)
    assert first.parent == weights and first.suffix == ".onnx"

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cached file is newer than the weights")

    monkeypatch.setattr(export_mod, "export_onnx", no_export)
    assert cached_onnx(model, weights, 64) == first
    # Touched, same content: still the same model, the cache stays.
    newer = first.stat().st_mtime + 10
    os.utime(weights / "model.safetensors", (newer, newer))
    assert cached_onnx(model, weights, 64) == first
    # Other weights copied in with an OLDER modification time (cp -p, issue 13 item 9): the
    # cache is keyed on the content, so it is exported again.
    torch.manual_seed(1)
    other = effnet.create_model("b0").save_pretrained(tmp_path / "other")
    older = first.stat().st_mtime - 1000
    os.utime(other / "model.safetensors", (older, older))
    shutil.copy2(other / "model.safetensors", weights / "model.safetensors")
    assert (weights / "model.safetensors").stat().st_mtime < first.stat().st_mtime

    def fake_export(model, path, image_size):
        path.write_bytes(b"new")
        return path

    monkeypatch.setattr(export_mod, "export_onnx", fake_export)
    fresh = cached_onnx(model, weights, 64)
    assert fresh.read_bytes() == b"new" and fresh != first and not first.exists()


def test_export_unknown_model_is_one_line(tmp_path, capsys):
    code = main(["export", "b9", "--output", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown model 'b9'" in err
    assert not (tmp_path / "x.onnx").exists()
