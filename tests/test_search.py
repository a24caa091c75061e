"""The alpha/beta/gamma grid search (issue 5, issue 10): grid, measured MACs, resume, sharing.

Training is replaced by `fake_trainer` (a known score per candidate, logged to a
file) wherever the test is about the search's mechanics; the proxy trainer runs
for real where the test is about what the search trains.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from effnet.cli import main as cli_main
from effnet.errors import EffnetError
from effnet.proxy.queue import finished_jobs
from effnet.proxy.trainer import ProxyData, ProxyRecipe
from effnet.search.config import SearchConfig
from effnet.search.grid import enumerate_grid
from effnet.search.results import best_coefficients, pruning_saving
from effnet.search.run import run_search
from tests.postgres import postgres_url

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- a stand-in trainer
def fake_score(width: float, depth: float, resolution: int, seed: int) -> float:
    """A made-up validation accuracy: deeper is better here, plus a small seed effect."""
    return 0.3 + 0.2 * depth + 0.001 * resolution - 0.05 * width + 0.01 * seed


def candidate_key(width: float, depth: float, resolution: int) -> str:
    return f"{width:.4f},{depth:.4f},{resolution}"


@pytest.fixture(scope="module")
def fm_data() -> ProxyData:
    """Fashion-MNIST for the proxy (the fake trainers read only its classes and channels)."""
    return ProxyData("fashion-mnist")


def fake_trainer(model, resolution, data, recipe, seed, on_epoch=None):
    """Stands in for training: logs start/end to $EFFNET_FAKE_LOG and sleeps $EFFNET_FAKE_SLEEP."""
    w, d = model.spec.width_mult, model.spec.depth_mult
    key = candidate_key(w, d, resolution)
    log = os.environ.get("EFFNET_FAKE_LOG")

    def write(event: str) -> None:
        if log:
            with open(log, "a") as f:
                f.write(f"{event} {key} {seed} {os.getpid()}\n")

    write("start")
    score = fake_score(w, d, resolution, seed)
    for epoch in range(1, recipe.epochs + 1):
        time.sleep(float(os.environ.get("EFFNET_FAKE_SLEEP", "0")) / recipe.epochs)
        if on_epoch is not None:
            on_epoch(epoch, score * epoch / recipe.epochs)
    write("end")
    return {"val_top1": score, "seconds": 0.01}


def read_log(path: Path) -> list[tuple[str, str, int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        event, key, seed, pid = line.split()
        out.append((event, key, int(seed), int(pid)))
    return out


def point_keys(cfg: SearchConfig) -> dict[str, str]:
    """Grid label -> the fake trainer's key, computed from the paper's Eq. 3 at phi = 1."""
    return {p.label: candidate_key(cfg.base_width * p.beta, cfg.base_depth * p.alpha,
                                   int(round(cfg.image_size * p.gamma))) for p in cfg.points()}


def env_with_fake(log: Path, sleep: float) -> dict[str, str]:
    env = dict(os.environ)
    env.update(EFFNET_FAKE_LOG=str(log), EFFNET_FAKE_SLEEP=str(sleep),
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src"),
                                           env.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return env


def search_cmd(storage: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "effnet", "search", "--base-width", "0.25", "--grid-step",
            "0.1", "--tolerance", "0.05", "--seeds", "1", "--epochs", "1",
            "--mac-tolerance", "none", "--storage", storage, "--no-progress",
            "--heartbeat-interval", "1", "--grace-period", "3",
            "--trainer", "tests.test_search:fake_trainer", *extra]


def completed_points(storage: str, study: str = "effnet-search") -> list[str]:
    return [k for k, r in finished_jobs(storage, study).items() if not r.get("pruned")]


# ---------------------------------------------------------------- the grid
def brute_force_grid(step: str, target: str, tol: str, cap: str = "10") -> set:
    """Every (a, b, g) on 1 + k*step up to `cap` with |a*b^2*g^2 - target| <= tol, exactly."""
    s, t, e, c = Decimal(step), Decimal(target), Decimal(tol), Decimal(cap)
    values = []
    v = Decimal(1)
    while v <= min(c, t + e):
        values.append(v)
        v += s
    return {(float(a), float(b), float(g)) for a in values for b in values for g in values
            if abs(a * b * b * g * g - t) <= e}


@pytest.mark.parametrize("step,target,tol,cap", [
    ("0.05", "2", "0.1", None), ("0.05", "2", "0.05", None), ("0.1", "2", "0.2", None),
    ("0.05", "3", "0.15", None), ("0.1", "2", "0.1", "1.3"), ("0.25", "2", "0", None)])
def test_grid_is_exactly_the_points_satisfying_the_constraint(step, target, tol, cap):
    got = enumerate_grid(float(step), float(target), float(tol),
                         float(cap) if cap else None)
    expected = brute_force_grid(step, target, tol, cap or "10")
    assert {(p.alpha, p.beta, p.gamma) for p in got} == expected
    assert len(got) == len(expected)
    assert all(min(p.alpha, p.beta, p.gamma) >= 1 for p in got)


def test_grid_holds_the_papers_coefficients():
    # Paper Sec. 3.3: alpha=1.2, beta=1.1, gamma=1.15; 1.2 * 1.1^2 * 1.15^2 = 1.920270.
    pts = {(p.alpha, p.beta, p.gamma): p for p in enumerate_grid()}
    assert (1.2, 1.1, 1.15) in pts
    assert pts[(1.2, 1.1, 1.15)].constraint == pytest.approx(1.92027, abs=1e-6)


@pytest.mark.parametrize("kwargs", [{"step": 0}, {"step": -0.1}, {"tolerance": -1},
                                    {"target": 0.5}, {"max_value": 0.9}, {"step": 1e-9}])
def test_grid_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        enumerate_grid(**kwargs)


# ---------------------------------------------------------------- in-process search
def macs_by_flop_counter(model: torch.nn.Module, resolution: int) -> int:
    """MACs of one forward at batch 1, counted here with torch's FlopCounterMode (FLOPs / 2)."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 1, resolution, resolution))
    return fc.get_total_flops() // 2


def test_search_measures_macs_and_skips_candidates_off_the_budget(tmp_path, monkeypatch,
                                                                  fm_data):
    from effnet import CompoundScaling, create_model

    log = tmp_path / "log"
    monkeypatch.setenv("EFFNET_FAKE_LOG", str(log))
    cfg = SearchConfig(base="b0", image_size=32, grid_step=0.25, tolerance=0.2, seeds=1,
                       recipe=ProxyRecipe(epochs=1), mac_tolerance=0.25)
    res = run_search(cfg, f"sqlite:///{tmp_path / 's.db'}", trainer=fake_trainer,
                     data=fm_data, progress=False)
    base = macs_by_flop_counter(create_model("b0", num_classes=10, in_chans=1), 32)
    assert res.base_cost.macs == base
    started = {k for e, k, _, _ in read_log(log) if e == "start"}
    keys = point_keys(cfg)
    assert len(res.rows) == 3
    for row in res.rows:
        scaling = CompoundScaling(row["alpha"], row["beta"], row["gamma"])
        model = create_model("b0", phi=1, scaling=scaling, num_classes=10, in_chans=1)
        res_px = int(round(32 * row["gamma"]))
        macs = macs_by_flop_counter(model, res_px)
        assert row["resolution"] == res_px
        assert row["macs"] == macs
        assert row["params"] == sum(p.numel() for p in model.parameters())
        assert row["mac_distance"] == pytest.approx(macs / (2 * base) - 1)
        trained = keys[row["label"]] in started
        assert trained == (abs(macs / (2 * base) - 1) <= 0.25), row
        assert row["status"] == ("complete" if trained else "off-budget")


def test_search_trains_every_point_once_ranks_them_and_resumes(tmp_path, monkeypatch,
                                                               fm_data):
    log = tmp_path / "log"
    monkeypatch.setenv("EFFNET_FAKE_LOG", str(log))
    cfg = SearchConfig(base_width=0.25, grid_step=0.1, tolerance=0.05, seeds=2,
                       recipe=ProxyRecipe(epochs=2), mac_tolerance=None)
    db = f"sqlite:///{tmp_path / 's.db'}"
    first = run_search(cfg, db, trainer=fake_trainer, data=fm_data, progress=False,
                       max_candidates=4)
    assert len(first.trained_now) == 4
    second = run_search(cfg, db, trainer=fake_trainer, data=fm_data, progress=False)
    assert len(second.trained_now) == len(cfg.points()) - 4
    assert not set(first.trained_now) & set(second.trained_now)
    third = run_search(cfg, db, trainer=fake_trainer, data=fm_data, progress=False)
    assert third.trained_now == []
    starts = [(k, s) for e, k, s, _ in read_log(log) if e == "start"]
    assert sorted(starts) == sorted((k, s) for k in point_keys(cfg).values() for s in (0, 1))

    keys = point_keys(cfg)
    expected = {}
    for p in cfg.points():
        w, d, r = cfg.base_width * p.beta, p.alpha, int(round(cfg.image_size * p.gamma))
        expected[p.label] = [fake_score(w, d, r, 0), fake_score(w, d, r, 1)]
    rows = third.rows
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    values = [r["val_top1"] for r in rows]
    assert values == sorted(values, reverse=True)
    for r in rows:
        assert r["status"] == "complete" and keys[r["label"]]
        assert r["val_top1"] == pytest.approx(sum(expected[r["label"]]) / 2)
        assert r["val_top1_std"] == pytest.approx(0.01 / 2**0.5)  # sample std of x, x + 0.01
    best, row = best_coefficients(str(tmp_path / "s.db"))
    assert (best.alpha, best.beta, best.gamma) == (rows[0]["alpha"], rows[0]["beta"],
                                                   rows[0]["gamma"])
    assert row["val_top1"] == pytest.approx(rows[0]["val_top1"])


def test_resuming_with_other_settings_is_refused(tmp_path, fm_data):
    cfg = SearchConfig(base_width=0.25, grid_step=0.25, tolerance=0.2, seeds=1,
                       mac_tolerance=None)
    db = f"sqlite:///{tmp_path / 's.db'}"
    run_search(cfg, db, trainer=fake_trainer, data=fm_data, progress=False, max_candidates=1)
    other = SearchConfig(base_width=0.25, grid_step=0.25, tolerance=0.2, seeds=2,
                         mac_tolerance=None)
    with pytest.raises(EffnetError, match="seeds.*study_name"):
        run_search(other, db, trainer=fake_trainer, data=fm_data, progress=False)
    lr = SearchConfig(base_width=0.25, grid_step=0.25, tolerance=0.2, seeds=1,
                      mac_tolerance=None, recipe=ProxyRecipe(lr=1e-3))
    with pytest.raises(EffnetError, match="recipe.*study_name"):
        run_search(lr, db, trainer=fake_trainer, data=fm_data, progress=False)


def test_pruning_stops_hopeless_candidates_and_measures_the_saving(tmp_path, fm_data):
    calls = []

    def trainer(model, resolution, data, recipe, seed, on_epoch=None):
        # Deep candidates learn; shallow ones stay at chance. 4 epochs, 0.05 s each.
        good = model.spec.depth_mult >= 1.4
        for e in range(1, recipe.epochs + 1):
            calls.append((model.spec.depth_mult, seed, e))
            time.sleep(0.05)
            on_epoch(e, (0.2 + 0.15 * e) if good else 0.1)
        return {"val_top1": 0.8 if good else 0.1, "seconds": 0.05 * recipe.epochs}

    cfg = SearchConfig(base_width=0.25, grid_step=0.1, tolerance=0.05, seeds=2,
                       recipe=ProxyRecipe(epochs=4), mac_tolerance=None)
    db = f"sqlite:///{tmp_path / 's.db'}"
    res = run_search(cfg, db, trainer=trainer, data=fm_data, progress=False, prune=True)
    pruned = [r for r in res.rows if r["status"] == "pruned"]
    complete = [r for r in res.rows if r["status"] == "complete"]
    assert pruned and complete
    assert all(r["alpha"] < 1.4 for r in pruned)
    assert all(r["epochs_done"] < r["epochs_budget"] == 8 for r in pruned)
    assert len(calls) < len(cfg.points()) * 2 * 4  # fewer epochs than without pruning
    saving = pruning_saving(res.rows)
    assert saving["pruned"] == len(pruned)
    expected = sum(r["seconds"] * (8 / r["epochs_done"] - 1) for r in pruned)
    assert saving["seconds_saved"] == pytest.approx(expected)
    assert 0 < saving["fraction_saved"] < 1


# ---------------------------------------------------------------- CLI
def test_scale_from_search_uses_the_best_coefficients(tmp_path, capsys, fm_data):
    cfg = SearchConfig(base_width=0.25, grid_step=0.25, tolerance=0.2, seeds=1,
                       mac_tolerance=None)
    db = tmp_path / "s.db"
    run_search(cfg, f"sqlite:///{db}", trainer=fake_trainer, data=fm_data, progress=False)
    # fake_score grows with depth: the best of this grid is the deepest point, alpha = 2.
    assert cli_main(["scale", "--phi", "0..1", "--from-search", str(db)]) == 0
    out = capsys.readouterr().out
    assert "alpha=2 beta=1 gamma=1 " in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["scale", "--phi", "1", "--from-search", str(tmp_path / "none.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effnet: error: no search database") and "\n" not in err
    assert cli_main(["search", "--base", "nope", "--storage", str(tmp_path / "x.db")]) == 2
    assert "unknown --base" in capsys.readouterr().err
    assert cli_main(["search", "--grid-step", "0.3", "--tolerance", "0.01",
                     "--storage", str(tmp_path / "x.db")]) == 2
    assert "grid is empty" in capsys.readouterr().err
    assert cli_main(["search", "--recipe", "momentum=0.9", "--storage",
                     str(tmp_path / "x.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad --recipe item 'momentum=0.9'" in err and "weight_decay" in err
    assert "\n" not in err


# ---------------------------------------------------------------- kill and resume
@pytest.mark.slow
def test_search_killed_partway_resumes_with_the_remaining_candidates_only(tmp_path):
    log = tmp_path / "log"
    db = f"sqlite:///{tmp_path / 's.db'}"
    env = env_with_fake(log, sleep=0.6)
    proc = subprocess.Popen(search_cmd(db, "--output", str(tmp_path)), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while sum(e == "end" for e, *_ in read_log(log)) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the search made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = completed_points(db)
    cfg = SearchConfig(base_width=0.25, grid_step=0.1, tolerance=0.05, seeds=1,
                       mac_tolerance=None)
    keys = point_keys(cfg)
    assert 2 <= len(done_before) < len(keys)
    n_lines = len(read_log(log))

    out = subprocess.run(search_cmd(db, "--output", str(tmp_path)), cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rerun = read_log(log)[n_lines:]
    started_again = [k for e, k, _, _ in rerun if e == "start"]
    assert len(started_again) == len(set(started_again))          # once each
    assert not set(started_again) & {keys[p] for p in done_before}  # finished: never again
    assert set(started_again) == {keys[p] for p in keys if p not in done_before}
    assert sorted(completed_points(db)) == sorted(keys)
    assert (tmp_path / "search-effnet-search.md").exists()


# ---------------------------------------------------------------- PostgreSQL
@pytest.mark.slow
def test_two_workers_share_a_postgresql_study_without_duplicates(tmp_path):
    study = f"pg-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "log"
    cfg = SearchConfig(base_width=0.25, grid_step=0.1, tolerance=0.05, seeds=1,
                       mac_tolerance=None)
    keys = point_keys(cfg)
    with postgres_url() as url:
        env = env_with_fake(log, sleep=0.8)
        cmd = search_cmd(url, "--study-name", study, "--output", str(tmp_path))
        procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
        done = completed_points(url, study)
    starts = [(k, pid) for e, k, _, pid in read_log(log) if e == "start"]
    started = [k for k, _ in starts]
    assert sorted(started) == sorted(keys.values())  # every point once, none twice
    per_worker = {pid: 0 for pid in (p.pid for p in procs)}
    for _, pid in starts:
        per_worker[pid] += 1
    assert len(per_worker) == 2 and all(n >= 1 for n in per_worker.values()), per_worker
    assert sorted(done) == sorted(keys)


# ---------------------------------------------------------------- the proxy trainer
def test_the_search_trains_each_candidate_with_the_proxy_trainer(tmp_path):
    """Item 8 of issue 10: a candidate's score is train_proxy's on the config's recipe."""
    from effnet.proxy.trainer import train_proxy

    recipe = ProxyRecipe(epochs=2, batch_size=32, train_size=96, val_size=64)
    cfg = SearchConfig(base_width=0.25, base_depth=0.25, grid_step=0.25, tolerance=0.2,
                       seeds=1, recipe=recipe, mac_tolerance=None)
    data = ProxyData("fashion-mnist", recipe=recipe)
    res = run_search(cfg, f"sqlite:///{tmp_path / 's.db'}", data=data, progress=False,
                     max_candidates=1)
    (row,) = [r for r in res.rows if r["status"] == "complete"]
    point = next(p for p in cfg.points() if p.label == row["label"])
    torch.manual_seed(0)  # what the search does before building seed 0's model
    model = cfg.scaled(point).build(num_classes=10, in_chans=1)
    direct = train_proxy(model, row["resolution"], data, recipe, 0)
    assert row["val_top1_seeds"] == [direct["val_top1"]]
    assert row["val_top1_curves"] == [direct["curve"]] and len(direct["curve"]) == 2


def bad_trainer(model, data):
    """A trainer with the wrong signature."""
    return {"val_top1": 0.5}


def test_a_trainer_with_the_wrong_signature_gives_one_line(tmp_path, capsys):
    args = ["search", "--storage", str(tmp_path / "s.db"), "--trainer",
            "tests.test_search:bad_trainer"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be called as (model, resolution, data, recipe, seed, on_epoch)" in err
    assert "\n" not in err


# ---------------------------------------------------------------- image folders
def colour(c: int) -> tuple[int, int, int]:
    return (20 * c, 250 - 20 * c, 7 + 3 * c)


def make_folder(root: Path, classes: int, per_class: int, grey: bool = False) -> Path:
    """`classes` folders of flat-coloured images of odd sizes, one colour per class."""
    from PIL import Image

    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True)
        for i in range(per_class):
            size = (30 + 3 * i, 20 + 5 * c)
            img = Image.new("L", size, colour(c)[0]) if grey else Image.new("RGB", size, colour(c))
            img.save(root / f"class{c:02d}" / f"{i}.png")
    return root


def test_an_image_folder_is_decoded_once_with_its_own_classes_and_channels(tmp_path):
    data = ProxyData("imagefolder", str(make_folder(tmp_path / "rgb", 12, 3)),
                     ProxyRecipe(val_fraction=0.25), folder_size=24)
    assert (data.num_classes, data.in_chans, data.native) == (12, 3, 24)
    x, y, xv, yv = data._load()
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 24, 24) and len(x) + len(xv) == 36
    for images, labels in ((x, y), (xv, yv)):
        for img, label in zip(images, labels, strict=True):
            # A flat image stays flat through any crop and resize: every pixel is its colour.
            expect = torch.tensor(colour(int(label)), dtype=torch.uint8).view(3, 1, 1)
            assert torch.equal(img, expect.expand(3, 24, 24)), int(label)
    grey = ProxyData("imagefolder", str(make_folder(tmp_path / "grey", 2, 4, grey=True)),
                     folder_size=16)
    assert (grey.num_classes, grey.in_chans) == (2, 1)


def test_search_on_an_image_folder_sizes_models_from_the_data(tmp_path):
    """Issue 13 item 7: 12 classes (a 10-way head crashed with 'Target 11 is out of bounds')."""
    folder = make_folder(tmp_path / "data", 12, 4)
    out = tmp_path / "out"
    assert cli_main(["search", "--dataset", "imagefolder", "--data", str(folder),
                     "--folder-size", "20", "--image-size", "16", "--base-width", "0.25",
                     "--base-depth", "0.25", "--grid-step", "0.25", "--tolerance", "0.2",
                     "--seeds", "1", "--epochs", "1", "--batch-size", "8",
                     "--recipe", "val_fraction=0.25", "--mac-tolerance", "none",
                     "--max-candidates", "1", "--storage", str(tmp_path / "s.db"),
                     "--output", str(out), "--no-progress", "--threads", "1"]) == 0
    payload = json.loads((out / "search-effnet-search.json").read_text())
    (row,) = [r for r in payload["rows"] if r["status"] == "complete"]
    assert 0.0 <= row["val_top1"] <= 1.0
    assert payload["config"]["recipe"]["val_fraction"] == 0.25  # from --recipe
    assert payload["config"]["recipe"]["batch_size"] == 8 and payload["native"] == 20
    from effnet.proxy.candidates import measure

    # the measured cost is the 12-class, 3-channel model's (the head and stem differ)
    cfg = SearchConfig(base_width=0.25, base_depth=0.25, grid_step=0.25, tolerance=0.2)
    point = next(p for p in cfg.points() if p.label == row["label"])
    scaled = cfg.scaled(point)
    assert row["params"] == measure(scaled, 12, 3).params != measure(scaled, 10, 1).params
