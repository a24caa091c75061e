"""Never lose work, and scale out: SIGKILL + --resume, and torchrun (gloo) vs one process."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent / "data"))
from train_tiny import make_image_folder  # noqa: E402

DATA = Path(__file__).parent / "data"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cmd(data, out, *extra):
    return [sys.executable, "-m", "effnet", "train", "--model", "b0", "--dataset", "imagefolder",
            "--data", str(data), "--image-size", "32", "--batch-size", "8", "--epochs", "2",
            "--recipe", "paper", "--augment", "light", "--val-fraction", "0.2", "--workers", "0",
            "--threads", "1", "--no-progress", "--checkpoint-every", "2", "--seed", "0",
            "--output", str(out), *extra]


def _metrics(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in ("epoch_s", "img_per_s")}
                for r in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_same_weights(tmp_path):
    """Paper recipe (RMSpropTF, step schedule, EMA), checkpoints every 2 steps, b0 at 32 px.

    Deterministic settings: one thread, no workers, fixed seed. Same kernels in both runs, so
    the weights must agree exactly (CPU convolutions are deterministic at a fixed thread count).
    """
    data = tmp_path / "data"
    make_image_folder(data, classes=4, per_class=20)  # 64 train images: 8 steps per epoch
    broken, whole = tmp_path / "broken", tmp_path / "whole"

    proc = subprocess.Popen(_cmd(data, broken), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (broken / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # the first mid-epoch checkpoint exists: kill now
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = torch.load(broken / "last.pt", weights_only=False)["step"]
    assert 2 <= killed_at < 16
    assert not (broken / "summary.json").exists()

    assert subprocess.run(_cmd(data, broken, "--resume"), env=ENV, capture_output=True,
                          timeout=300).returncode == 0
    assert subprocess.run(_cmd(data, whole), env=ENV, capture_output=True,
                          timeout=300).returncode == 0

    for name in ("final/model.safetensors", "best/model.safetensors"):
        a, b = load_file(broken / name), load_file(whole / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resume"
    ck_a = torch.load(broken / "last.pt", weights_only=False)
    ck_b = torch.load(whole / "last.pt", weights_only=False)
    for k in ck_b["model"]:
        assert torch.equal(ck_a["model"][k], ck_b["model"][k])
    assert ck_a["step_losses"] == ck_b["step_losses"] and len(ck_b["step_losses"]) == 16
    assert _metrics(broken / "metrics.csv") == _metrics(whole / "metrics.csv")
    assert json.loads((broken / "summary.json").read_text())["steps"] == 16


def _torchrun(nproc, *args):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-port", str(29500 + os.getpid() % 1000), *args]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    """torchrun, 2 CPU processes x batch 8 vs 1 process x batch 16, same seed.

    BatchNorm would normalise each process's 8 images with their own statistics, so the
    forward itself would differ (and SyncBatchNorm has no CPU kernel); the test net uses
    GroupNorm, whose output for an image does not depend on the rest of the batch. Then the
    global batch is the same set of images (DistributedSampler deals one permutation out
    round-robin), the per-image augmentation is seeded by (seed, epoch, index), DDP averages
    the two processes' mean gradients = the gradient of the mean over 16, and the logged loss
    is all-reduced. What remains is float32 summation order (~1e-7 relative per reduction),
    which 8 AdamW steps can amplify a little: rtol 1e-4 on the losses and 1e-4 on weights.
    """
    script = str(DATA / "train_tiny.py")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    env = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] /
                                                                  "src"),
                                                              ENV.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, script, str(one)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(_torchrun(2, script, str(two)), env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert len(a["losses"]) == len(b["losses"]) == 8  # 64 images / 16 per step x 2 epochs
    assert a["losses"][0] != a["losses"][-1]
    torch.testing.assert_close(torch.tensor(b["losses"]), torch.tensor(a["losses"]),
                               rtol=1e-4, atol=1e-6)
    for k in a["weights"]:
        torch.testing.assert_close(torch.tensor(b["weights"][k]), torch.tensor(a["weights"][k]),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torchrun_effnet_train_cli_writes_once_on_rank0(tmp_path):
    data = tmp_path / "data"
    make_image_folder(data, classes=2, per_class=12)
    out = tmp_path / "run"
    cmd = _torchrun(2, "-m", "effnet", "train", "--model", "b0", "--dataset", "imagefolder",
                    "--data", str(data), "--image-size", "32", "--batch-size", "8",
                    "--epochs", "1", "--recipe", "short", "--workers", "0", "--threads", "1",
                    "--no-progress", "--output", str(out))
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps"] == 2  # 20 train images // 8
    assert r.stdout.count("done in") == 1  # rank 0 prints
    assert sorted(p.name for p in out.iterdir()) == [
        "best", "config.json", "final", "last.pt", "metrics.csv", "summary.json"]
