"""The study of the paper's method (issue 18): a proxy that keeps the cost law, the grid
search on the study's own base, the sweep of directions, and the report's four answers."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from effnet import EfficientNet
from effnet.proxy.trainer import ProxyRecipe
from effnet.search.grid import enumerate_grid
from effnet.study.method_report import two_sizes
from effnet.study.plan import CostCache
from effnet.study.presets import METHOD_B0_20PX, METHOD_BASES, PRESETS, Budget
from effnet.study.run import run_study
from effnet.study.sweep import Direction, grid_runs, plan_method, simplex_points


def _macs(base, resolution: int) -> int:
    """MACs of the built base at `resolution`, from torch's flop counter."""
    model = EfficientNet(base.scaled(resolution).spec(), num_classes=10, in_chans=1).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 1, resolution, resolution))
    return fc.get_total_flops() // 2


@pytest.mark.parametrize("base", METHOD_BASES, ids=lambda b: b.name)
def test_the_method_bases_keep_the_cost_law_in_resolution(base):
    sizes = range(14, 29)  # the base's 14 px up to the native 28 px (4x the pixels)
    macs = {r: _macs(base, r) for r in sizes}
    for r in sizes:
        assert macs[r] / macs[14] == pytest.approx((r / 14) ** 2, rel=0.10), r
    for r in sizes[:-1]:
        assert macs[r + 1] / macs[r] <= 1.25, r
    # The last stage still sees a map of at least 4x4 pixels at the base's resolution.
    model = EfficientNet(base.scaled(14).spec(), num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 1, 14, 14)).shape[-1] >= 4


def test_a_direction_of_coefficients_scales_as_eq_3():
    a, b, g = 1.2, 1.1, 1.15  # paper Sec. 3.3
    d = Direction.of_coefficients("paper", a, b, g)
    total = math.log(a) + 2 * math.log(b) + 2 * math.log(g)
    assert d.shares == pytest.approx((math.log(a) / total, 2 * math.log(b) / total,
                                      2 * math.log(g) / total))
    for phi in (1.0, 2.5):  # at FLOPs (alpha beta^2 gamma^2)^phi: (alpha^phi, beta^phi, gamma^phi)
        assert d.multipliers(phi * total) == pytest.approx((a**phi, b**phi, g**phi))
    assert Direction("corner", 0, 0, 1).multipliers(math.log(4)) == pytest.approx((1, 1, 2))
    pts = simplex_points(5)
    assert len(pts) == 6 and all(min(p.shares) > 0 for p in pts)
    with pytest.raises(ValueError):
        Direction("bad", 0.5, 0.6, 0.1)


def test_the_grid_keeps_one_run_per_distinct_network_and_covers_the_grid():
    base = METHOD_BASES[0].scaled(14)
    cost = CostCache(10, 1)
    runs = grid_runs("b0", base, cost, 0.1, 0.15)

    def net(spec, px):
        return (tuple((s.out_channels, s.repeats, s.stride) for s in spec.stages), px)

    built = [net(r.scaled.spec(), r.scaled.resolution) for r in runs]
    assert len(set(built)) == len(built)
    points = enumerate_grid(0.1, 2.0, 0.15)
    assert len(runs) < len(points)  # some points round to the same network
    for p in points:
        s = replace(base, width_mult=base.width_mult * p.beta,
                    depth_mult=base.depth_mult * p.alpha, resolution=round(14 * p.gamma))
        assert net(s.spec(), s.resolution) in built
        assert abs(p.alpha * p.beta**2 * p.gamma**2 - 2) <= 0.15 + 1e-9


def test_the_proxy_trainer_scores_its_final_weights_on_the_test_split():
    from effnet.data.datasets import native_arrays
    from effnet.proxy.trainer import ProxyData, downsample, train_proxy

    recipe = ProxyRecipe(epochs=1, train_size=512, val_size=128, batch_size=128, evals=1,
                         test=True)
    data = ProxyData("fashion-mnist", recipe=recipe)
    torch.manual_seed(0)
    model = PRESETS["quick"].bases[0].scaled(14).build(num_classes=10, in_chans=1)  # 0.7M MACs
    out = train_proxy(model, 14, data, recipe, seed=0)
    # The 10k test images, at 14 px, normalised with the *training* images' statistics.
    x, y, _ = native_arrays("fashion-mnist", split="test")
    assert len(y) == 10_000
    xtr = downsample(data._load()[0], 14)
    mean, std = xtr.mean((0, 2, 3), keepdim=True), xtr.std((0, 2, 3), keepdim=True)
    xte = (downsample(x, 14) - mean) / std
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(xte[i:i + 2000]).argmax(1) == y[i:i + 2000]).sum())
                   for i in range(0, 10_000, 2000))
    assert out["test_top1"] == pytest.approx(hits / 10_000, abs=2e-4)  # a layout tie or two
    assert "test_top1" not in train_proxy(model, 14, data, replace(recipe, test=False), 0)


# ---------------------------------------------------------------- the whole run, faked
W0, D0 = METHOD_BASES[0].width, METHOD_BASES[0].depth
SHARES = (0.5, 0.25, 0.25)  # the fake's ideal balance of ln d : ln w : ln r


def _fake_score(w: float, d: float, px: int) -> float:
    """Best where ln d, ln w, ln r grow in the ratio SHARES (a known optimum)."""
    logs = (math.log(d / D0), math.log(w / W0), math.log(px / 14))
    return 0.5 + 0.1 * min(v / s for v, s in zip(logs, SHARES, strict=True))


def fake_trainer(model, resolution, data, recipe, seed, on_epoch=None):
    w, d = model.spec.width_mult, model.spec.depth_mult
    if os.environ.get("EFFNET_FAKE_LOG"):
        with open(os.environ["EFFNET_FAKE_LOG"], "a") as f:
            f.write(f"{w:.4f} {d:.4f} {resolution} {seed} {recipe.lr:g}\n")
    # The learning rate matters: best at 2x the recipe's for resolution models, 1x otherwise.
    best_lr = 8e-3 * (2.0 if resolution > 14 and d == D0 and w == W0 else 1.0)
    top1 = (_fake_score(w, d, resolution) + 0.001 * (seed % 7)
            - 0.01 * abs(math.log2(recipe.lr / best_lr)))
    n = recipe.evals or recipe.epochs
    out = {"val_top1": top1, "curve": [top1] * n, "seconds": 0.0, "images_per_s": 1.0}
    if recipe.test:  # the test split scores 1 point lower than validation
        out["test_top1"] = top1 - 0.01
    return out


def test_a_method_study_finds_the_known_optimum_and_answers_four_questions(tmp_path,
                                                                           monkeypatch):
    recipe = ProxyRecipe(epochs=1, train_size=256, val_size=128, batch_size=64, evals=2,
                         test=True)
    preset = replace(PRESETS["method-b0"], name="tiny-method", seeds=2, grid_seeds=1,
                     grid_step=0.15, grid_tolerance=0.15,
                     budgets=(Budget("short", recipe),), sweep=3, sweep_seeds=3,
                     lr_sweep=(0.5, 1.0, 2.0))
    log = tmp_path / "calls"
    monkeypatch.setenv("EFFNET_FAKE_LOG", str(log))
    kw = {"progress": False, "workers": 1, "trainer": "tests.test_study_method:fake_trainer",
          "reference": tmp_path / "none.json"}
    report = run_study(preset, tmp_path / "study", **kw)
    res = json.loads((tmp_path / "study" / "results.json").read_text())
    # Step 1 found the grid point the fake scores highest (the first one, in grid order).
    best = max(enumerate_grid(0.15, 2.0, 0.15),
               key=lambda p: _fake_score(W0 * p.beta, D0 * p.alpha, round(14 * p.gamma)))
    assert res["searched"]["b0"] == pytest.approx(
        {"alpha": best.alpha, "beta": best.beta, "gamma": best.gamma})
    # Step 2: every direction at both targets; searched against each single dimension.
    names = {m["strategy"] for m in res["models"]}
    assert names >= {"baseline", "depth", "width", "resolution", "compound", "searched"}
    assert [n for n in names if n.startswith("split-")] == ["split-111of3"]
    assert {(v["single"], v["target"]) for v in res["primary"]} == {
        (s, t) for s in ("depth", "width", "resolution") for t in (2.0, 4.0)}
    # The fake rewards balance: each corner moves one log and scores 0.5, so searched wins.
    assert all(v["verdict"] == "win" for v in res["primary"])
    # Chosen on validation, reported on test (1 point lower in the fake).
    assert res["score"] == "test"
    searched = [m for m in res["models"] if m["strategy"] == "searched"]
    for v in res["primary"]:
        m = next(m for m in searched if m["target"] == v["target"])
        assert v["compound_top1"] == pytest.approx(m["val_top1_mean"] - 0.01)
    for m in res["models"]:
        if m["strategy"] == "resolution":  # more pixels, the same blocks and channels
            assert m["law"]["pixels"] == pytest.approx(m["scaled"]["resolution"] / 14)
            assert (m["law"]["blocks"], m["law"]["channels"]) == (1.0, 1.0)
        assert m["seeds"] == (3 if m["strategy"].startswith("split-") else 2)
    # The learning-rate sweep found 2x for the resolution models, 1x for the others, and
    # the compared seeds trained at it.
    for m in res["models"]:
        swept = not m["strategy"].startswith("split-")
        assert m["lr_mult"] == (2.0 if swept and m["strategy"] == "resolution" else 1.0)
    calls = [line.split() for line in log.read_text().splitlines()]
    res_px = {str(m["scaled"]["resolution"]) for m in res["models"]
              if m["strategy"] == "resolution"}
    main = {(c[2], c[3]) for c in calls if int(c[3]) < 999 and c[2] in res_px
            and float(c[1]) == D0 and float(c[0]) == W0 and c[4] == "0.016"}
    assert main == {(px, s) for px in res_px for s in ("100", "101")}
    text = report.read_text()
    assert "## A fair recipe" in text
    for q in ("**(a)", "**(b)", "**(c)", "**(d)"):
        assert q in text
    assert (tmp_path / "study" / "sweep_b0.png").read_bytes()[:4] == b"\x89PNG"
    # A rerun trains nothing more.
    calls = len(log.read_text().splitlines())
    run_study(preset, tmp_path / "study", **kw)
    assert len(log.read_text().splitlines()) == calls


# ---------------------------------------------------------------- one base at two input sizes
def test_a_base_at_its_own_input_size_is_planned_apart_and_keeps_the_cost_law():
    preset = replace(PRESETS["method"], bases=(METHOD_BASES[0], METHOD_B0_20PX))
    cost = CostCache(10, 1)
    runs = plan_method(preset, cost, {})
    base14 = next(r for r in runs if r.group == "b0" and r.strategy == "baseline")
    base20 = next(r for r in runs if r.group == "b0-20px" and r.strategy == "baseline")
    # The same architecture, 20 px instead of 14: MACs grow as the pixels (Eq. 2's r^2).
    assert base20.scaled.resolution == 20 and base14.scaled.resolution == 14
    assert (base20.scaled.width_mult, base20.scaled.depth_mult) == (
        base14.scaled.width_mult, base14.scaled.depth_mult)
    assert base20.cost.macs / base14.cost.macs == pytest.approx((20 / 14) ** 2, rel=0.10)
    # Its own sweep: targets are multiples of its own MACs, and 4x by resolution alone
    # doubles its side (40 px, beyond the 28-px originals).
    res4 = next(r for r in runs if r.group == "b0-20px" and r.strategy == "resolution"
                and r.target == 4.0)
    assert res4.scaled.resolution == pytest.approx(40, abs=1)
    assert res4.base_macs == base20.cost.macs
    assert len({r.key for r in runs}) == len(runs)
    # Studies stored before bases had a size of their own still resume (same identity).
    ident = PRESETS["quick"].identity()["bases"][0]
    assert "image_size" not in ident and "label" not in ident
    assert PRESETS["method"].identity()["bases"][-1]["image_size"] == 20


def test_two_sizes_reads_each_directions_gain_over_its_own_base():
    def row(base, strategy, tops, target=2.0):
        return {"base": base, "budget": "short", "strategy": strategy, "target": target,
                "seeds": len(tops), "val_top1_seeds": tops,
                "val_top1_mean": sum(tops) / len(tops)}

    preset = replace(PRESETS["method"], bases=(METHOD_BASES[0], METHOD_B0_20PX))
    models = [row("b0", "baseline", [0.70, 0.71, 0.72], 1.0),
              row("b0", "resolution", [0.75, 0.76, 0.77]),
              row("b0-20px", "baseline", [0.74, 0.75, 0.76], 1.0),
              row("b0-20px", "resolution", [0.745, 0.755, 0.765]),
              row("b0-20px", "split-111of3", [0.9, 0.9, 0.9])]  # not a corner: left out
    got = {(r["base"], r["a"]): r for r in two_sizes(models, preset, "short")}
    assert set(got) == {("b0", "resolution"), ("b0-20px", "resolution")}
    assert got["b0", "resolution"]["diff"] == pytest.approx(0.05)
    assert got["b0", "resolution"]["pixels"] == 14 and got["b0-20px", "resolution"]["pixels"] == 20
    assert got["b0-20px", "resolution"]["diff"] == pytest.approx(0.005)
    # A preset with one size per architecture has nothing to compare.
    assert two_sizes(models, replace(preset, bases=(METHOD_BASES[0],)), "short") == []
