"""The study's outputs: results.json (for programs) and report.md with its plots (for people).

Every accuracy is a mean over seeds with its sample standard deviation. The
verdict on compound scaling is computed, never written in advance: for each
base, budget and MAC target, compound scaling against the best single
dimension, with the difference of means, its 95% Welch interval and win /
loss / tie (:mod:`.stats`).

The primary comparisons are named here, before any run: at each budget,
compound scaling against *each* single dimension at each base and MAC
target, Holm-corrected over that budget's family (the last budget's family
is the study's answer). The comparison with the best single dimension picks
the best of three after the fact and is reported beside them, uncorrected.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from ..train.checkpoint import atomic_write_text
from . import plots
from .cam import class_activation_maps
from .plan import Run, cam_runs, compound_distance
from .presets import PAPER_TABLE3, PAPER_TABLE7, Preset
from .prose import report_markdown
from .stats import (
    STILL_LEARNING,
    bootstrap_tau,
    compare,
    holm_compare,
    kendall_tau,
    last_quarter_gain,
    mean_curve,
)

SINGLE = ("depth", "width", "resolution")
MAC_MATCH = 0.05
"""Compared models whose measured MACs differ by more than this get the gap beside the verdict."""
REFERENCE = "reference_standard.json"


def model_rows(runs: list[Run], preset: Preset, state: dict, native: int,
               seeds_of: Callable[[Run], tuple[int, ...]] | None = None) -> list[dict]:
    """One row per budget and model: its plan, seed scores, their mean and spread, its curve.

    `seeds_of` gives a run's seeds (default: the preset's).
    """
    bases = {b.name: b for b in preset.bases}
    results = state["results"]
    rows = []
    for b in preset.budgets:
        for r in runs:
            seeds = seeds_of(r) if seeds_of else preset.seed_list
            res = [results.get(f"{b.name}/{r.key}/{s}") for s in seeds]
            res = [x for x in res if x is not None]
            if not res:
                continue
            tops = [x["val_top1"] for x in res]
            tests = [x["test_top1"] for x in res if "test_top1" in x]
            curve = mean_curve([x["curve"] for x in res])
            gain = last_quarter_gain(curve)
            row = r.as_dict()
            row.update(budget=b.name, base=r.group, macs=r.cost.macs, params=r.cost.params,
                       seeds=len(tops), val_top1_seeds=tops,
                       val_top1_mean=statistics.fmean(tops),
                       val_top1_std=statistics.stdev(tops) if len(tops) > 1 else 0.0,
                       curve_mean=curve, last_quarter_gain=gain,
                       still_learning=gain > STILL_LEARNING,
                       above_native=r.scaled.resolution > native,
                       seconds=sum(x["seconds"] for x in res),
                       images_per_s=statistics.fmean(x["images_per_s"] for x in res))
            if tests and len(tests) == len(tops):  # scored on the test split as well
                row.update(test_top1_seeds=tests, test_top1_mean=statistics.fmean(tests),
                           test_top1_std=statistics.stdev(tests) if len(tests) > 1 else 0.0)
            if r.strategy == "compound" and preset.design == "strategies":
                row["compound_distance"] = compound_distance(r, bases[r.group], preset.image_size,
                                                             preset.coefficients)
            rows.append(row)
    return rows


def verdicts(rows: list[dict]) -> list[dict]:
    """Per base, budget and target: compound against the best single dimension (by mean)."""
    out = []
    keys = sorted({(r["base"], r["budget"], r["target"]) for r in rows
                   if r["strategy"] == "compound"}, key=lambda k: (k[0], k[2]))
    order = list(dict.fromkeys(r["budget"] for r in rows))
    keys.sort(key=lambda k: order.index(k[1]))
    for base, budget, target in keys:
        at = {r["strategy"]: r for r in rows if (r["base"], r["budget"], r["target"])
              == (base, budget, target)}
        singles = [at[s] for s in SINGLE if s in at and at[s]["seeds"] >= 2]
        comp = at["compound"]
        if not singles or comp["seeds"] < 2:
            continue
        best = max(singles, key=lambda r: r["val_top1_mean"])
        c = compare(comp["val_top1_seeds"], best["val_top1_seeds"])
        gap = comp["macs"] / best["macs"] - 1
        out.append({"base": base, "budget": budget, "target": target,
                    "compound": comp["key"], "best_single": best["strategy"],
                    "compound_top1": comp["val_top1_mean"], "best_single_top1":
                    best["val_top1_mean"], **c.as_dict(), "mac_gap": gap,
                    "macs_matched": abs(gap) <= MAC_MATCH})
    return out


def primary_comparisons(rows: list[dict], lead: str = "compound", score: str = "val"
                        ) -> list[dict]:
    """`lead` (compound scaling) against each single dimension, per base and target,
    Holm-corrected per budget, on the `score` ("val" or "test") top-1.

    Only pairs with at least two seeds on each side enter a family.
    """
    seeds, mean = f"{score}_top1_seeds", f"{score}_top1_mean"
    out = []
    for budget in dict.fromkeys(r["budget"] for r in rows):
        at = {(r["base"], r["target"], r["strategy"]): r for r in rows if r["budget"] == budget}
        pairs = [(at[k[:2] + (lead,)], r) for k, r in at.items()
                 if k[2] in SINGLE and k[:2] + (lead,) in at
                 and r["seeds"] >= 2 and at[k[:2] + (lead,)]["seeds"] >= 2]
        results = holm_compare([(c[seeds], r[seeds]) for c, r in pairs])
        for (comp, single), c in zip(pairs, results, strict=True):
            gap = comp["macs"] / single["macs"] - 1
            out.append({"base": comp["base"], "budget": budget, "target": comp["target"],
                        "lead": lead, "single": single["strategy"], "score": score,
                        "compound_top1": comp[mean], "single_top1": single[mean],
                        **c.as_dict(),
                        "family_size": len(pairs), "mac_gap": gap,
                        "macs_matched": abs(gap) <= MAC_MATCH})
    return out


def seed_scores(models: list[dict], base: str, budget: str | None = None
                ) -> dict[str, list[float]]:
    """{model key: per-seed top-1} of one base's models at one budget (by default the last)."""
    sel = [m for m in models if m["base"] == base]
    if not sel:
        return {}
    budget = budget or sel[-1]["budget"]
    return {m["key"]: m["val_top1_seeds"] for m in sel if m["budget"] == budget}


def replication(models: list[dict], reference: dict | None, base: str, budget: str,
                seeds: tuple[int, ...]) -> dict | None:
    """This run's ranking of `base`'s models at `budget` against the reference's at the same
    budget: Kendall's tau and its seed-bootstrap 95% interval, and whether the seeds differ
    (only then is it a replication rather than the reference reproduced)."""
    if reference is None:
        return None
    ref = [m for m in reference["models"] if m["base"] == base and m["budget"] == budget]
    if not ref:
        return None
    mine, theirs = seed_scores(models, base, budget), seed_scores(ref, base, budget)
    first = reference["preset"].get("first_seed", 0)
    ref_seeds = set(range(first, first + reference["seeds"]))
    return {"budget": budget, "kendall_tau": kendall_tau(b0_ranking(models, base, budget),
                                                         b0_ranking(ref, base, budget)),
            "ci": bootstrap_tau(mine, theirs), "models": len(set(mine) & set(theirs)),
            "reference_seeds": sorted(ref_seeds), "seeds": list(seeds),
            "disjoint_seeds": not ref_seeds & set(seeds)}


def load_reference(path: str | Path | None) -> dict | None:
    """A reference results.json: the given one, else the committed `standard` reference."""
    if path is not None:
        p = Path(path)
        return json.loads(p.read_text()) if p.exists() else None
    ref = resources.files("effnet.study").joinpath(REFERENCE)
    return json.loads(ref.read_text()) if ref.is_file() else None


def b0_ranking(models: list[dict], base: str, budget: str | None = None) -> dict[str, float]:
    """{model key: mean top-1} of one base's models at one budget (by default the last one)."""
    sel = [m for m in models if m["base"] == base]
    if not sel:
        return {}
    budget = budget or [m["budget"] for m in sel][-1]
    return {m["key"]: m["val_top1_mean"] for m in sel if m["budget"] == budget}


def _environment(workers: int | None) -> dict[str, Any]:
    import torch

    return {"torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor(),
            "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "workers": workers, "threads_per_worker": 1,
            "cuda": torch.cuda.is_available()}


def results_payload(preset: Preset, runs: list[Run], state: dict, native: int,
                    reference: dict | None) -> dict:
    """The machine-readable results (results.json)."""
    models = model_rows(runs, preset, state, native)
    b0 = preset.bases[0].name
    mine = b0_ranking(models, b0)
    ref = b0_ranking(reference["models"], b0) if reference else {}
    budgets = [b.name for b in preset.budgets]
    short_long = (kendall_tau(b0_ranking(models, b0, budgets[0]), mine)
                  if len(budgets) > 1 else None)
    return {"preset": preset.identity(), "wall_s": state.get("wall_s", 0.0),
            "seeds": preset.seeds, "seed_list": list(preset.seed_list),
            "native_resolution": native,
            "environment": _environment(state.get("workers")),
            "models": models, "verdicts": verdicts(models),
            "primary": primary_comparisons(models),
            "kendall_tau": kendall_tau(mine, ref) if ref else None,
            "kendall_tau_ci": (bootstrap_tau(seed_scores(models, b0),
                                             seed_scores(reference["models"], b0))
                               if ref else None),
            "replication": replication(models, reference, b0, budgets[-1], preset.seed_list),
            "reference_primary": primary_comparisons(reference["models"]) if reference else [],
            "kendall_tau_reference": reference["preset"]["name"] if reference else None,
            "kendall_tau_short_long": short_long,
            "still_learning": sum(m["still_learning"] for m in models),
            "paper": {"table7": PAPER_TABLE7, "table3": PAPER_TABLE3}}


def write_report(out: Path, preset: Preset, runs: list[Run], state: dict, data,
                 reference: str | Path | None = None) -> Path:
    """Write results.json, the PNG plots and report.md into `out`; return report.md's path."""
    ref = load_reference(reference)
    if ref is not None and ref.get("preset", {}).get("name") == preset.name:
        ref = None  # the reference itself, or a rerun of its preset: nothing to rank against
    payload = results_payload(preset, runs, state, data.native, ref)
    models = payload["models"]
    last = preset.budgets[-1].name
    figs: dict[str, str] = {}
    for base in preset.bases:
        rows = [m for m in models if m["base"] == base.name]
        if rows:
            figs[f"curves_{base.name}"] = f"curves_{base.name}.png"
            plots.plot_curves(rows, base.name, out / figs[f"curves_{base.name}"])
    b0_last = [m for m in models if m["base"] == preset.bases[0].name and m["budget"] == last]
    if b0_last:
        figs["fig3"], figs["fig8"] = "fig3_single_dimension.png", "fig8_compound_vs_single.png"
        plots.plot_fig3(b0_last, out / figs["fig3"])
        plots.plot_fig8(b0_last, out / figs["fig8"])
    if preset.table3_target is not None and len(preset.bases) > 1:
        figs["table3"] = "table3_baselines.png"
        plots.plot_table3([m for m in models if m["budget"] == last],
                          [b.name for b in preset.bases], preset.table3_target,
                          out / figs["table3"])
    cams = class_activation_maps(cam_runs(runs, preset), data, out / "models",
                                 preset.cam_images)
    if cams:
        figs["fig7"] = "fig7_activation_maps.png"
        plots.plot_cams(cams, out / figs["fig7"])
        payload["activation_maps"] = {"models": cams["keys"], "labels": cams["labels"],
                                      "predictions": cams["preds"]}
    payload["plots"] = figs
    atomic_write_text(out / "results.json", json.dumps(payload, indent=1) + "\n")
    path = out / "report.md"
    atomic_write_text(path, report_markdown(payload, preset, ref))
    return path
