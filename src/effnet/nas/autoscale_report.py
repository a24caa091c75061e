"""`effnet autoscale`'s report: found baseline, its coefficients beside the paper's, the family."""

from __future__ import annotations

import platform
import statistics
from pathlib import Path
from typing import Any

from ..io_utils import atomic_write_json, atomic_write_text, pyplot, save_figure
from ..spec import NetworkSpec
from .space import describe

PAPER = (1.2, 1.1, 1.15)


def family_rows(family: dict[str, dict], phis: list[float], seeds: int) -> list[dict[str, Any]]:
    """Per family and phi: measured MACs, mean validation top-1 over seeds, the seeds."""
    rows = []
    for fam in ("found", "b0-paper"):
        for phi in [0.0, *phis]:
            runs = [family.get(f"{fam}-phi{phi:g}-s{s}") for s in range(seeds)]
            runs = [r for r in runs if r and not r.get("pruned")]
            if not runs:
                continue
            tops = [r["val_top1"] for r in runs]
            rows.append({"family": fam, "phi": phi, "macs": runs[0]["macs"],
                         "params": runs[0]["params"], "resolution": runs[0]["resolution"],
                         "val_top1": statistics.fmean(tops), "seeds": tops})
    return rows


def _plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for fam, style in (("found", {"c": "tab:orange", "marker": "o",
                                  "label": "found baseline, found coefficients"}),
                       ("b0-paper", {"c": "tab:blue", "marker": "s",
                                     "label": "B0, paper's coefficients (1.2, 1.1, 1.15)"})):
        pts = sorted((r for r in rows if r["family"] == fam), key=lambda r: r["phi"])
        if not pts:
            continue
        ax.plot([r["macs"] / 1e6 for r in pts], [100 * r["val_top1"] for r in pts], **style)
        for r in pts:
            ax.annotate(f"phi={r['phi']:g}", (r["macs"] / 1e6, 100 * r["val_top1"]), fontsize=7,
                        xytext=(3, -9), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("MACs of the proxy model (M, measured)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Compound-scaled families at proxy scale")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _twins(rows: list[dict], best: dict) -> str:
    """A sentence naming the grid points that build the same proxy network as the best."""
    same = [r for r in rows if r is not best and r["status"] == "complete"
            and (r["macs"], r["params"], r["resolution"]) == (best["macs"], best["params"],
                                                             best["resolution"])]
    if not same:
        return "Read the table in `grid/` before trusting the winner over its neighbours."
    names = ", ".join(f"({r['alpha']:g}, {r['beta']:g}, {r['gamma']:g})" for r in same)
    return (f"At this scale {names} round(s) to the very same network (same MACs, parameters "
            "and resolution), so the grid cannot tell them from the winner: the found "
            "coefficients are one of a tie.")


def write_autoscale_report(out: Path, preset, found: NetworkSpec, nas, grid, coeffs, family,
                           phis, times: dict[str, float], workers: int,
                           trainings: dict[str, float] | None = None) -> Path:
    """report.md, family.png and autoscale.json in `out`; returns the report's path."""
    import torch

    from .. import __version__
    from ..scaling import flops_constraint

    rows = family_rows(family, phis, preset.family_seeds)
    _plot(rows, out / "family.png")
    best = nas.best
    a, b, g = coeffs
    total = sum(times.values())
    lines = [
        "# The whole method on your data: search, grid-search, scale (Tan & Le 2019)", "",
        f"Preset `{preset.name}`; {workers} worker(s); wall time {total / 60:.1f} min "
        f"(search {times['search'] / 60:.1f}, grid {times['grid'] / 60:.1f}, family "
        f"{times['family'] / 60:.1f}); Python {platform.python_version()}, torch "
        f"{torch.__version__}, effnet {__version__}.", "",
        *_cost_lines(trainings),
        "## 1. The baseline search", "",
        f"{len(nas.rows)} trials around B0 (see `nas/report.md`). The pick, trial "
        f"{best['trial']}, reached {100 * best['accuracy']:.2f}% validation top-1 in the search at "
        f"{best['macs'] / 1e6:.3f} M MACs (proxy scale; target "
        f"{nas.target_macs / 1e6:.3f} M). Its stages:", "",
        f"`{describe(found)}`", "",
        "## 2. Its coefficients", "",
        f"The grid search at phi = 1 ({len(grid.rows)} points, step {preset.grid_step:g}, "
        f"|alpha*beta^2*gamma^2 - 2| <= {preset.grid_tolerance:g}; see `grid/`) found:", "",
        "| | alpha (depth) | beta (width) | gamma (resolution) | alpha*beta^2*gamma^2 |",
        "|---|---|---|---|---|",
        f"| found | {a:g} | {b:g} | {g:g} | {flops_constraint(a, b, g):.3f} |",
        f"| paper (B0, ImageNet) | {PAPER[0]:g} | {PAPER[1]:g} | {PAPER[2]:g} | "
        f"{flops_constraint(*PAPER):.3f} |", "",
        f"The best grid point scored {100 * grid.best['val_top1']:.2f}% with "
        f"{preset.grid_seeds} seed(s); its measured MACs are "
        f"{grid.best['mac_ratio']:.2f}x the baseline's (the target is 2x: rounding of "
        "channels, repeats and pixels moves small networks off it). "
        + _twins(grid.rows, grid.best), "",
        "## 3. The scaled families", "",
        f"Mean validation top-1 over {preset.family_seeds} seed(s), every model trained with "
        "the same proxy recipe (`family.png`):", "",
        "| family | phi | resolution | MACs (M) | params (M) | val top-1 % |",
        "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['phi']:g} | {r['resolution']} | "
                     f"{r['macs'] / 1e6:.3f} | {r['params'] / 1e6:.3f} | "
                     f"{100 * r['val_top1']:.2f} |")
    if preset.family_seeds < 2:
        lines += ["", "One seed per model: these are single runs, with no interval; the "
                  "`standard` preset trains 3 seeds.", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    atomic_write_json(out / "autoscale.json", {
        "preset": preset.name, "coefficients": list(coeffs), "paper": list(PAPER),
        "found": describe(found), "nas_best": {k: best[k] for k in ("trial", "accuracy",
                                                                     "macs", "reward")},
        "family": rows, "times_s": times, "workers": workers, "trainings": trainings})
    return path


def _cost_lines(t: dict[str, float] | None) -> list[str]:
    """What each step cost, in trainings of its recipe."""
    if not t:
        return []
    return [f"Trainings: search {t['search']:.1f} full trainings of its recipe over "
            f"{t['search_trials']:.0f} trials (pruned ones count their share), pick "
            f"{t['pick']:.0f} retrainings, grid {t['grid']:.1f} and family {t['family']:.0f} "
            "trainings of the shorter recipe (2 epochs on 8,000 images).", ""]
