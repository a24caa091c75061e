"""Issue 13, training: no code execution on resume, no lost or mixed runs, SIGKILL at random.

Tiny GroupNorm net on synthetic data (tests/data/train_tiny.py): every test here runs in
about a second, except the kill test (20 kills, marked slow).
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from effnet.cli import main
from effnet.data.datasets import TensorImageDataset, TransformedDataset
from effnet.errors import EffnetError
from effnet.train import fit, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent / "data"))
from train_tiny import TinyNet, float_tf, make_image_folder, synthetic  # noqa: E402

QUIET = dict(num_workers=0, progress=False, channels_last=False, log=lambda s: None)


def _data(n, seed=0):
    x, y = synthetic(n, seed=seed)
    return TransformedDataset(TensorImageDataset(x, y), float_tf(), seed=0)


def _fit(out, **kw):
    torch.manual_seed(0)
    args = dict(epochs=1, batch_size=16, recipe="short", output=out, **QUIET)
    args.update(kw)
    return fit(TinyNet(), _data(64), _data(16, seed=1), **args)


class Evil:
    """A pickle that runs code when loaded (the issue's reproduction)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


# ---------------------------------------------------------------- 1: no code execution
def test_resume_never_unpickles_code(tmp_path, capsys):
    make_image_folder(tmp_path / "d", classes=2, per_class=4)
    run, pwned = tmp_path / "run", tmp_path / "PWNED"
    run.mkdir()
    torch.save({"model": Evil(str(pwned)), "optimizer": {}, "epoch": 0}, run / "last.pt")
    rc = main(["train", "--model", "b0", "--dataset", "imagefolder", "--data",
               str(tmp_path / "d"), "--image-size", "32", "--epochs", "1", "--batch-size", "4",
               "--no-progress", "--workers", "0", "--output", str(run), "--resume"])
    assert not pwned.exists(), "the pickled payload ran"
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err and "last.pt" in err, err


def test_checkpoints_hold_only_plain_data(tmp_path):
    _fit(tmp_path, checkpoint_every=1)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)  # raises on any other object
    assert ck["step"] == 4 and len(ck["rng"]) == 1


def test_incomplete_checkpoint_is_one_line_error(tmp_path):  # item 18
    _fit(tmp_path)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    del ck["optimizer"]
    torch.save(ck, tmp_path / "last.pt")
    with pytest.raises(EffnetError, match=r"incomplete \(no 'optimizer'\).*delete it"):
        _fit(tmp_path, epochs=2, resume=True)


def test_eval_every_zero_is_refused(tmp_path):  # item 18
    with pytest.raises(EffnetError, match=r"^eval_every 0 must be >= 1"):
        _fit(tmp_path, eval_every=0)


# ---------------------------------------------------------------- 3: no silent overwrite
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_new_run_into_existing_run_is_refused_unless_force(tmp_path):
    _fit(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(EffnetError, match=r"already holds a training run.*resume.*force"):
        _fit(tmp_path, seed=1)
    assert _snapshot(tmp_path) == before
    _fit(tmp_path, seed=1, force=True)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["seed"] == 1


def test_lock_keeps_a_second_writer_out_and_dead_owners_lock_is_cleared(tmp_path):
    _fit(tmp_path)
    before = _snapshot(tmp_path)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"{live.pid} {os.uname().nodename}\n")
        with pytest.raises(EffnetError, match=rf"in use by another effnet train \(process "
                                              rf"{live.pid}\)"):
            _fit(tmp_path, epochs=2, resume=True)
        assert _snapshot(tmp_path) == {**before, ".lock": (tmp_path / ".lock").read_bytes()}
    finally:
        live.kill()
        live.wait()
    # the owner is dead now: the next run takes the lock over, and releases it at the end
    res = _fit(tmp_path, epochs=2, resume=True)
    assert res.steps == 8 and not (tmp_path / ".lock").exists()


def test_failed_start_leaves_no_folder(tmp_path):
    with pytest.raises(EffnetError, match="eval_every"):
        _fit(tmp_path / "new", eval_every=0)
    with pytest.raises(EffnetError, match="unknown recipe"):
        _fit(tmp_path / "new2", recipe="nonsense-recipe")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 4: resumed settings
def test_resume_with_another_recipe_or_optimizer_is_refused_before_writing(tmp_path):
    _fit(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(EffnetError, match=r"^recipe is 'paper' but .* trained with 'short'"):
        _fit(tmp_path, epochs=2, resume=True, recipe="paper")
    with pytest.raises(EffnetError, match=r"^optimizer is 'sgd' but .* with 'adamw'"):
        _fit(tmp_path, epochs=2, resume=True, optimizer="sgd")
    with pytest.raises(EffnetError, match=r"^batch_size is 8 but .* with 16"):
        _fit(tmp_path, epochs=2, resume=True, batch_size=8)
    assert _snapshot(tmp_path) == before  # config.json too


def test_resume_with_new_lr_uses_it_from_the_next_step(tmp_path):
    const = dict(schedule="constant", warmup_epochs=0)
    _fit(tmp_path, lr=1e-3, **const)
    lines: list[str] = []
    res = _fit(tmp_path, epochs=2, resume=True, lr=4e-3, **{**QUIET, "log": lines.append},
               **const)
    assert [r["lr"] for r in res.history] == [1e-3, 4e-3]
    assert any("--lr changed on resume: 0.001 -> 0.004 from step 5" in ln for ln in lines)
    # and without --lr a resumed run keeps its own
    res = _fit(tmp_path, epochs=3, resume=True, **const)
    assert res.history[-1]["lr"] == 4e-3


def test_resume_keeps_the_runs_recipe_when_auto(tmp_path):
    _fit(tmp_path, recipe="short", optimizer="sgd")
    res = _fit(tmp_path, epochs=2, resume=True, recipe="auto", optimizer="sgd")
    assert res.steps == 8


# ---------------------------------------------------------------- 5: stale temporaries
def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    _fit(tmp_path)
    stale = [tmp_path / ".last.pt.k1ll3d.tmp", tmp_path / "best" / ".model.safetensors.9.tmp",
             tmp_path / "final" / ".config.json.7.tmp"]
    for p in stale:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half a checkpoint")
    _fit(tmp_path, epochs=2, resume=True)
    assert not any(p.exists() for p in stale)
    assert not list(tmp_path.rglob("*.tmp"))


def test_outputs_follow_the_umask(tmp_path):  # small things: not 0600
    old = os.umask(0o022)
    try:
        _fit(tmp_path)
    finally:
        os.umask(old)
    for name in ("last.pt", "config.json", "metrics.csv", "final/model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


# ---------------------------------------------------------------- 0: defaults
def test_auto_recipe_rule():
    from effnet.train.recipes import choose_recipe

    short, why = choose_recipe(421, 1.0)  # the newcomer run
    assert short.name == "short" and "too short" in why
    assert choose_recipe(109_375, 350.0)[0].name == "paper"  # ImageNet, batch 4096, 350 epochs
    assert choose_recipe(50_000, 350.0)[0].name == "short"
    assert choose_recipe(500_000, 20.0)[0].name == "short"


def test_short_recipe_warmup_is_a_fraction_of_the_run():
    from effnet.train.recipes import RECIPES

    r = RECIPES["short"]
    assert r.warmup_steps(total_steps=421, steps_per_epoch=421) == 42
    assert r.warmup_steps(total_steps=10 * 421, steps_per_epoch=421) == 421  # one epoch


def test_zero_init_starts_at_log_num_classes_and_residual_blocks_at_identity():
    from effnet import create_model
    from effnet.nn.blocks import MBConv
    from effnet.train.init import zero_init_head, zero_init_last

    torch.manual_seed(0)
    model = create_model("b0", num_classes=10, in_chans=1).eval()
    zero_init_head(model)
    assert zero_init_last(model) == sum(isinstance(m, MBConv) and m.has_skip
                                        for m in model.modules()) > 0
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    assert math.isclose(loss.item(), math.log(10), rel_tol=1e-6)
    for m in model.modules():
        if isinstance(m, MBConv) and m.has_skip:
            c = m.project.conv.out_channels
            xin = torch.randn(2, c, 8, 8)
            with torch.no_grad():  # eval BN with gamma 0 outputs its beta: the block is x + beta
                torch.testing.assert_close(m(xin), xin + m.project.bn.bias.view(1, -1, 1, 1))


def test_ema_is_evaluated_only_after_its_window(tmp_path):
    lines: list[str] = []
    res = _fit(tmp_path, recipe="paper", **{**QUIET, "log": lines.append})  # EMA 0.9999, 4 steps
    assert any("averages over ~10000 steps" in ln for ln in lines)
    saved = load_file(tmp_path / "final" / "model.safetensors")
    for k, v in res.model.state_dict().items():
        assert torch.equal(saved[k], v), k  # the raw weights, not the 4-step EMA
    assert "val_top1_raw" not in res.history[0]


def test_cli_default_recipe_is_auto_and_says_why(tmp_path, capsys):
    make_image_folder(tmp_path / "d", classes=2, per_class=6)
    assert main(["train", "--model", "b0", "--dataset", "imagefolder", "--data",
                 str(tmp_path / "d"), "--image-size", "32", "--epochs", "1", "--batch-size", "5",
                 "--no-progress", "--workers", "0", "--threads", "1",
                 "--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "recipe auto -> short: a 1-epoch, 2-step run is too short" in out
    assert "zero classifier, zero residual branches" in out


# ---------------------------------------------------------------- SIGKILL at 20 moments
def _train_child(out: str, epochs: int) -> None:
    torch.set_num_threads(1)
    _fit(Path(out), epochs=epochs, resume=True, checkpoint_every=1)


def _metrics(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in ("epoch_s", "img_per_s")}
                for r in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkill_at_20_random_moments_then_resume_is_bit_identical(tmp_path):
    """Checkpoint every step; kill the training process at 20 random moments (during steps,
    evaluation and checkpoint writes alike), resume each time; the end must match an
    uninterrupted run bit for bit, with no temporary file or lock left behind."""
    ctx = multiprocessing.get_context("fork")  # no interpreter start-up: kills land in training
    epochs = 15  # 60 steps
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    t0 = time.perf_counter()
    p = ctx.Process(target=_train_child, args=(str(whole), epochs))
    p.start()
    p.join()
    assert p.exitcode == 0
    step_s = (time.perf_counter() - t0) / (epochs * 4)  # an over-estimate (start-up included)
    rng = random.Random(13)
    ckpt = broken / "last.pt"

    def mtime() -> int:
        return ckpt.stat().st_mtime_ns if ckpt.exists() else 0

    killed, steps = 0, []
    for _ in range(20):
        before = mtime()
        p = ctx.Process(target=_train_child, args=(str(broken), epochs))
        p.start()
        deadline = time.time() + 60
        while mtime() == before and p.is_alive() and time.time() < deadline:
            time.sleep(0.001)  # this process is training: it wrote a checkpoint
        time.sleep(rng.uniform(0.0, 2 * step_s))  # a random moment of step, eval or write
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        killed += p.exitcode == -signal.SIGKILL
        steps.append(load_checkpoint(ckpt)["step"])
    assert killed == 20, "the run finished before all 20 kills"
    assert steps == sorted(steps) and len(set(steps)) >= 10, steps  # kills all through the run
    assert not (broken / "summary.json").exists()
    p = ctx.Process(target=_train_child, args=(str(broken), epochs))
    p.start()
    p.join()
    assert p.exitcode == 0
    for name in ("final/model.safetensors", "best/model.safetensors"):
        a, b = load_file(broken / name), load_file(whole / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs after 20 kills"
    ca = load_checkpoint(broken / "last.pt")
    cb = load_checkpoint(whole / "last.pt")
    assert ca["step_losses"] == cb["step_losses"] and len(cb["step_losses"]) == epochs * 4
    assert _metrics(broken / "metrics.csv") == _metrics(whole / "metrics.csv")
    left = [p.name for p in broken.rglob("*") if p.name.endswith(".tmp") or p.name == ".lock"]
    assert left == []
