"""effnet.train.fit and `effnet train`: learning, files, clear errors, NaN handling."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from effnet.cli import main
from effnet.data.datasets import TensorImageDataset, TransformedDataset
from effnet.errors import EffnetError
from effnet.train import TrainingDiverged, fit, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent / "data"))
from train_tiny import TinyNet, float_tf, make_image_folder, synthetic  # noqa: E402

QUIET = dict(num_workers=0, progress=False, channels_last=False, log=lambda s: None)


def _data(n, seed=0):
    x, y = synthetic(n, seed=seed)
    return TransformedDataset(TensorImageDataset(x, y), float_tf(), seed=0)


def test_fit_in_memory_learns_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = TinyNet()
    val = TransformedDataset(TensorImageDataset(*synthetic(64, seed=1)),
                             float_tf().transforms[-1], seed=0)
    res = fit(model, _data(256), val, epochs=4, batch_size=32, recipe="short", lr=3e-3,
              seed=0, **QUIET)
    assert res.val_top1 is not None and res.val_top1 >= 0.9  # chance is 0.25
    assert res.steps == 4 * 8 and len(res.history) == 4 and res.output is None
    assert list(tmp_path.iterdir()) == []


def test_fit_max_steps_budget():
    torch.manual_seed(0)
    res = fit(TinyNet(), _data(64), None, epochs=100, max_steps=5, batch_size=16,
              recipe="short", **QUIET)
    assert res.steps == 5 and len(res.step_losses) == 5 and res.epochs == 2


class NaNAfter(torch.nn.Module):
    """Wraps a model; training forwards return NaN from call `n` on."""

    def __init__(self, inner: torch.nn.Module, n: int) -> None:
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls > self.n:
                return out * float("nan")
        return out


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = NaNAfter(TinyNet(), n=6)  # 4 steps per epoch: NaN in epoch 2
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 7 \(epoch 2\).*last.pt"):
        fit(model, _data(64), _data(16), epochs=3, batch_size=16, recipe="paper",
            output=tmp_path, **QUIET)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert (ck["epoch"], ck["step"]) == (1, 4)
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best", "config.json", "last.pt", "metrics.csv"]
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["model.safetensors"]
    assert len((tmp_path / "metrics.csv").read_text().strip().splitlines()) == 2


def test_batch_larger_than_dataset(tmp_path):
    with pytest.raises(EffnetError, match="larger than the training set.*at most 10"):
        fit(TinyNet(), _data(10), None, epochs=1, batch_size=32, output=tmp_path, **QUIET)
    assert list(tmp_path.iterdir()) == []


def _train_cli(data, out, *extra):
    return main(["train", "--model", "b0", "--dataset", "imagefolder", "--data", str(data),
                 "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--no-progress",
                 "--threads", "1", "--output", str(out), *extra])


def _one_line_error(capsys, pattern):
    err = capsys.readouterr().err.strip()
    assert err.startswith("effnet: error:") and len(err.splitlines()) == 1, err
    import re

    assert re.search(pattern, err), err


def test_cli_missing_data_dir(tmp_path, capsys):
    assert _train_cli(tmp_path / "nowhere", tmp_path / "run") == 2
    _one_line_error(capsys, r"nowhere does not exist: pass --data DIR")
    assert not (tmp_path / "run").exists()


def test_cli_empty_class_folder(tmp_path, capsys):
    make_image_folder(tmp_path / "d", classes=2, per_class=4)
    (tmp_path / "d" / "zebra").mkdir()
    assert _train_cli(tmp_path / "d", tmp_path / "run") == 2
    _one_line_error(capsys, r"zebra holds no images")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("workers", ["0", "1"])
def test_cli_unreadable_image(tmp_path, capsys, workers):
    make_image_folder(tmp_path / "d", classes=2, per_class=8)
    (tmp_path / "d" / "class1" / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    rc = _train_cli(tmp_path / "d", tmp_path / "run", "--val-fraction", "0", "--workers", workers,
                    "--batch-size", "17")
    assert rc == 2
    _one_line_error(capsys, r"cannot decode image \S*broken\.jpg.*remove or replace")
    run = tmp_path / "run"
    assert not (run / "last.pt").exists() and not list(run.glob(".*tmp"))


def test_cli_batch_larger_than_dataset(tmp_path, capsys):
    make_image_folder(tmp_path / "d", classes=2, per_class=4)
    assert _train_cli(tmp_path / "d", tmp_path / "run", "--batch-size", "64") == 2
    _one_line_error(capsys, r"batch size 64 is larger than the training set \(7 images\)")


def test_cli_tiny_run_writes_every_artifact(tmp_path, capsys):
    import json

    from safetensors.torch import load_file

    from effnet import create_model

    make_image_folder(tmp_path / "d", classes=3, per_class=8)
    assert _train_cli(tmp_path / "d", tmp_path / "run", "--recipe", "short", "--workers", "0",
                      "--tensorboard") == 0
    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert {"metrics.csv", "summary.json", "best", "final", "last.pt", "config.json",
            "tensorboard"} <= names
    assert not {"best.safetensors", "final.safetensors"} & names  # one weight format: folders
    s = json.loads((run / "summary.json").read_text())
    model = create_model("b0", num_classes=3)
    assert s["params"] == sum(p.numel() for p in model.parameters())
    assert s["macs"] > 0 and s["epochs"] == 1 and s["best"]["val_top1"] is not None
    best = load_file(run / "best" / "model.safetensors")
    model.load_state_dict(best, strict=True)
    for source, ref in ((run / "best", best), (run / "final", load_file(
            run / "final" / "model.safetensors"))):  # save_pretrained folders, no name needed
        loaded = create_model(pretrained=source)
        assert loaded.num_classes == 3
        for k, v in loaded.state_dict().items():
            assert torch.equal(v, ref[k]), k
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,step,lr,train_loss,train_top1,val_loss,val_top1,val_top5")


def test_cli_finetunes_from_packaged_lite0_weights(tmp_path):
    """--pretrained packaged: the backbone starts from the shipped ImageNet Lite0 weights and a
    new classifier is sized for the data (with lr 0 the backbone must stay exactly as shipped)."""
    from safetensors.torch import load_file

    from effnet import create_model

    make_image_folder(tmp_path / "d", classes=3, per_class=6)
    rc = _train_cli(tmp_path / "d", tmp_path / "run", "--model", "lite0", "--pretrained",
                    "packaged", "--recipe", "short-sgd", "--lr", "0", "--max-steps", "1",
                    "--workers", "0", "--zero-init-head")
    assert rc == 0
    shipped = create_model("lite0", pretrained="packaged").state_dict()
    tuned = load_file(tmp_path / "run" / "final" / "model.safetensors")
    assert tuned["classifier.weight"].shape == (3, 1280)
    assert not tuned["classifier.weight"].any()  # --zero-init-head, and lr 0 kept it there
    convs = [k for k, v in shipped.items() if k.endswith("conv.weight")]
    assert len(convs) > 40
    for k in convs:
        assert torch.equal(tuned[k], shipped[k]), k


def test_on_epoch_gets_each_row_after_its_checkpoint_and_can_stop_the_run(tmp_path):
    seen = []

    class Stop(Exception):
        pass

    def on_epoch(row):
        ck = load_checkpoint(tmp_path / "last.pt")
        seen.append((row["epoch"], ck["epoch"], row["val_top1"]))
        if row["epoch"] == 2:
            raise Stop  # what a pruner does

    torch.manual_seed(0)
    with pytest.raises(Stop):
        fit(TinyNet(), _data(64), _data(16, seed=1), epochs=4, batch_size=16, recipe="short",
            output=tmp_path, on_epoch=on_epoch, **QUIET)
    assert [(e, c) for e, c, _ in seen] == [(1, 1), (2, 2)]
    rows = (tmp_path / "metrics.csv").read_text().strip().splitlines()[1:]
    assert len(rows) == 2
    for (_, _, top1), line in zip(seen, rows, strict=True):
        assert float(line.split(",")[6]) == pytest.approx(top1)  # the val_top1 column
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


class ConstantImages(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.full((1, 4, 4), 3.0), i % 2


def test_bn_momentum_sets_the_running_average_weight():
    """One step on images that are all 3.0, lr 0: a BN with momentum m must hold running mean
    m*3 and running variance (1-m)*1 + m*0 (PyTorch's rule, from the initial 0 and 1)."""
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(16, 2))
    fit(model, ConstantImages(), None, epochs=1, max_steps=1, batch_size=4, recipe="short",
        lr=0.0, bn_momentum=0.5, **QUIET)
    bn = model[0]
    assert bn.running_mean.item() == pytest.approx(1.5)
    assert bn.running_var.item() == pytest.approx(0.5)
    with pytest.raises(EffnetError, match=r"outside \(0, 1\].*0\.1 for short runs"):
        fit(model, ConstantImages(), None, epochs=1, batch_size=4, bn_momentum=0.0, **QUIET)


def test_cli_bn_momentum_reaches_the_run_config(tmp_path):
    make_image_folder(tmp_path / "d", classes=3, per_class=8)
    assert _train_cli(tmp_path / "d", tmp_path / "run", "--recipe", "short", "--workers", "0",
                      "--bn-momentum", "0.1") == 0
    import json

    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["bn_momentum"] == 0.1


def test_trained_greyscale_model_predicts_and_evaluates_with_its_training_preprocessing(
        tmp_path, capsys):
    """`effnet train` stores the preprocessing and class names in best/: `effnet eval` on the
    val folder must then reproduce the run's own validation top-1, with no extra flags."""
    import json

    for split, n in (("train", 8), ("val", 6)):
        make_image_folder(tmp_path / "d" / split, classes=3, per_class=n)
    assert _train_cli(tmp_path / "d", tmp_path / "run", "--recipe", "short", "--workers", "0",
                      "--in-chans", "1", "--epochs", "2") == 0
    best = json.loads((tmp_path / "run" / "best" / "config.json").read_text())["pretrained_cfg"]
    assert best["input_size"] == [1, 32, 32] and best["label_names"] == ["class0", "class1",
                                                                         "class2"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", "--weights", str(tmp_path / "run" / "best"), "--data",
                 str(tmp_path / "d" / "val"), "--workers", "0", "--no-progress",
                 "--no-optimize"]) == 0
    out = capsys.readouterr().out
    assert f"top-1 {100 * summary['best']['val_top1']:.2f}%" in out, out
    assert "at 32px" in out
    assert main(["predict", str(tmp_path / "d" / "val" / "class2" / "0.png"), "--weights",
                 str(tmp_path / "run" / "best"), "--topk", "1"]) == 0
    assert "class" in capsys.readouterr().out
