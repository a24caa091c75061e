"""The scaling study (issue 5): plan with measured MACs, report, resume, real training once."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from effnet import BASELINES, EfficientNet, scale
from effnet.search.budget import Budget
from effnet.search.report import compare
from effnet.search.study import PRESETS, BaseNet, Preset, plan, run_study

TINY = Preset(
    name="tiny", description="test preset", dataset="fashion-mnist", image_size=32,
    bases=(BaseNet("b0", 0.25, 0.5), BaseNet("mobilenetv2", 0.35, 0.5)),
    budget=Budget(epochs=1, train_size=256, val_size=128, batch_size=64),
    seeds=2, targets=(3.0,), table3_target=3.0, cam_images=2, workers=1,
    expected="seconds")


BASES = {"efficientnet-b0": (0.25, 0.5), "mobilenetv2": (0.35, 0.5)}


def fake_score(name: str, width: float, depth: float, resolution: int, seed: int) -> float:
    """Made-up accuracy that only rewards growing all three dimensions together."""
    w0, d0 = BASES[name]
    grow = min(math.log(width / w0), math.log(depth / d0), math.log(resolution / 32))
    return 0.5 + grow + 0.01 * seed


def fake_trainer(model, resolution, data, budget, seed, on_epoch=None):
    """No training: a known score, and one line per call in $EFFNET_FAKE_LOG."""
    w, d = model.spec.width_mult, model.spec.depth_mult
    if os.environ.get("EFFNET_FAKE_LOG"):
        with open(os.environ["EFFNET_FAKE_LOG"], "a") as f:
            f.write(f"{w:.4f} {d:.4f} {resolution} {seed}\n")
    return {"val_top1": fake_score(model.spec.name, w, d, resolution, seed), "seconds": 0.0,
            "curve": []}


@pytest.fixture(scope="module")
def tiny_plan():
    return plan(TINY)


def flop_counter_macs(spec, resolution: int) -> int:
    model = EfficientNet(spec, num_classes=10, in_chans=1).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 1, resolution, resolution))
    return fc.get_total_flops() // 2


def test_plan_scales_one_dimension_or_all_three_and_measures_macs(tiny_plan):
    runs = tiny_plan
    assert [r.key for r in runs] == [
        "b0-baseline-1x", "b0-depth-3x", "b0-width-3x", "b0-resolution-3x", "b0-compound-3x",
        "mobilenetv2-baseline-1x", "mobilenetv2-depth-3x", "mobilenetv2-width-3x",
        "mobilenetv2-resolution-3x", "mobilenetv2-compound-3x"]
    alpha, beta, gamma = 1.2, 1.1, 1.15  # paper Sec. 3.3
    for r in runs:
        b = next(b for b in TINY.bases if b.name == r.group)
        s, m = r.scaled, r.multiplier
        expected = {"baseline": (b.depth, b.width, 32), "depth": (b.depth * m, b.width, 32),
                    "width": (b.depth, b.width * m, 32),
                    "resolution": (b.depth, b.width, round(32 * m)),
                    "compound": (b.depth * alpha**m, b.width * beta**m, round(32 * gamma**m))}
        d, w, res = expected[r.strategy]
        assert (s.depth_mult, s.width_mult, s.resolution) == pytest.approx((d, w, res))
        # MACs measured on the built network, here with torch's counter directly.
        macs = flop_counter_macs(scale(BASELINES[r.group], w, d), res)
        assert r.cost.macs == macs
        if r.strategy != "baseline":
            assert 0.75 < r.mac_ratio / r.target < 1.33, r  # landed near the budget


def test_matching_picks_the_closest_measured_budget(tiny_plan):
    runs = {r.key: r for r in tiny_plan}
    r = runs["b0-resolution-3x"]
    base = runs["b0-baseline-1x"].cost.macs
    spec = scale(BASELINES["b0"], 0.25, 0.5)
    # Every other pixel size is at least as far from 3x the base's MACs (log scale).
    dist = abs(math.log(r.cost.macs / (3 * base)))
    for px in range(r.scaled.resolution - 3, r.scaled.resolution + 4):
        assert abs(math.log(flop_counter_macs(spec, px) / (3 * base))) >= dist - 1e-12


def test_compare_says_won_lost_or_tied_from_the_spread():
    def row(strategy, mean, std):
        return {"group": "g", "target": 4.0, "strategy": strategy, "val_top1": mean,
                "val_top1_std": std, "mac_ratio": 4.0}

    base = [row("depth", 0.80, 0.01), row("width", 0.82, 0.01), row("resolution", 0.79, 0.01)]
    assert compare(base + [row("compound", 0.85, 0.01)], "g", 4.0)["verdict"] == "won"
    assert compare(base + [row("compound", 0.75, 0.01)], "g", 4.0)["verdict"] == "lost"
    c = compare(base + [row("compound", 0.83, 0.01)], "g", 4.0)
    assert c["verdict"] == "tied" and c["best_single"] == "width"
    assert c["difference"] == pytest.approx(0.01)
    assert c["spread"] == pytest.approx(math.sqrt(2) * 0.01)


def test_study_writes_the_report_and_resumes(tmp_path, monkeypatch, tiny_plan):
    import effnet.search.study as study_mod

    monkeypatch.setattr(study_mod, "plan", lambda *a, **k: tiny_plan)  # tested above
    log = tmp_path / "calls"
    monkeypatch.setenv("EFFNET_FAKE_LOG", str(log))
    out = tmp_path / "study"
    report = run_study(TINY, out, progress=False, trainer="tests.test_study:fake_trainer")
    assert report == out / "report.md"
    calls = log.read_text().splitlines()
    assert len(calls) == 10 * 2  # 10 models x 2 seeds
    results = json.loads((out / "results.json").read_text())
    names = {"b0": "efficientnet-b0", "mobilenetv2": "mobilenetv2"}
    for r in results["rows"]:
        s = r["scaled"]
        want = [fake_score(names[r["group"]], s["width_mult"], s["depth_mult"], s["resolution"],
                           k) for k in (0, 1)]
        assert r["val_top1"] == pytest.approx(sum(want) / 2)
        assert r["val_top1_std"] == pytest.approx(0.01 / math.sqrt(2))
    # fake_score rewards balance, so compound must come out ahead of every single dimension.
    assert {c["verdict"] for c in results["comparisons"]} == {"won"}
    text = report.read_text()
    assert "compound scaling won" in text.lower()
    assert "vs target" in text and "proxy" in text.lower() and "how fast they learn" in text
    for png in ("fig3_single_dimension.png", "fig8_compound_vs_single.png",
                "table3_baselines.png", "fig7_activation_maps.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text
    assert results["activation_maps"]["models"] == [
        "b0-baseline-1x", "b0-depth-3x", "b0-width-3x", "b0-resolution-3x", "b0-compound-3x"]
    # A rerun into the same folder trains nothing; other settings are refused.
    run_study(TINY, out, progress=False, trainer="tests.test_study:fake_trainer")
    assert len(log.read_text().splitlines()) == 20
    with pytest.raises(Exception, match="other settings"):
        run_study(replace(TINY, seeds=3), out, progress=False,
                  trainer="tests.test_study:fake_trainer")


def test_presets_are_documented_and_use_at_least_two_seeds():
    assert set(PRESETS) == {"quick", "full", "cifar10"}
    for p in PRESETS.values():
        assert p.seeds >= 2 and p.expected and p.bases[0].name == "b0"
        assert {b.name for b in p.bases} == {"b0", "mobilenetv2", "resnet50"}


@pytest.mark.slow
def test_study_trains_for_real_on_fashion_mnist_in_two_processes(tmp_path):
    preset = replace(TINY, workers=2, bases=TINY.bases[:1])
    report = run_study(preset, tmp_path / "study", progress=False)
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    assert len(results["rows"]) == 5
    for r in results["rows"]:
        assert r["seeds"] == 2 and len(r["val_top1_seeds"]) == 2
        assert all(0.0 <= v <= 1.0 for v in r["val_top1_seeds"])
        assert r["seconds"] > 0
    assert Path(report).exists() and results["comparisons"]
