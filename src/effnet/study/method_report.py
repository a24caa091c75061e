"""The report of a `method` study: the grid search on each base, then the sweep of directions.

Its first screen answers, with intervals: (a) does compound scaling with
coefficients searched on the base beat each single dimension at equal cost
(the primary comparisons, named before the run, Holm-corrected); (b) is the
best split of the cost balanced or a corner; (c) does the direction best at
the smallest target stay best at the largest; (d) what borrowed
coefficients (the paper's ImageNet ones, another base's) cost; (e) where a base
is studied at two input sizes, whether resolution's gain was missing detail.
(b)-(e) are read off the sweep after the run and carry plain 95% Welch intervals.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..train.checkpoint import atomic_write_text
from . import plots
from .plan import Run
from .presets import Preset
from .prose import _pct, verdict_counts
from .report import (
    _environment,
    b0_ranking,
    load_reference,
    model_rows,
    primary_comparisons,
    replication,
)
from .stats import compare, kendall_tau
from .sweep import CORNERS, directions, law, run_seeds

PRIMARY = "searched"


def _diff(v: dict) -> str:
    return (f"{100 * v['diff']:+.2f} points, {100 * (v.get('level') or 0.95):.1f}% CI "
            f"[{100 * v['ci_low']:+.2f}, {100 * v['ci_high']:+.2f}]")


def grid_rows(grid: list[Run], preset: Preset, scores: dict[str, list[float]]) -> list[dict]:
    """One row per grid network: its coefficients, how it realises them, its seed scores
    (`scores` by run key, as the winner was picked on)."""
    bases = {b.key: b.start(preset.image_size) for b in preset.bases}
    out = []
    for r in grid:
        tops = scores.get(r.key, [])
        out.append({"key": r.key, "base": r.group, "point": r.strategy.removeprefix("grid-"),
                    "macs": r.cost.macs, "mac_ratio": r.mac_ratio,
                    "law": law(r, bases[r.group]), "val_top1_seeds": tops,
                    "val_top1_mean": statistics.fmean(tops) if tops else None,
                    "val_top1_std": statistics.stdev(tops) if len(tops) > 1 else 0.0})
    return out


def _pair(rows: list[dict], a: str, b: str, score: str = "val") -> dict | None:
    """Model `a` against model `b` (strategies of the same base, budget and target) on the
    `score` top-1."""
    ra = next((r for r in rows if r["strategy"] == a), None)
    rb = next((r for r in rows if r["strategy"] == b), None)
    if ra is None or rb is None or ra["seeds"] < 2 or rb["seeds"] < 2:
        return None
    c = compare(ra[f"{score}_top1_seeds"], rb[f"{score}_top1_seeds"])
    return {"a": a, "b": b, "a_top1": ra[f"{score}_top1_mean"],
            "b_top1": rb[f"{score}_top1_mean"], "score": score, **c.as_dict()}


def answers(models: list[dict], budget: str, score: str = "val") -> dict[str, list[dict]]:
    """(b), (c) and (d) of the report's first screen, per base, at one budget: the best
    directions are picked on validation, the comparisons read on the `score` top-1."""
    best_split, carry, borrowed = [], [], []
    for base in dict.fromkeys(m["base"] for m in models):
        at = {}
        for m in models:
            if m["base"] == base and m["budget"] == budget and m["strategy"] != "baseline":
                at.setdefault(m["target"], []).append(m)
        for target, rows in sorted(at.items()):
            best = max(rows, key=lambda r: r["val_top1_mean"])
            corners = [r for r in rows if r["strategy"] in CORNERS]
            inner = [r for r in rows if r["strategy"] not in CORNERS]
            entry = {"base": base, "target": target, "best": best["strategy"],
                     "best_shares": best["shares"], "best_top1": best["val_top1_mean"],
                     "is_corner": best["strategy"] in CORNERS}
            if corners and inner:
                bc = max(corners, key=lambda r: r["val_top1_mean"])
                bi = max(inner, key=lambda r: r["val_top1_mean"])
                entry["inner_vs_corner"] = _pair(rows, bi["strategy"], bc["strategy"], score)
            best_split.append(entry)
            for other in ("compound", *(r["strategy"] for r in rows
                                        if r["strategy"].startswith("searched-"))):
                if (p := _pair(rows, other, PRIMARY, score)) is not None:
                    borrowed.append({"base": base, "target": target, **p})
        if len(at) > 1:
            lo, hi = min(at), max(at)
            first = max(at[lo], key=lambda r: r["val_top1_mean"])["strategy"]
            last = max(at[hi], key=lambda r: r["val_top1_mean"])["strategy"]
            ranked = sorted(at[hi], key=lambda r: -r["val_top1_mean"])
            rank = next(i for i, r in enumerate(ranked, 1) if r["strategy"] == first)
            carry.append({"base": base, "low": lo, "high": hi, "best_low": first,
                          "best_high": last, "rank_at_high": rank, "of": len(ranked),
                          "low_best_vs_high_best": _pair(at[hi], first, last, score)
                          if first != last else None})
    return {"best_split": best_split, "carry_over": carry, "borrowed": borrowed}


def two_sizes(models: list[dict], preset: Preset, budget: str, score: str = "val"
              ) -> list[dict]:
    """For an architecture studied at two input sizes (bases with their own `image_size`):
    each corner's and the searched direction's gain over its own base, per size and target
    (plain 95% Welch intervals). A resolution gain that shrinks at the larger size while
    depth and width hold says the smaller images lacked detail, not the network capacity."""
    archs: dict[str, list] = {}
    for b in preset.bases:
        archs.setdefault(b.name, []).append(b)
    out = []
    for arch, bases in archs.items():
        if len({b.pixels(preset.image_size) for b in bases}) < 2:
            continue
        for b in bases:
            rows = [m for m in models if m["base"] == b.key and m["budget"] == budget]
            for m in rows:
                if m["strategy"] in (*CORNERS, PRIMARY) and (
                        p := _pair(rows, m["strategy"], "baseline", score)) is not None:
                    out.append({"arch": arch, "base": b.key, "target": m["target"],
                                "pixels": b.pixels(preset.image_size), **p})
    return out


def _size_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    md = ["**(e) Missing detail or architecture?** The same base at two input sizes, each "
          "direction's gain over its own base (plain 95% Welch interval):", ""]
    md += [f"- {r['base']} ({r['pixels']} px), ~{r['target']:g}x: {r['a']} {_diff(r)}, "
           f"{r['verdict']}." for r in sorted(rows, key=lambda r: (r["target"], r["a"],
                                                                  r["pixels"]))]
    return md + [""]


def _first_screen(payload: dict, budget: str) -> list[str]:
    fam = [v for v in payload["primary"] if v["budget"] == budget]
    counts = verdict_counts(fam)
    split = ("the 10k test set (choices made on validation)" if payload["score"] == "test"
             else "the validation split")
    md = ["## The answers", "", f"Scores are top-1 on {split}.", "",
          f"**(a) Searched compound against each single dimension** ({budget} budget, named "
          f"before the run, {len(fam)} comparisons, Holm-corrected): won {counts['win']}, tied "
          f"{counts['tie']}, lost {counts['loss']}.", ""]
    md += [f"- {v['base']}, ~{v['target']:g}x: searched {_pct(v['compound_top1'])}% vs "
           f"{v['single']} {_pct(v['single_top1'])}%, {_diff(v)}: **{v['verdict']}**"
           + ("" if v["macs_matched"] else f" (MACs differ by {100 * v['mac_gap']:+.1f}%)")
           for v in fam]
    ans = payload["answers"]
    md += ["", "**(b) Where the best split lies** (after the fact, plain 95% Welch interval of "
           "the best interior direction against the best corner):", ""]
    for e in ans["best_split"]:
        line = (f"- {e['base']}, ~{e['target']:g}x: best is {e['best']} (shares depth/width/"
                f"resolution {'/'.join(f'{v:.2f}' for v in e['best_shares'])}), "
                f"{_pct(e['best_top1'])}%, {'a corner' if e['is_corner'] else 'not a corner'}")
        if p := e.get("inner_vs_corner"):
            line += f"; {p['a']} against {p['b']}: {_diff(p)}, {p['verdict']}"
        md.append(line + ".")
    md += ["", "**(c) Does the best direction at the smallest target stay best at the largest?**",
           ""]
    for c in ans["carry_over"]:
        line = (f"- {c['base']}: best at ~{c['low']:g}x is {c['best_low']}, at ~{c['high']:g}x "
                f"{c['best_high']}; the first ranks {c['rank_at_high']} of {c['of']} there")
        if p := c["low_best_vs_high_best"]:
            line += f" ({_diff(p)} against the best, {p['verdict']})"
        md.append(line + ".")
    md += ["", "**(d) What borrowed coefficients cost** (against the base's own searched ones, "
           "plain 95% Welch interval):", ""]
    md += [f"- {b['base']}, ~{b['target']:g}x: {b['a']} {_pct(b['a_top1'])}% vs searched "
           f"{_pct(b['b_top1'])}%, {_diff(b)}, {b['verdict']}." for b in ans["borrowed"]]
    return md + [""] + _size_lines(payload.get("two_sizes", []))


def _law_lines(payload: dict) -> list[str]:
    md = ["## The proxy against the cost law", "",
          "Each model's realised blocks, channels (mean ratio over stages) and pixels over the "
          "base's, beside the multipliers asked for, and its measured MACs over the base's, "
          "divided by blocks x channels^2 x pixels^2 (1 = the law kept exactly).", "",
          "| model | d asked | blocks | w asked | channels | pixels | MACs x base | MACs / law |",
          "|---|---|---|---|---|---|---|---|"]
    seen = set()
    for m in payload["models"]:
        if m["key"] in seen:
            continue
        seen.add(m["key"])
        la = m["law"]
        md.append(f"| {m['key']} | {la['depth_asked']:.3f} | {la['blocks']:.3f} | "
                  f"{la['width_asked']:.3f} | {la['channels']:.3f} | {la['pixels']:.3f} | "
                  f"{la['macs']:.3f} | {la['macs_vs_law']:.3f} |")
    return md + [""]


def _grid_lines(payload: dict) -> list[str]:
    md = ["## Step 1: the grid search on each base", ""]
    for base, p in payload["searched"].items():
        rows = sorted((g for g in payload["grid"] if g["base"] == base
                       and g["val_top1_mean"] is not None), key=lambda g: -g["val_top1_mean"])
        md += [f"**{base}**: {len(rows)} distinct networks; found alpha = {p['alpha']:.2f}, "
               f"beta = {p['beta']:.2f}, gamma = {p['gamma']:.2f} (the paper's ImageNet B0: "
               "1.2, 1.1, 1.15).", "",
               "| point | MACs x base | blocks | channels | pixels | val top-1 % | seeds |",
               "|---|---|---|---|---|---|---|"]
        md += [f"| {g['point']} | {g['mac_ratio']:.2f} | {g['law']['blocks']:.2f} | "
               f"{g['law']['channels']:.2f} | {g['law']['pixels']:.2f} | "
               f"{_pct(g['val_top1_mean'])} ± {_pct(g['val_top1_std'])} | "
               f"{len(g['val_top1_seeds'])} |" for g in rows] + [""]
    return md


def write_method_report(out: Path, preset: Preset, grid: list[Run], runs: list[Run],
                        searched: dict, state: dict, data,
                        reference: str | Path | None = None) -> Path:
    """Write results.json, the plots and report.md of a `method` study; return report.md."""
    native = data.native
    models = model_rows(runs, preset, state, native, lambda r: run_seeds(preset, r))
    bases = {b.key: b.start(preset.image_size) for b in preset.bases}
    shares = {(b.key, d.name): d.shares for b in preset.bases
              for d in directions(preset, b.key, searched)}
    by_key = {r.key: r for r in runs}
    for m in models:
        m["lr_mult"] = state.get("lr", {}).get(m["key"], 1.0)
        m["law"] = law(by_key[m["key"]], bases[m["base"]])
        m["shares"] = shares.get((m["base"], m["strategy"]), (0.0, 0.0, 0.0))
    last = preset.budgets[-1].name
    # Choices (the grid's winner, the best directions) on validation; reported on test when
    # every model was scored on it.
    score = "test" if models and all("test_top1_seeds" in m for m in models) else "val"
    primary = primary_comparisons(models, lead=PRIMARY, score=score)
    ref = load_reference(reference) if reference is not None else None
    b0 = preset.bases[0].key
    payload = {
        "preset": preset.identity(), "wall_s": state.get("wall_s", 0.0),
        "seeds": preset.seeds, "seed_list": list(preset.seed_list),
        "native_resolution": native, "environment": _environment(state.get("workers")),
        "searched": {k: {"alpha": p.alpha, "beta": p.beta, "gamma": p.gamma}
                     for k, p in searched.items()},
        "grid": grid_rows(grid, preset, state.get("grid_scores", {})),
        "models": models, "score": score, "primary": primary,
        "answers": answers(models, last, score),
        "two_sizes": two_sizes(models, preset, last, score),
        "kendall_tau_short_long": (kendall_tau(b0_ranking(models, b0, preset.budgets[0].name),
                                               b0_ranking(models, b0, last))
                                   if len(preset.budgets) > 1 else None),
        "replication": replication(models, ref, b0, last, preset.seed_list) if ref else None,
        "still_learning": sum(m["still_learning"] for m in models)}
    figs = {}
    for base in preset.bases:
        rows = [m for m in models if m["base"] == base.key]
        if rows:
            figs[f"curves_{base.key}"] = f"curves_{base.key}.png"
            plots.plot_curves(rows, base.key, out / figs[f"curves_{base.key}"])
            lasts = [m for m in rows if m["budget"] == last]
            figs[f"sweep_{base.key}"] = f"sweep_{base.key}.png"
            plots.plot_sweep(lasts, base.key, out / figs[f"sweep_{base.key}"])
    payload["plots"] = figs
    atomic_write_text(out / "results.json", json.dumps(payload, indent=1) + "\n")
    path = out / "report.md"
    atomic_write_text(path, method_markdown(payload, preset))
    return path


def method_markdown(payload: dict, preset: Preset) -> str:
    """The whole report.md of a `method` study."""
    last = preset.budgets[-1].name
    md = [f"# The paper's method on the study's own bases — preset `{preset.name}`", ""]
    md += _first_screen(payload, last)
    if (t := payload["kendall_tau_short_long"]) is not None:
        md += [f"Ranking of the {preset.bases[0].key} models, {preset.budgets[0].name} against "
               f"{last} budget: Kendall's tau = {t:.2f}.", ""]
    if rep := payload.get("replication"):
        md += [f"Against the reference at the {rep['budget']} budget: tau = "
               f"{rep['kendall_tau']:.2f} over {rep['models']} models"
               + (f", seed-bootstrap 95% interval [{rep['ci'][0]:.2f}, {rep['ci'][1]:.2f}]"
                  if rep["ci"] else "")
               + (" (a replication: disjoint seeds)." if rep["disjoint_seeds"]
                  else " (shared seeds: a reproduction, not a replication)."), ""]
    sl = payload["still_learning"]
    md += [f"{sl} model-budget pair(s) still learning (validation top-1 rose by more than 0.5 "
           "point over the last quarter of the run)." if sl else
           "Every model has flattened (none rose by more than 0.5 point over the last quarter "
           "of its run).", ""]
    md += _grid_lines(payload)
    for base in preset.bases:
        if f"sweep_{base.key}" in payload["plots"]:
            md += [f"## The sweep — {base.key}, {last} budget", "",
                   f"![sweep]({payload['plots'][f'sweep_{base.key}']})", "",
                   f"![curves]({payload['plots'][f'curves_{base.key}']})", ""]
    if preset.lr_sweep:
        moved = sorted({(m["key"], m["lr_mult"]) for m in payload["models"]
                        if m["lr_mult"] != 1.0})
        swept = len({m["key"] for m in payload["models"]
                     if not m["strategy"].startswith("split-")})
        md += ["## A fair recipe", "",
               f"The base, corners and compound models each trained once at "
               f"{', '.join(f'{x:g}x' for x in preset.lr_sweep)} the recipe's learning rate "
               f"(a seed of their own) and kept the best by validation: {swept - len(moved)} "
               f"of {swept} kept the recipe's"
               + (": " + ", ".join(f"{k} {v:g}x" for k, v in moved) + " moved." if moved
                  else "."), ""]
    md += _law_lines(payload)
    bud = "; ".join(f"`{b.name}` {b.recipe.epochs} epoch(s) over {b.recipe.train_size or 'all'} "
                    f"training images" for b in preset.budgets)
    env = payload["environment"]
    md += ["## How it was measured", "",
           f"- Data: {preset.dataset}, {payload['native_resolution']} px originals; the bases see "
           + ", ".join(f"{b.key} {b.pixels(preset.image_size)} px" for b in preset.bases)
           + " (antialiased), so resolution up to the native size adds detail. Choices are "
           "made on validation top-1 (a split held out of the training set).",
           f"- Grid search: (alpha, beta, gamma) >= 1 on a step of {preset.grid_step:g} with "
           f"|alpha beta^2 gamma^2 - 2| <= {preset.grid_tolerance:g}, networks that round to the "
           f"same one dropped, {preset.grid_seeds} seeds each at the `{preset.budgets[0].name}` "
           "budget; the winner by mean.",
           f"- Models: each direction matched to the target's measured MACs; {preset.seeds} "
           f"seeds for the base, the corners, the paper's and the searched coefficients, "
           f"{preset.sweep_seeds} for the interior sweep points. Budgets: {bud}.",
           f"- Wall time {payload['wall_s'] / 60:.1f} min, {env['workers']} worker(s) on "
           f"{env['cpu_cores']} core(s), torch {env['torch']}, Python {env['python']}.", ""]
    return "\n".join(md)
