"""The baseline search (issue 11): space, reward, measured MACs, found specs, resume, sharing.

Training is replaced by a fake trainer (a known score per architecture, logged to a
file) wherever the test is about the search's mechanics. The space's base is a tiny
two-stage spec in those tests: Optuna writes one row per parameter, so B0's 35
parameters per trial would make them slow without testing anything more.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import effnet
from effnet.cli import main as cli_main
from effnet.errors import EffnetError
from effnet.nas.proxy import Proxy
from effnet.nas.report import pareto_front, write_report
from effnet.nas.reward import reward
from effnet.nas.search import NasConfig, load_result, run_nas
from effnet.nas.space import SearchSpace, describe
from effnet.spec import EFFICIENTNET_B0, NetworkSpec, StageSpec, load_spec, save_spec
from tests.postgres import postgres_url

REPO = Path(__file__).resolve().parents[1]

TINY = NetworkSpec(name="tiny", stages=(
    StageSpec("mbconv", 3, 1, 1, 16, 1, 0.25),
    StageSpec("mbconv", 3, 2, 6, 24, 2, 0.25)), head_channels=64)


# ---------------------------------------------------------------- a stand-in trainer
def fake_score(spec: NetworkSpec) -> float:
    """A made-up accuracy: bigger kernels and more blocks are better here."""
    return min(0.99, 0.4 + 0.02 * sum(s.kernel for s in spec.stages) + 0.03 * spec.num_blocks)


def fake_trainer(model, resolution, data, recipe, seed, on_epoch=None):
    """Logs start/end to $EFFNET_FAKE_LOG and sleeps $EFFNET_FAKE_SLEEP over 4 evaluations."""
    key = describe(model.spec).replace(" ", "")
    log = os.environ.get("EFFNET_FAKE_LOG")

    def write(event: str) -> None:
        if log:
            with open(log, "a") as f:
                f.write(f"{event} {key} {os.getpid()}\n")

    write("start")
    score = fake_score(model.spec)
    for k in range(1, 5):
        time.sleep(float(os.environ.get("EFFNET_FAKE_SLEEP", "0")) / 4)
        if on_epoch is not None:
            on_epoch(k, score * k / 4)
    write("end")
    return {"val_top1": score}


class StubData:
    """What the search reads of the data when the trainer is fake: classes and channels."""

    num_classes, in_chans = 10, 1


def read_log(path: Path) -> list[tuple[str, str, int]]:
    if not path.exists():
        return []
    return [(e, k, int(p)) for e, k, p in (line.split() for line in path.read_text().splitlines())]


def macs_by_flop_counter(model: torch.nn.Module, resolution: int) -> int:
    """MACs counted here with torch's FlopCounterMode (FLOPs = 2 x MACs for convs, linears)."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, resolution, resolution))
    return counter.get_total_flops() // 2


# ---------------------------------------------------------------- the reward
def test_reward_is_the_papers_formula_on_hand_computed_cases():
    # ACC x (MACs/T)^w (Tan & Le 2019, Sec. 4). 2^-0.07 = exp(-0.07 ln 2) = 0.952638 by hand.
    assert reward(0.8, 2e6, 1e6) == pytest.approx(0.8 * 0.952638, rel=1e-6)
    assert reward(0.9, 0.5e6, 1e6) == pytest.approx(0.9 / 0.952638, rel=1e-6)
    assert reward(0.75, 1e6, 1e6) == 0.75                # on target: accuracy itself
    for macs in (1.0, 3e5, 7e9):                         # w = 0: accuracy only
        assert reward(0.6, macs, 1e6, w=0.0) == 0.6
    assert reward(0.8, 4e6, 1e6, w=-0.5) == pytest.approx(0.4)  # 0.8 * 4^-0.5
    assert reward(0.8, 2e6, 1e6) < reward(0.8, 1e6, 1e6) < reward(0.8, 0.5e6, 1e6)


@pytest.mark.parametrize("args", [(1.2, 1e6, 1e6), (-0.1, 1e6, 1e6), (0.5, 0, 1e6),
                                  (0.5, 1e6, 0), (0.5, 1e6, -5), (math.nan, 1e6, 1e6),
                                  (0.5, math.inf, 1e6)])
def test_reward_refuses_bad_input(args):
    with pytest.raises(EffnetError):
        reward(*args)


# ---------------------------------------------------------------- the space
def test_b0_is_a_point_of_the_space():
    space = SearchSpace()
    choice = space.baseline_choice()
    # Paper Table 1, stage by stage (kernel, expansion), SE 0.25 everywhere, widths and
    # repeats as B0's.
    assert [choice[f"s{i}_kernel"] for i in range(7)] == [3, 3, 5, 3, 5, 5, 3]
    assert [choice[f"s{i}_expand"] for i in range(7)] == [1, 6, 6, 6, 6, 6, 6]
    assert all(choice[f"s{i}_se"] == 0.25 and choice[f"s{i}_width"] == 1.0
               and choice[f"s{i}_repeats"] == 0 for i in range(7))
    decoded = space.decode(choice)
    assert decoded.stages == EFFICIENTNET_B0.stages
    assert decoded.with_(name=EFFICIENTNET_B0.name) == EFFICIENTNET_B0
    assert space.contains(EFFICIENTNET_B0)
    seven = EFFICIENTNET_B0.with_(stages=(EFFICIENTNET_B0.stages[0].__class__(
        "mbconv", 7, 1, 1, 16, 1, 0.25), *EFFICIENTNET_B0.stages[1:]))
    assert not space.contains(seven)
    assert space.size == (2 * 4 * 2 * 3 * 3) ** 7


def test_every_sampled_spec_validates_builds_and_has_the_measured_macs():
    space, proxy = SearchSpace(), Proxy()
    rng = random.Random(11)
    b0 = EFFICIENTNET_B0.stages
    for _ in range(30):
        choice = space.sample(rng)
        spec = space.decode(choice)
        assert space.encode(spec) is not None and space.decode(space.encode(spec)) == spec
        for i, (st, base) in enumerate(zip(spec.stages, b0, strict=True)):
            assert st.kernel in (3, 5) and st.expand_ratio in (1, 3, 4, 6)
            assert st.se_ratio in (0, 0.25) and st.stride == base.stride
            assert st.out_channels % 8 == 0
            assert abs(st.out_channels - choice[f"s{i}_width"] * base.out_channels) < 8
            assert st.repeats == max(1, base.repeats + choice[f"s{i}_repeats"])
        # The MACs the search records equal those counted here on the model create_model
        # builds from the proxy's spec (a different code path from the search's).
        model = effnet.create_model(spec=proxy.spec(spec), num_classes=10, in_chans=1)
        cost = proxy.measure(spec)
        assert cost.macs == macs_by_flop_counter(model, proxy.resolution)
        assert cost.params == sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- a found spec is a baseline
def test_a_found_spec_is_a_baseline_like_any_other(tmp_path, capsys):
    space = SearchSpace()
    spec = space.decode(space.sample(random.Random(3)), name="found")
    path = tmp_path / "nas" / "spec.json"
    save_spec(spec, path, search={"trial": 7})
    assert load_spec(path) == spec
    model = effnet.create_model(spec=str(path), num_classes=10)
    assert model.spec == spec
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        model.classifier.weight.normal_()
        ref = model(x)
    model.save_pretrained(tmp_path / "saved")
    path.unlink()  # the spec travels in config.json
    again = effnet.create_model(pretrained=str(tmp_path / "saved"))
    again.eval()
    assert again.spec == spec
    with torch.no_grad():
        assert torch.equal(again(x), ref)
    # scaled with phi like B0 (paper Eq. 3)
    with torch.device("meta"):
        scaled = effnet.create_model(spec=spec, phi=1)
    assert scaled.spec.phi == 1 and scaled.spec.num_blocks > spec.num_blocks

    save_spec(spec, path)
    assert cli_main(["profile", str(path), "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert f"{sum(p.numel() for p in model.parameters()):,}" in out
    assert cli_main(["scale", "--base", str(path), "--phi", "1..3"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    with torch.device("meta"):
        p3 = effnet.create_model(spec=spec, phi=3)
    assert float(rows[-1][4]) == pytest.approx(sum(p.numel() for p in p3.parameters()) / 1e6,
                                               abs=0.006)
    from effnet.search.config import SearchConfig
    from effnet.search.grid import GridPoint

    cfg = SearchConfig(base=str(path), base_width=0.25)
    built = cfg.scaled(GridPoint(1.2, 1.1, 1.15)).spec()
    assert [s.kernel for s in built.stages] == [s.kernel for s in spec.stages]


def test_bad_spec_files_give_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli_main(["profile", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not JSON" in err and "\n" not in err
    bad.write_text(json.dumps({"format": "effnet-spec", "spec": {"name": "x", "stages": [
        {"block": "mbconv", "kernel": 4, "stride": 1, "expand_ratio": 1, "out_channels": 8,
         "repeats": 1}]}}))
    assert cli_main(["scale", "--base", str(bad), "--phi", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "kernel must be a positive odd number" in err and "\n" not in err
    assert cli_main(["search", "--base", str(tmp_path / "none.json"), "--storage",
                     str(tmp_path / "s.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no spec file at" in err and "\n" not in err


# ---------------------------------------------------------------- the search
def tiny_config(**kw) -> NasConfig:
    return NasConfig(space=SearchSpace(base=TINY), **kw)


def test_search_runs_resumes_extends_and_reports(tmp_path):
    cfg = tiny_config()
    db = f"sqlite:///{tmp_path / 'n.db'}"
    res = run_nas(cfg, 5, db, trainer=fake_trainer, data=StubData(), progress=False)
    assert res.ran_now == 5 and len(res.rows) == 5
    first = res.rows[cfg.eta]  # eta random trials first, so that B0 has competitors
    assert first["trial"] == cfg.eta and first["baseline"]
    assert not any(r["baseline"] for r in res.rows[:cfg.eta])
    assert load_spec_dict(first["spec"]).stages == TINY.stages
    assert res.target_macs == res.base_cost.macs == first["macs"]
    proxy = cfg.proxy
    for r in res.rows:
        spec = load_spec_dict(r["spec"])
        if r["status"] == "complete":
            assert r["accuracy"] == fake_score(proxy.spec(spec))
            assert r["reward"] == pytest.approx(reward(r["accuracy"], r["macs"], res.target_macs))
        model = effnet.create_model(spec=proxy.spec(spec), num_classes=10, in_chans=1)
        assert r["macs"] == macs_by_flop_counter(model, proxy.resolution)
    done = [r for r in res.rows if r["status"] == "complete"]
    assert res.best["reward"] == max(r["reward"] for r in done)

    again = run_nas(cfg, 5, db, trainer=fake_trainer, data=StubData(), progress=False)
    assert again.ran_now == 0 and len(again.rows) == 5           # resumed: nothing to do
    more = run_nas(cfg, 6, db, trainer=fake_trainer, data=StubData(), progress=False)
    assert more.ran_now == 1 and len(more.rows) == 6             # extended by one

    paths = write_report(more, cfg, tmp_path / "out")
    assert load_spec(paths["spec"]).stages == load_spec_dict(more.best["spec"]).stages
    lines = paths["trials"].read_text().splitlines()
    assert lines[0].startswith("trial,status,baseline,macs,params,accuracy,reward")
    assert len(lines) == 7
    assert paths["plot"].stat().st_size > 1000
    assert "Reward: accuracy x (MACs / T)^w" in paths["report"].read_text()

    with pytest.raises(EffnetError, match="other settings"):
        run_nas(tiny_config(w=-0.2), 6, db, trainer=fake_trainer, data=StubData(),
                progress=False)


def load_spec_dict(d: dict) -> NetworkSpec:
    from effnet.spec import spec_from_dict

    return spec_from_dict(d)


def test_pareto_front_is_the_non_dominated_trials():
    rows = [{"trial": i, "status": "complete", "accuracy": a, "macs": m}
            for i, (a, m) in enumerate([(0.8, 10), (0.7, 5), (0.75, 12), (0.9, 20), (0.7, 6)])]
    assert [r["trial"] for r in pareto_front(rows)] == [1, 0, 3]


def test_multi_objective_search_keeps_accuracy_and_macs(tmp_path):
    cfg = tiny_config(multi_objective=True)
    db = f"sqlite:///{tmp_path / 'n.db'}"
    res = run_nas(cfg, 4, db, trainer=fake_trainer, data=StubData(), progress=False)
    import optuna

    study = optuna.load_study(study_name="effnet-nas", storage=db)
    assert len(study.directions) == 2
    for t in study.trials:
        assert t.values == [t.user_attrs["accuracy"], t.user_attrs["cost"]["macs"]]
    assert load_result(cfg, db, data=StubData()).rows == res.rows


# ---------------------------------------------------------------- the whole method
@pytest.mark.slow
def test_autoscale_runs_search_grid_and_family_into_one_report(tmp_path):
    from effnet.nas.autoscale import run_autoscale
    from effnet.nas.presets import AutoscalePreset, NasPreset

    preset = AutoscalePreset("test", NasPreset("test", budget=3, top_k=2, pick_seeds=2,
                                               max_trials=10),
                             grid_step=0.25, grid_tolerance=0.2, grid_max=None, grid_seeds=1,
                             family_seeds=1)
    report = run_autoscale(preset, tmp_path, [1.0, 2.0], progress=False,
                           trainer_ref="tests.test_nas:fake_trainer")
    summary = json.loads((tmp_path / "autoscale.json").read_text())
    grid = json.loads((tmp_path / "grid" / "search-autoscale-grid.json").read_text())
    done = [r for r in grid["rows"] if r["status"] == "complete"]
    best = max(r["val_top1"] for r in done)
    assert summary["coefficients"] in [[r["alpha"], r["beta"], r["gamma"]] for r in done
                                       if r["val_top1"] == best]
    assert summary["paper"] == [1.2, 1.1, 1.15]
    fams = {(r["family"], r["phi"]) for r in summary["family"]}
    assert fams == {(f, p) for f in ("found", "b0-paper") for p in (0.0, 1.0, 2.0)}
    found = load_spec(tmp_path / "nas" / "spec.json")
    for r in summary["family"]:  # every member's MACs measured on the model it trained
        spec = found if r["family"] == "found" else EFFICIENTNET_B0
        coeffs = summary["coefficients"] if r["family"] == "found" else [1.2, 1.1, 1.15]
        a, b, g = (c ** r["phi"] for c in coeffs)
        member = effnet.scaling.scale(spec, 0.25 * b, 0.6 * a).with_(stem_stride=1)
        model = effnet.create_model(spec=member, num_classes=10, in_chans=1)
        assert r["resolution"] == round(14 * g)
        assert r["macs"] == macs_by_flop_counter(model, r["resolution"])
    text = report.read_text()
    assert "1.2 | 1.1 | 1.15" in text and (tmp_path / "family.png").exists()
    # what each step cost: the pick retrained the top 2 with 2 seeds; one seed per family job
    assert summary["trainings"]["pick"] == 4
    assert summary["trainings"]["family"] == len(summary["family"])
    assert 3 <= summary["trainings"]["search"] < 4 and "Trainings: search" in text


# ---------------------------------------------------------------- CLI errors
@pytest.mark.parametrize("argv,message", [
    (["nas", "--dataset", "mnist-nope"], "unknown --dataset 'mnist-nope'"),
    (["nas", "--target-macs", "0"], "--target-macs must be > 0"),
    (["nas", "--target-macs=-3M"], "--target-macs must be > 0"),
    (["nas", "--target-macs", "lots"], "bad --target-macs 'lots'"),
    (["nas", "--trials", "0"], "--trials must be >= 1"),
    (["nas", "--base", "resnet50"], "MBConv stages"),
    (["nas", "--base", "nope"], "unknown --base 'nope'"),
    (["nas", "--budget", "0"], "--budget must be > 0"),                 # issue 19's flags
    (["nas", "--eta", "1"], "--eta must be >= 2"),
    (["nas", "--first-rung", "6"], "--first-rung must be below"),
    (["nas", "--pick-seeds", "0"], "--pick-seeds must be >= 1"),
    (["nas", "--startup", "1"], "--startup must be >= 2"),
    (["autoscale", "--phi", "3..1"], "empty --phi range"),
    (["autoscale", "--phi", "0..2"], "--phi must be"),
    (["autoscale", "--phi", "x"], "bad --phi"),
    (["autoscale", "--dataset", "nope"], "unknown --dataset 'nope'"),
    (["autoscale", "--target-macs", "0"], "--target-macs must be > 0"),
])
def test_bad_input_gives_one_line(tmp_path, capsys, argv, message):
    assert cli_main([*argv, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effnet: error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "o" / "report.md").exists()


# ---------------------------------------------------------------- kill, resume, share
def env_with_fake(log: Path, sleep: float) -> dict[str, str]:
    env = dict(os.environ)
    env.update(EFFNET_FAKE_LOG=str(log), EFFNET_FAKE_SLEEP=str(sleep), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src"),
                                           env.get("PYTHONPATH", "")]))
    return env


def nas_cmd(tmp_path: Path, storage: str, trials: int, *extra: str) -> list[str]:
    base = tmp_path / "tiny.json"
    if not base.exists():
        save_spec(TINY, base)
    return [sys.executable, "-m", "effnet", "nas", "--base", str(base), "--trials", str(trials),
            "--budget", str(trials),
            "--storage", storage, "--no-progress", "--no-prune", "--heartbeat-interval", "1",
            "--grace-period", "3", "--trainer", "tests.test_nas:fake_trainer", "--top-k", "0",
            *extra]


def finished(storage: str, study: str = "effnet-nas") -> list:
    import optuna
    from optuna.trial import TrialState

    from effnet.proxy.storage import open_storage

    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).trials
    return [t for t in trials if t.state == TrialState.COMPLETE
            and "effnet_skipped" not in t.user_attrs]


@pytest.mark.slow
def test_a_killed_search_resumes_and_retries_the_killed_trial(tmp_path):
    log, db, n = tmp_path / "log", f"sqlite:///{tmp_path / 'n.db'}", 8
    env = env_with_fake(log, sleep=1.6)
    cmd = nas_cmd(tmp_path, db, n, "--output", str(tmp_path / "out"))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while True:  # wait for 3 finished trials and a 4th that has run for over a heartbeat
        events = read_log(log)
        if sum(e == "end" for e, *_ in events) >= 3 and events[-1][0] == "start":
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the search made no progress"
        time.sleep(0.05)
    time.sleep(1.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_log(log)
    killed = before[-1][1]
    ended = sum(e == "end" for e, *_ in before)
    assert before[-1][0] == "start" and ended >= 3

    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    rerun = [k for e, k, _ in read_log(log)[len(before):] if e == "start"]
    assert killed in rerun                   # the dead worker's trial is trained again...
    assert len(rerun) == n - ended           # ...and, with the rest, each trial exactly once
    assert len(finished(db)) == n
    assert len((tmp_path / "out" / "trials.csv").read_text().splitlines()) >= n + 1


@pytest.mark.slow
def test_two_workers_share_a_postgresql_search_each_trial_once(tmp_path):
    study, log, n = f"nas-{uuid.uuid4().hex[:8]}", tmp_path / "log", 8
    with postgres_url() as url:
        env = env_with_fake(log, sleep=0.8)
        procs = [subprocess.Popen(nas_cmd(tmp_path, url, n, "--study-name", study, "--output",
                                          str(tmp_path / f"out{i}")),
                                  cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
        done = finished(url, study)
    starts = [pid for e, _, pid in read_log(log) if e == "start"]
    assert len(starts) == n == len(done)     # n trainings for n trials: none twice, none lost
    assert {p.pid for p in procs} == set(starts)  # both workers trained some
