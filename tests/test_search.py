"""The alpha/beta/gamma grid search (issue 5): grid, measured MACs, resume, shared storage.

Training is replaced by `fake_trainer` (a known score per candidate, logged to a
file) wherever the test is about the search's mechanics; the real trainer runs
in tests/test_study.py.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from effnet.cli import main as cli_main
from effnet.errors import EffnetError
from effnet.search.budget import Budget
from effnet.search.grid import enumerate_grid
from effnet.search.search import SearchConfig, best_coefficients, run_search

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- a stand-in trainer
def fake_score(width: float, depth: float, resolution: int, seed: int) -> float:
    """A made-up validation accuracy: deeper is better here, plus a small seed effect."""
    return 0.3 + 0.2 * depth + 0.001 * resolution - 0.05 * width + 0.01 * seed


def candidate_key(width: float, depth: float, resolution: int) -> str:
    return f"{width:.4f},{depth:.4f},{resolution}"


def fake_trainer(model, resolution, data, budget, seed, on_epoch=None):
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
    for epoch in range(1, budget.epochs + 1):
        time.sleep(float(os.environ.get("EFFNET_FAKE_SLEEP", "0")) / budget.epochs)
        if on_epoch is not None:
            on_epoch(epoch, score * epoch / budget.epochs)
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
            "0.1", "--tolerance", "0.05", "--seeds", "1", "--budget", "1",
            "--mac-tolerance", "none", "--storage", storage, "--no-progress",
            "--trainer", "tests.test_search:fake_trainer", *extra]


def completed_points(storage: str, study: str = "effnet-search") -> list[str]:
    import optuna
    from optuna.trial import TrialState

    from effnet.search.search import open_storage

    s = optuna.load_study(study_name=study, storage=open_storage(storage))
    return [t.params["point"] for t in s.get_trials(states=(TrialState.COMPLETE,))]


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


def test_search_measures_macs_and_skips_candidates_off_the_budget(tmp_path, monkeypatch):
    from effnet import CompoundScaling, create_model

    log = tmp_path / "log"
    monkeypatch.setenv("EFFNET_FAKE_LOG", str(log))
    cfg = SearchConfig(base="b0", image_size=32, grid_step=0.25, tolerance=0.2, seeds=1,
                       budget=Budget(epochs=1), mac_tolerance=0.25)
    res = run_search(cfg, f"sqlite:///{tmp_path / 's.db'}", trainer=fake_trainer,
                     progress=False)
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


def test_search_trains_every_point_once_ranks_them_and_resumes(tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("EFFNET_FAKE_LOG", str(log))
    cfg = SearchConfig(base_width=0.25, grid_step=0.1, tolerance=0.05, seeds=2,
                       budget=Budget(epochs=2), mac_tolerance=None)
    db = f"sqlite:///{tmp_path / 's.db'}"
    first = run_search(cfg, db, trainer=fake_trainer, progress=False, max_candidates=4)
    assert len(first.trained_now) == 4
    second = run_search(cfg, db, trainer=fake_trainer, progress=False)
    assert len(second.trained_now) == len(cfg.points()) - 4
    assert not set(first.trained_now) & set(second.trained_now)
    third = run_search(cfg, db, trainer=fake_trainer, progress=False)
    assert third.trained_now == []
    starts = [(k, s) for e, k, s, _ in read_log(log) if e == "start"]
    assert sorted(starts) == sorted((k, s) for k in point_keys(cfg).values() for s in (0, 1))

    keys = point_keys(cfg)
    expected = {}
    for p in cfg.points():
        w, d, r = cfg.base_width * p.beta, p.alpha, int(round(32 * p.gamma))
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


def test_resuming_with_other_settings_is_refused(tmp_path):
    cfg = SearchConfig(base_width=0.25, grid_step=0.25, tolerance=0.2, seeds=1,
                       mac_tolerance=None)
    db = f"sqlite:///{tmp_path / 's.db'}"
    run_search(cfg, db, trainer=fake_trainer, progress=False, max_candidates=1)
    other = SearchConfig(base_width=0.25, grid_step=0.25, tolerance=0.2, seeds=2,
                         mac_tolerance=None)
    with pytest.raises(EffnetError, match="seeds.*--study-name"):
        run_search(other, db, trainer=fake_trainer, progress=False)


def test_pruning_stops_hopeless_candidates_and_measures_the_saving(tmp_path):
    from effnet.search.search import pruning_saving

    calls = []

    def trainer(model, resolution, data, budget, seed, on_epoch=None):
        # Deep candidates learn; shallow ones stay at chance. 4 epochs, 0.05 s each.
        good = model.spec.depth_mult >= 1.4
        for e in range(1, budget.epochs + 1):
            calls.append((model.spec.depth_mult, seed, e))
            time.sleep(0.05)
            on_epoch(e, (0.2 + 0.15 * e) if good else 0.1)
        return {"val_top1": 0.8 if good else 0.1, "seconds": 0.05 * budget.epochs}

    cfg = SearchConfig(base_width=0.25, grid_step=0.1, tolerance=0.05, seeds=2,
                       budget=Budget(epochs=4), mac_tolerance=None)
    db = f"sqlite:///{tmp_path / 's.db'}"
    res = run_search(cfg, db, trainer=trainer, progress=False, prune=True)
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
def test_scale_from_search_uses_the_best_coefficients(tmp_path, capsys):
    cfg = SearchConfig(base_width=0.25, grid_step=0.25, tolerance=0.2, seeds=1,
                       mac_tolerance=None)
    db = tmp_path / "s.db"
    run_search(cfg, f"sqlite:///{db}", trainer=fake_trainer, progress=False)
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
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_url():
    """$EFFNET_TEST_POSTGRES_URL (set by .ci/postgres.sh), or a throwaway local server."""
    url = os.environ.get("EFFNET_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = bins[-1] if bins else shutil.which("initdb")
    if initdb is None:
        pytest.fail("PostgreSQL is not installed: run .ci/postgres.sh (it apt-get installs "
                    "postgresql) or set EFFNET_TEST_POSTGRES_URL")
    bindir = Path(initdb).parent
    root = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="effnet-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if root else []
    if root:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust",
                        "-U", "postgres", "-N"], check=True, capture_output=True)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l",
                        str(data / "log"), "-w", "-o",
                        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
                        "start"], check=True, capture_output=True)
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE effnet")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/effnet"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m",
                        "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


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


def test_queue_lock_excludes_and_breaks_the_lock_of_a_dead_worker(tmp_path):
    import threading

    import optuna

    from effnet.search.search import OWNER_ATTR, open_storage, queue_lock

    store = open_storage(str(tmp_path / "s.db"))
    inside, overlap = [], []

    def worker() -> None:
        for _ in range(5):
            with queue_lock(store, "st"):
                inside.append(1)
                overlap.append(len(inside))
                time.sleep(0.01)
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlap) == 15 and max(overlap) == 1  # never two holders at once
    # A lock left by a process that no longer exists is broken at once, not after minutes.
    dead = subprocess.Popen(["true"])
    dead.wait()
    held = store.create_new_study([optuna.study.StudyDirection.MINIMIZE], "st::queue-lock")
    store.set_study_user_attr(held, OWNER_ATTR, {"host": socket.gethostname(), "pid": dead.pid})
    t0 = time.monotonic()
    with queue_lock(store, "st", stale_s=600):
        pass
    assert time.monotonic() - t0 < 5


def test_train_candidate_reports_each_epoch_through_fit(tmp_path):
    """The real trainer: on_epoch sees every epoch's validation top-1, equal to the curve."""
    sys.path.insert(0, str(Path(__file__).parent / "data"))
    from train_tiny import TinyNet

    from effnet.search.budget import ProxyData, train_candidate

    budget = Budget(epochs=2, train_size=64, val_size=32, batch_size=32)
    data = ProxyData("fashion-mnist", budget=budget)
    seen = []
    torch.manual_seed(0)
    out = train_candidate(TinyNet(num_classes=10), 16, data, budget, seed=0,
                          on_epoch=lambda e, v: seen.append((e, v)))
    assert seen == list(enumerate(out["curve"], 1)) and len(seen) == 2
    assert out["val_top1"] == seen[-1][1]
