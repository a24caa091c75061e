"""The scaling study (issue 10): statistics, inputs with real detail, matched MACs, the report."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from scipy import stats as sps
from torch.utils.flop_counter import FlopCounterMode

from effnet import BASELINES, EfficientNet, scale
from effnet.nn.blocks import Bottleneck, MBConv
from effnet.proxy.trainer import ProxyData, ProxyRecipe, downsample
from effnet.study.plan import nominal_phi, plan
from effnet.study.presets import PRESETS, BaseNet, Budget, Preset
from effnet.study.run import run_study
from effnet.study.stats import compare, kendall_tau, last_quarter_gain, welch_interval
from effnet.train.init import zero_init_last

TINY_RECIPE = ProxyRecipe(epochs=1, train_size=256, val_size=128, batch_size=64, evals=2)
TINY = Preset(name="tiny", dataset="fashion-mnist", image_size=14,
              bases=(BaseNet("b0", 0.25, 0.6), BaseNet("mobilenetv2", 0.35, 0.6)),
              budgets=(Budget("short", TINY_RECIPE),
                       Budget("long", replace(TINY_RECIPE, epochs=2, evals=4))),
              seeds=3, targets=(2.5,), table3_target=2.5, cam_images=2)


# ---------------------------------------------------------------- statistics
def test_welch_interval_is_scipys_welch_t_interval():
    a, b = [0.81, 0.83, 0.82, 0.845], [0.80, 0.79, 0.815]
    diff, lo, hi = welch_interval(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(sum(a) / 4 - sum(b) / 3)
    assert (lo, hi) == pytest.approx((ref.low, ref.high))


def test_verdicts_on_seed_scores_where_the_answer_is_known():
    # Clearly apart (10 points, spread 0.1 point): win one way, loss the other.
    better, worse = [0.90, 0.901, 0.899], [0.80, 0.801, 0.799]
    assert compare(better, worse).verdict == "win"
    assert compare(worse, better).verdict == "loss"
    # Same distribution, shifted by far less than the spread: not significant.
    c = compare([0.80, 0.84, 0.82], [0.81, 0.83, 0.825])
    assert c.verdict == "tie" and c.ci_low < 0 < c.ci_high
    # Identical constant scores: a difference of exactly zero is a tie, not a crash.
    assert compare([0.5, 0.5], [0.5, 0.5]).verdict == "tie"
    with pytest.raises(ValueError):
        compare([0.9], [0.8, 0.7])


def test_kendall_tau_matches_scipy_on_the_shared_models():
    x = {"a": 0.9, "b": 0.8, "c": 0.85, "d": 0.7, "e": 0.75, "only-x": 0.1}
    y = {"e": 0.6, "d": 0.65, "c": 0.9, "b": 0.7, "a": 0.95, "only-y": 0.2}
    keys = ["a", "b", "c", "d", "e"]
    ref = sps.kendalltau([x[k] for k in keys], [y[k] for k in keys]).statistic
    assert kendall_tau(x, y) == pytest.approx(ref)
    assert kendall_tau(x, {k: x[k] for k in keys}) == pytest.approx(1.0)
    assert kendall_tau({"a": 1.0}, {"a": 2.0}) is None


def test_last_quarter_gain_reads_the_end_of_the_curve():
    assert last_quarter_gain([0.5, 0.7, 0.8, 0.85]) == pytest.approx(0.05)
    assert last_quarter_gain([0.1] * 7 + [0.2]) == pytest.approx(0.1)  # 8 points: last 2
    assert last_quarter_gain([0.3]) == 0.0


# ---------------------------------------------------------------- inputs with real detail
def test_base_input_is_the_native_image_downsampled_with_antialiasing():
    data = ProxyData(recipe=ProxyRecipe(train_size=64, val_size=32))
    xtr, _, xva, _ = data.splits(14)
    raw_tr, _, raw_va, _ = data._load()
    assert data.native == 28 and raw_tr.dtype == torch.uint8
    ref = F.interpolate(raw_tr.float() / 255, size=(14, 14), mode="bilinear",
                        align_corners=False, antialias=True)
    mean, std = ref.mean(), ref.std()
    assert torch.allclose(xtr, (ref - mean) / std, atol=1e-5)
    ref_va = F.interpolate(raw_va.float() / 255, size=(14, 14), mode="bilinear",
                           align_corners=False, antialias=True)
    assert torch.allclose(xva, (ref_va - mean) / std, atol=1e-5)
    # Without antialiasing the same resize differs: the prefilter is really applied.
    plain = F.interpolate(raw_tr.float() / 255, size=(14, 14), mode="bilinear",
                          align_corners=False)
    assert not torch.allclose(downsample(raw_tr, 14), plain, atol=1e-3)
    assert torch.equal(downsample(raw_tr, 28), raw_tr.float() / 255)


def test_proxy_trainer_evaluates_and_returns_the_ema_of_the_weight_trajectory(monkeypatch):
    """With ema_fraction f over T steps, the kept weights are the EMA with decay 1 - 1/(f T),
    started at the first step's weights (torch.optim.swa_utils semantics), computed here by hand
    from the weights after every optimizer step."""
    from effnet.proxy import trainer as T
    from effnet.proxy.candidates import Scaled

    snaps: list[dict] = []
    holder: dict = {}

    class Recording(torch.optim.AdamW):
        def step(self, closure=None):
            out = super().step(closure)
            snaps.append({k: v.detach().clone() for k, v in holder["model"].state_dict().items()})
            return out

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    recipe = ProxyRecipe(epochs=2, batch_size=16, train_size=64, val_size=32, evals=2,
                    ema_fraction=0.25)
    data = ProxyData(recipe=recipe)
    torch.manual_seed(0)
    model = Scaled("b0", 0.25, 0.3, 14, 1).build(num_classes=10, in_chans=1)
    holder["model"] = model
    out = T.train_proxy(model, 14, data, recipe, seed=0)
    total = 2 * (64 // 16)
    assert len(snaps) == total
    decay = 1 - 1 / (0.25 * total)
    ema = {k: v.clone() for k, v in snaps[0].items()}
    for snap in snaps[1:]:
        for k, v in snap.items():
            if v.is_floating_point():
                ema[k] = decay * ema[k] + (1 - decay) * v
    kept = model.state_dict()
    for k, v in ema.items():
        if v.is_floating_point():
            torch.testing.assert_close(kept[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert not all(torch.equal(kept[k], snaps[-1][k]) for k in kept)  # not the raw weights
    xva, yva = data.splits(14)[2:]
    assert out["val_top1"] == T.accuracy(model, xva, yva)  # the kept model is the evaluated one


# ---------------------------------------------------------------- the recipe's start
def test_zero_init_makes_every_residual_block_start_as_its_shortcut():
    torch.manual_seed(0)
    mb = MBConv(16, 16, 3, 1, 6, se_ratio=0.25).eval()
    bottleneck = Bottleneck(32, 32, 3, 1, 0.25, act="relu").eval()
    for m in (mb, bottleneck):
        # Random BN statistics, so that "zero" cannot come from a trivial model.
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 16, 8, 8)
    assert not torch.allclose(mb(x), x)
    assert zero_init_last(mb) == 1
    # The projection's BN bias still shifts the branch: the block is x + bias.
    bias = mb.project.bn.bias.detach().view(1, -1, 1, 1)
    assert torch.allclose(mb(x), x + bias, atol=1e-6)
    xb = torch.randn(2, 32, 8, 8)
    assert zero_init_last(bottleneck) == 1
    bias = bottleneck.expand.bn.bias.detach().view(1, -1, 1, 1)
    assert torch.allclose(bottleneck(xb), F.relu(xb + bias), atol=1e-6)


# ---------------------------------------------------------------- planning
def _flop_counter_macs(spec, resolution: int) -> int:
    model = EfficientNet(spec, num_classes=10, in_chans=1).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 1, resolution, resolution))
    return fc.get_total_flops() // 2


@pytest.fixture(scope="module")
def tiny_plan():
    return plan(TINY)


def test_plan_matches_every_single_dimension_to_the_compound_models_measured_macs(tiny_plan):
    alpha, beta, gamma = 1.2, 1.1, 1.15  # paper Sec. 3.3
    by_key = {r.key: r for r in tiny_plan}
    for r in tiny_plan:
        b = next(b for b in TINY.bases if b.name == r.group)
        s, m = r.scaled, r.multiplier
        expected = {"baseline": (b.depth, b.width, 14), "depth": (b.depth * m, b.width, 14),
                    "width": (b.depth, b.width * m, 14),
                    "resolution": (b.depth, b.width, round(14 * m)),
                    "compound": (b.depth * alpha**m, b.width * beta**m, round(14 * gamma**m))}
        d, w, res = expected[r.strategy]
        assert (s.depth_mult, s.width_mult, s.resolution) == pytest.approx((d, w, res))
        spec = scale(BASELINES[r.group], w, d).with_(stem_stride=1)
        assert r.cost.macs == _flop_counter_macs(spec, res)  # measured, with torch's counter
        if r.strategy in ("depth", "width", "resolution"):
            comp = by_key[f"{r.group}-compound-{r.target:g}x"].cost.macs
            dist = abs(math.log(r.cost.macs / comp))
            if r.strategy != "resolution":
                assert dist < math.log(1.1), r.key
                continue
            # Feature-map sizes move MACs in steps at small inputs: no other pixel size
            # lands closer to the compound model's MACs.
            for px in range(res - 3, res + 4):
                other = _flop_counter_macs(spec, px)
                assert abs(math.log(other / comp)) >= dist - 1e-12, (r.key, px)


def test_presets_bases_sit_off_the_repeat_rounding_edges():
    # A stage whose depth_mult * repeats is an integer gains a block at any depth above it:
    # a base there makes the first depth step add blocks to several stages at once.
    for preset in PRESETS.values():
        for b in preset.bases:
            for st in BASELINES[b.name].stages:
                x = b.depth * st.repeats
                assert abs(x - round(x)) > 1e-6, (preset.name, b.name, st)
        assert preset.seeds >= 3 and preset.bases[0].name == "b0"
    assert nominal_phi(2 * 1.2 * 1.1**2 * 1.15**2 / 2, (1.2, 1.1, 1.15)) == pytest.approx(1.0)


# ---------------------------------------------------------------- the whole run
def fake_trainer(model, resolution, data, recipe, seed, on_epoch=None):
    """No training: compound-like balance scores best; a line per call in $EFFNET_FAKE_LOG."""
    w, d = model.spec.width_mult, model.spec.depth_mult
    if os.environ.get("EFFNET_FAKE_LOG"):
        with open(os.environ["EFFNET_FAKE_LOG"], "a") as f:
            f.write(f"{w:.4f} {d:.4f} {resolution} {seed}\n")
    base = {"efficientnet-b0": (0.25, 0.6), "mobilenetv2": (0.35, 0.6)}[model.spec.name]
    grow = min(math.log(w / base[0]), math.log(d / base[1]), math.log(resolution / 14))
    top1 = 0.5 + grow + 0.002 * seed
    n = recipe.evals or recipe.epochs
    return {"val_top1": top1, "curve": [top1] * n, "seconds": 0.0, "images_per_s": 1.0}


def test_study_writes_results_verdicts_and_resumes(tmp_path, monkeypatch, tiny_plan):
    import effnet.study.run as run_mod

    monkeypatch.setattr(run_mod, "plan", lambda *a, **k: tiny_plan)  # tested above
    log = tmp_path / "calls"
    monkeypatch.setenv("EFFNET_FAKE_LOG", str(log))
    out = tmp_path / "study"
    kw = {"progress": False, "workers": 1, "trainer": "tests.test_study:fake_trainer",
          "reference": tmp_path / "none.json"}
    report = run_study(TINY, out, **kw)
    assert len(log.read_text().splitlines()) == 2 * 10 * 3  # budgets x models x seeds
    res = json.loads((out / "results.json").read_text())
    for key in ("wall_s", "seeds", "models", "verdicts", "kendall_tau"):
        assert key in res
    assert res["seeds"] == 3 and res["kendall_tau"] is None
    for m in res["models"]:
        for key in ("base", "strategy", "target", "macs", "val_top1_mean", "val_top1_std",
                    "still_learning"):
            assert key in m
        assert m["val_top1_std"] == pytest.approx(0.002)  # seeds 0, 1, 2 -> sd 0.002
        assert m["still_learning"] is False  # flat fake curves
    # The fake rewards balance, so compound beats every single dimension, significantly.
    assert len(res["verdicts"]) == 4  # 2 bases x 2 budgets
    for v in res["verdicts"]:
        assert v["verdict"] == "win" and v["ci_low"] > 0
    assert res["kendall_tau_short_long"] == pytest.approx(1.0)
    text = report.read_text()
    assert "won 4, tied 0 and lost 0" in text
    for png in res["plots"].values():
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text
    assert set(res["plots"]) >= {"curves_b0", "curves_mobilenetv2", "fig3", "fig8", "table3",
                                 "fig7"}
    # A rerun trains nothing; other settings are refused; a reference gives Kendall's tau.
    ref = dict(res, preset={**res["preset"], "name": "standard"})
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    run_study(TINY, out, **{**kw, "reference": tmp_path / "ref.json"})
    assert len(log.read_text().splitlines()) == 60
    again = json.loads((out / "results.json").read_text())
    assert again["kendall_tau"] == pytest.approx(1.0)
    with pytest.raises(Exception, match="other settings"):
        run_study(replace(TINY, seeds=4), out, **kw)


def test_progress_line_counts_jobs_and_estimates_the_time_left_from_seconds_per_mac():
    from effnet.study.run import progress_line

    def job(macs, epochs=1, train_size=1000):
        return {"run": {"cost": {"macs": macs}},
                "recipe": {"epochs": epochs, "train_size": train_size}}

    # a: 1e9 MAC-images, b: 3e9, c: 2e9 (2 epochs). a took 60 s: 60 s per 1e9 left.
    jobs = {"a": job(1_000_000), "b": job(3_000_000), "c": job(1_000_000, epochs=2)}
    res = {"val_top1": 0.5, "seconds": 60.0}
    line = progress_line("a", res, {"a": res}, jobs, workers=1)
    assert line == "[1/3] a: 50.00% in 60 s; about 5 min left"  # (3 + 2) x 60 s
    assert progress_line("a", res, {"a": res}, jobs, workers=2).endswith("about 2 min left")
    assert progress_line("c", res, {"a": res, "b": res, "c": res}, jobs, 1) == \
        "[3/3] c: 50.00% in 60 s"


def test_the_study_prints_a_line_per_job_and_no_optuna_log_line(tmp_path, capfd, tiny_plan,
                                                                  monkeypatch):
    import effnet.study.run as run_mod

    monkeypatch.setattr(run_mod, "plan", lambda *a, **k: [r for r in tiny_plan
                                                          if r.group == "b0"])
    one = replace(TINY, bases=TINY.bases[:1], budgets=TINY.budgets[:1])
    run_study(one, tmp_path / "study", progress=True, workers=1,
              trainer="tests.test_study:fake_trainer", reference=tmp_path / "none.json")
    out, err = capfd.readouterr()
    assert not re.search(r"^\[[IW] \d{4}-", out + err, re.M)  # Optuna's "[I 2026-...]" lines
    done = re.findall(r"^\[(\d+)/(\d+)\] short/b0-", out, re.M)
    assert [int(d) for d, _ in done] == list(range(1, len(done) + 1)) and len(done) == 15
    assert {int(t) for _, t in done} == {15}  # 5 models x 3 seeds


def test_on_a_terminal_the_study_shows_a_bar_instead_of_lines(tmp_path, capfd, tiny_plan,
                                                                monkeypatch):
    import effnet.study.run as run_mod

    monkeypatch.setattr(run_mod, "plan", lambda *a, **k: [r for r in tiny_plan
                                                          if r.group == "b0"])
    monkeypatch.setattr(run_mod.sys.stdout, "isatty", lambda: True)
    one = replace(TINY, bases=TINY.bases[:1], budgets=TINY.budgets[:1])
    run_study(one, tmp_path / "study", progress=True, workers=1,
              trainer="tests.test_study:fake_trainer", reference=tmp_path / "none.json")
    out, err = capfd.readouterr()
    assert not re.search(r"^\[\d+/\d+\]", out, re.M)
    assert "study jobs" in err and "15/15" in err


@pytest.mark.slow
def test_study_trains_for_real_in_two_processes(tmp_path):
    preset = replace(TINY, bases=TINY.bases[:1], budgets=TINY.budgets[:1])
    run_study(preset, tmp_path / "study", progress=False, workers=2,
              reference=tmp_path / "none.json")
    res = json.loads((tmp_path / "study" / "results.json").read_text())
    assert len(res["models"]) == 5
    for m in res["models"]:
        assert m["seeds"] == 3 and len(m["curve_mean"]) == 2
        assert all(0.0 <= v <= 1.0 for v in m["val_top1_seeds"])


@pytest.mark.slow
def test_two_workers_on_postgresql_split_the_study_and_train_each_job_once(tmp_path,
                                                                           monkeypatch,
                                                                           tiny_plan):
    import multiprocessing as mp

    from effnet.study.run import study_jobs, study_worker
    from tests.postgres import postgres_url

    log = tmp_path / "calls"
    monkeypatch.setenv("EFFNET_FAKE_LOG", str(log))
    one = replace(TINY, bases=TINY.bases[:1], budgets=TINY.budgets[:1])
    jobs = study_jobs(one, [r for r in tiny_plan if r.group == "b0"])
    with postgres_url() as url:
        args = (url, "tiny-split", jobs, one.identity(), str(tmp_path), None, False,
                "tests.test_study:fake_trainer")
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=study_worker, args=args) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=300)
            assert p.exitcode == 0
        from effnet.proxy.queue import finished_jobs

        results = finished_jobs(url, "tiny-split")
    calls = log.read_text().splitlines()
    assert len(calls) == len(jobs) == len(results) == 5 * 3  # every job, once
    assert set(results) == set(jobs)
