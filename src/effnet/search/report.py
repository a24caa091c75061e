"""The study's outputs: report.md with tables and embedded PNG plots, and results.json.

Every accuracy is a mean over seeds with its sample standard deviation. The
verdict on compound scaling is computed, not written in advance: it says
"won", "lost" or "tied" by comparing the difference of means with the seed
spread, whichever way it comes out.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Any

from .study import (
    PAPER_TABLE3,
    PAPER_TABLE7,
    STRATEGIES,
    Preset,
    Run,
    results_by_run,
)

SINGLE = ("depth", "width", "resolution")
COLORS = {"baseline": "black", "depth": "tab:blue", "width": "tab:orange",
          "resolution": "tab:green", "compound": "tab:red"}


# ---------------------------------------------------------------- Fig. 7: activation maps
def grad_cam(model, x, labels, stride: int):
    """Gradient-weighted class activation maps (Selvaraju et al. 2017) at the stage of `stride`.

    The paper's Fig. 7 uses CAM (Zhou et al. 2016) on the last feature map;
    at proxy resolutions that map is 1-2 pixels wide, so the maps here come
    from the last stage at `stride` (8: a 4x4 map at 32 px), weighted by the
    gradient of the true class's logit. Returns maps in [0, 1] at input size.
    """
    import torch
    import torch.nn.functional as F

    stages = [f for f in model.feature_info if f["reduction"] <= stride]
    stage = stages[-1]["stage"]
    acts: dict[str, torch.Tensor] = {}
    hook = model.blocks[stage].register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x)
            a = acts["a"]
            score = logits.gather(1, labels.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, a)
    finally:
        hook.remove()
    cam = F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return cam / peak, logits.argmax(1).detach()


def class_activation_maps(runs: list[Run], preset: Preset, models_dir: Path,
                          root: str | None, num_classes: int, in_chans: int) -> dict | None:
    """Activation maps of each model in `runs` (seed 0 weights) on the same validation images."""
    import torch
    import torch.nn.functional as F

    from .budget import ProxyData

    if preset.cam_images < 1:
        return None
    data = ProxyData(preset.dataset, root, in_chans, preset.budget, cache=1)
    display = max(r.scaled.resolution for r in runs)
    out: dict[str, Any] = {"keys": [], "maps": {}, "preds": {}, "labels": None, "images": None,
                           "classes": None}
    for r in runs:
        path = models_dir / f"{r.key}.pt"
        if not path.exists():
            continue
        x, y = data.images(r.scaled.resolution, preset.cam_images)
        model = r.scaled.build(num_classes=num_classes, in_chans=in_chans)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        cam, pred = grad_cam(model, x, y, preset.cam_stride)
        cam = F.interpolate(cam[:, None], size=(display, display), mode="bilinear",
                            align_corners=False)[:, 0]
        out["keys"].append(r.key)
        out["maps"][r.key] = cam
        out["preds"][r.key] = pred.tolist()
        if out["images"] is None or r.strategy == "resolution":
            img = F.interpolate(x[:, :1], size=(display, display), mode="bilinear",
                                align_corners=False)[:, 0]
            out["images"], out["labels"] = img, y.tolist()
        out["classes"] = data.classes
    return out if out["keys"] else None


# ---------------------------------------------------------------- verdicts
def compare(rows: list[dict], group: str, target: float) -> dict | None:
    """Compound vs the best single dimension at one budget: difference and seed spread."""
    at = {r["strategy"]: r for r in rows if r["group"] == group and r["target"] == target
          and r["val_top1"] is not None}
    if "compound" not in at or not any(s in at for s in SINGLE):
        return None
    comp = at["compound"]
    best = max((at[s] for s in SINGLE if s in at), key=lambda r: r["val_top1"])
    diff = comp["val_top1"] - best["val_top1"]
    noise = math.sqrt((comp["val_top1_std"] or 0) ** 2 + (best["val_top1_std"] or 0) ** 2)
    verdict = "won" if diff > noise else "lost" if diff < -noise else "tied"
    return {"group": group, "target": target, "compound": comp["val_top1"],
            "compound_std": comp["val_top1_std"], "compound_mac_ratio": comp["mac_ratio"],
            "best_single": best["strategy"], "best_single_top1": best["val_top1"],
            "best_single_std": best["val_top1_std"], "best_single_mac_ratio": best["mac_ratio"],
            "difference": diff, "spread": noise, "verdict": verdict}


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f} ± {100 * (std or 0):.2f}"


def _verdict_sentence(c: dict) -> str:
    words = {"won": "won", "lost": "lost", "tied": "tied (the difference is within the seed "
             "spread)"}[c["verdict"]]
    return (f"**{c['group']} at {c['target']:g}x MACs: compound scaling {words}** — "
            f"{_pm(c['compound'], c['compound_std'])}% top-1 at {c['compound_mac_ratio']:.2f}x "
            f"measured MACs, against {_pm(c['best_single_top1'], c['best_single_std'])}% for the "
            f"best single dimension ({c['best_single']}, {c['best_single_mac_ratio']:.2f}x): "
            f"{100 * c['difference']:+.2f} points, seed spread ±{100 * c['spread']:.2f}.")


def _observations(rows: list[dict], comparisons: list[dict]) -> list[str]:
    """Plain statements read off the results: what fell below its base, what missed its budget."""
    out = []
    for r in rows:
        if r["strategy"] == "baseline" or r["val_top1"] is None:
            continue
        base = next((b for b in rows if b["group"] == r["group"]
                     and b["strategy"] == "baseline"), None)
        if base and base["val_top1"] is not None:
            spread = math.hypot(r["val_top1_std"] or 0, base["val_top1_std"] or 0)
            if r["val_top1"] < base["val_top1"] - max(spread, 0.01):
                out.append(f"{r['group']} scaled by {r['strategy']} to {r['target']:g}x fell "
                           f"below its unscaled base ({_pm(r['val_top1'], r['val_top1_std'])}% "
                           f"vs {_pm(base['val_top1'], base['val_top1_std'])}%): within this "
                           "budget it had not learned yet. A short proxy rewards models that "
                           "learn fast, and deeper ones learn slower.")
    for c in comparisons:
        if abs(c["compound_mac_ratio"] / c["target"] - 1) > 0.05:
            out.append(f"{c['group']} at {c['target']:g}x: the compound model landed at "
                       f"{c['compound_mac_ratio']:.2f}x measured MACs, not {c['target']:g}x "
                       "(MACs move in steps with the input size), so it had more MACs than "
                       "its rivals." if c["compound_mac_ratio"] > c["target"]
                       else f"{c['group']} at {c['target']:g}x: the compound model landed at "
                       f"{c['compound_mac_ratio']:.2f}x measured MACs, fewer than its rivals.")
    return out


# ---------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def _curve(ax, rows: list[dict], strategy: str, base: dict, label: str | None = None) -> None:
    pts = [base] + sorted((r for r in rows if r["strategy"] == strategy
                           and r["val_top1"] is not None), key=lambda r: r["cost"]["macs"])
    xs = [r["cost"]["macs"] / 1e6 for r in pts]
    ys = [100 * r["val_top1"] for r in pts]
    es = [100 * (r["val_top1_std"] or 0) for r in pts]
    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=COLORS[strategy],
                label=label or strategy)
    for r, x, y in zip(pts[1:], xs[1:], ys[1:], strict=True):
        m = r["multiplier"]
        tag = {"depth": f"d={r['scaled']['depth_mult']:.2g}",
               "width": f"w={r['scaled']['width_mult']:.2g}",
               "resolution": f"r={r['scaled']['resolution']}px",
               "compound": f"phi={m:.2f}"}[strategy]
        ax.annotate(tag, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)


def plot_fig3(rows: list[dict], group: str, path: Path) -> None:
    plt = _plt()
    g = [r for r in rows if r["group"] == group]
    base = next(r for r in g if r["strategy"] == "baseline")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, strategy in zip(axes, ("width", "depth", "resolution"), strict=True):
        _curve(ax, g, strategy, base)
        ax.set_title(f"scale {group} by {strategy}")
        ax.set_xlabel("MACs (millions, measured)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation top-1 (%)")
    fig.suptitle("Fig. 3 at proxy scale: single-dimension scaling (mean ± std over seeds)",
                 y=1.03)
    _save(fig, path)
    plt.close(fig)


def plot_fig8(rows: list[dict], group: str, path: Path) -> None:
    plt = _plt()
    g = [r for r in rows if r["group"] == group]
    base = next(r for r in g if r["strategy"] == "baseline")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for strategy in STRATEGIES:
        _curve(ax, g, strategy, base, label=f"scale by {strategy}" if strategy != "compound"
               else "compound scaling")
    ax.set_xlabel("MACs (millions, measured)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"Fig. 8 at proxy scale: {group}, compound vs single dimension")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def plot_table3(rows: list[dict], groups: list[str], target: float, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        sel = [r for r in rows if r["group"] == group and r["val_top1"] is not None
               and (r["strategy"] == "baseline" or r["target"] == target)]
        order = [s for s in ("baseline", *STRATEGIES) if any(r["strategy"] == s for r in sel)]
        vals = [next(r for r in sel if r["strategy"] == s) for s in order]
        ax.bar(range(len(vals)), [100 * r["val_top1"] for r in vals],
               yerr=[100 * (r["val_top1_std"] or 0) for r in vals], capsize=3,
               color=[COLORS[s] for s in order])
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels([f"{s}\n{r['mac_ratio']:.2f}x" for s, r in zip(order, vals,
                                                                            strict=True)],
                           fontsize=7)
        lo = min(100 * (r["val_top1"] - (r["val_top1_std"] or 0)) for r in vals)
        ax.set_ylim(max(0, lo - 5), None)
        ax.set_title(f"{group} at ~{target:g}x MACs")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("validation top-1 (%)")
    fig.suptitle("Table 3 at proxy scale (labels: strategy and measured MACs / base)", y=1.03)
    _save(fig, path)
    plt.close(fig)


def plot_cams(cams: dict, path: Path) -> None:
    plt = _plt()
    keys, n = cams["keys"], len(cams["labels"])
    fig, axes = plt.subplots(n, len(keys) + 1, figsize=(1.6 * (len(keys) + 1), 1.6 * n),
                             squeeze=False)
    classes = cams.get("classes") or []
    for i in range(n):
        img = cams["images"][i]
        img = ((img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)).numpy()
        label = cams["labels"][i]
        axes[i][0].imshow(img, cmap="gray")
        axes[i][0].set_title(classes[label] if label < len(classes) else str(label), fontsize=7)
        for j, key in enumerate(keys, start=1):
            axes[i][j].imshow(img, cmap="gray")
            axes[i][j].imshow(cams["maps"][key][i].numpy(), cmap="jet", alpha=0.45, vmin=0,
                              vmax=1)
            ok = cams["preds"][key][i] == label
            if i == 0:
                axes[i][j].set_title(key.split("-", 1)[1], fontsize=7)
            axes[i][j].text(1, 5, "ok" if ok else "wrong", color="white" if ok else "red",
                            fontsize=6)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Fig. 7 at proxy scale: activation maps of the true class (Grad-CAM)",
                 fontsize=9)
    _save(fig, path)
    plt.close(fig)


# ---------------------------------------------------------------- the report
def _table(rows: list[dict], paper: dict | None = None) -> str:
    head = ["model", "depth d", "width w", "res (px)", "params (M)", "MACs (M)", "x base",
            "vs target", "val top-1 % (mean ± std)", "seeds", "train s"]
    if paper:
        head += ["paper ImageNet top-1 % (B MACs)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = r["scaled"]
        name = "baseline" if r["strategy"] == "baseline" else \
            f"{r['strategy']} ({r['target']:g}x)"
        cells = [name, f"{s['depth_mult']:.3g}", f"{s['width_mult']:.3g}", str(s["resolution"]),
                 f"{r['cost']['params'] / 1e6:.3f}", f"{r['cost']['macs'] / 1e6:.2f}",
                 f"{r['mac_ratio']:.2f}",
                 "-" if r["strategy"] == "baseline" else f"{100 * r['mac_distance']:+.1f}%",
                 _pm(r["val_top1"], r["val_top1_std"]), str(r["seeds"]),
                 f"{r['seconds']:.0f}"]
        if paper:
            ref = paper.get(r["strategy"])
            cells.append(f"{ref[0]} ({ref[1]})" if ref else "-")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_report(out: Path, preset: Preset, runs: list[Run], state: dict, cams: dict | None,
                 workers: int = 1, threads: int = 1) -> Path:
    """Write report.md, the PNG plots and results.json into `out`; return report.md's path."""
    import torch

    from .search import atomic_write_text

    rows = results_by_run(runs, state, preset.seeds)
    b0 = preset.bases[0].name
    others = [b.name for b in preset.bases[1:]]
    comparisons = [c for c in (compare(rows, b0, t) for t in preset.targets) if c]
    comparisons += [c for c in (compare(rows, g, preset.table3_target) for g in others) if c]
    plots = {}
    if any(r["group"] == b0 and r["val_top1"] is not None for r in rows):
        plot_fig3(rows, b0, out / "fig3_single_dimension.png")
        plot_fig8(rows, b0, out / "fig8_compound_vs_single.png")
        plots.update(fig3="fig3_single_dimension.png", fig8="fig8_compound_vs_single.png")
    if others:
        plot_table3(rows, [b0, *others] if preset.table3_target in preset.targets else others,
                    preset.table3_target, out / "table3_baselines.png")
        plots["table3"] = "table3_baselines.png"
    if cams:
        plot_cams(cams, out / "fig7_activation_maps.png")
        plots["fig7"] = "fig7_activation_maps.png"

    wins = sum(c["verdict"] == "won" for c in comparisons)
    losses = sum(c["verdict"] == "lost" for c in comparisons)
    ties = len(comparisons) - wins - losses
    mean_diff = statistics.fmean(c["difference"] for c in comparisons) if comparisons else 0.0
    if not comparisons:
        headline = "No comparison could be made (no results)."
    elif wins == len(comparisons):
        headline = ("Compound scaling won every comparison on this proxy, by "
                    f"{100 * mean_diff:+.2f} points on average over the best single dimension.")
    elif losses == len(comparisons):
        headline = ("Compound scaling lost every comparison on this proxy, by "
                    f"{100 * mean_diff:+.2f} points on average against the best single "
                    "dimension.")
    else:
        headline = (f"Mixed result on this proxy: compound scaling won {wins}, tied {ties} "
                    f"and lost {losses} of {len(comparisons)} comparisons with the best single "
                    f"dimension ({100 * mean_diff:+.2f} points on average).")
    observations = _observations(rows, comparisons)
    b = preset.budget
    wall = state.get("wall_s", 0.0)
    cpu = state.get("cpu_s")
    load = state.get("load_avg") or [None, None]
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "processor": platform.processor(),
           "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count(), "workers": workers, "threads_per_worker": threads,
           "cuda": torch.cuda.is_available()}
    md = [f"# Compound scaling study — preset `{preset.name}`", "",
          "## Result in plain words", "", headline, ""]
    md += [f"- {_verdict_sentence(c)}" for c in comparisons]
    if observations:
        md += ["", "What drove it, from the numbers above:", ""]
        md += [f"- {o}" for o in observations]
    md += ["", "A win means the difference of the means is larger than the combined seed spread "
           "(sqrt(std_compound² + std_single²)); with "
           f"{preset.seeds} seeds that spread is itself rough, so read small differences as "
           "ties.", "",
           "## What this is, and what it is not", "",
           f"- **A proxy.** {preset.description}. The paper trains on ImageNet at 224-600 px "
           "for ~350 epochs; nothing here is comparable in absolute terms.",
           f"- **A short budget ranks models by how fast they learn**, not only by how well "
           f"they end up: each model sees {b.epochs} epoch(s) over "
           f"{b.train_size or 'all'} training images (recipe `{b.recipe}`, batch "
           f"{b.batch_size}). EfficientNet learns slowly on small data, and bigger models may "
           "need more steps than they get here; check a ranking against longer runs "
           "(`--preset full`) before trusting it.",
           "- **Scores** are top-1 on a validation split held out of the training set "
           f"({b.val_size or 'all'} images); the test set is not used.",
           "- **Equal budgets are measured.** Every model's MACs are counted on the built "
           "network (torch.utils.flop_counter), and each multiplier is searched until the "
           "measured MACs are closest to the target; 'vs target' shows how far each landed. "
           "Channel rounding to multiples of 8, repeats rounded up and the discrete "
           "feature-map sizes at small inputs make exact matches impossible.",
           f"- **Compound coefficients** alpha, beta, gamma = "
           f"{', '.join(f'{c:g}' for c in preset.coefficients)} (the paper's, found on B0 at "
           "224 px); phi is chosen per budget. The paper gives no coefficients for "
           "MobileNetV2 or ResNet-50, so the same ones are used there.",
           "- **Resolution** scaling upsamples the dataset's images"
           + (" (28 px originals)" if preset.dataset == "fashion-mnist" else "")
           + ": it adds pixels, not information. At 32 px the B0 base's last feature map "
           "is 1x1; a few more pixels make the deep layers' maps 2x2 or larger, which is a "
           "big change in MACs (and, it seems, in what small images allow the network to "
           "see).", ""]
    if "fig3" in plots:
        g = [r for r in rows if r["group"] == b0]
        md += ["## Fig. 3 — scaling one dimension of the B0 base", "",
               f"![Fig. 3]({plots['fig3']})", "",
               "## Fig. 8 and Table 7 — compound vs single-dimension scaling (B0 base)", "",
               f"![Fig. 8]({plots['fig8']})", "",
               _table(sorted(g, key=lambda r: (r["target"], STRATEGIES.index(r["strategy"])
                                               if r["strategy"] in STRATEGIES else -1)),
                      PAPER_TABLE7), "",
               "The paper's column is ImageNet (Table 7, at ~4.5x the MACs of B0), for the "
               "shape of the result only.", ""]
    if others:
        md += ["## Table 3 — the same on MobileNetV2- and ResNet-50-style bases", "",
               f"![Table 3]({plots['table3']})", ""]
        for group in others:
            g = [r for r in rows if r["group"] == group]
            md += [f"### {group}", "", _table(g, PAPER_TABLE3.get(group)), ""]
    if cams:
        md += ["## Fig. 7 — activation maps", "", f"![Fig. 7]({plots['fig7']})", "",
               f"The same {len(cams['labels'])} validation images through the B0 base and its "
               f"four scalings at {max(preset.targets):g}x MACs (seed 0 weights). The paper uses "
               "CAM on the last feature map; at these input sizes that map is 1-2 pixels wide, "
               f"so these are Grad-CAM maps of the true class at stride {preset.cam_stride}. "
               "'wrong' marks a misclassified image.", ""]
    md += ["## Time and machine", "",
           f"Wall time {wall / 60:.1f} min for {len(rows)} models x {preset.seeds} seeds "
           f"({workers} worker process(es), {threads} thread(s) each)"
           + (f", {cpu / 60:.1f} min of CPU time" if cpu else "")
           + (" (all sessions, if it was resumed)" if cpu else "")
           + (f"; load average {load[0]:.1f} at the start and {load[1]:.1f} at the end "
              "(above the core count means other programs competed for the CPU)"
              if load[0] is not None and load[1] is not None else "")
           + f". torch {env['torch']}, {env['cpu_cores']} CPU core(s), CUDA "
           f"{'yes' if env['cuda'] else 'no'}. Expected for this preset: {preset.expected}.",
           "", "Reproduce: `effnet study --preset " + preset.name + " --output DIR` "
           "(a rerun into the same folder resumes). Numbers: `results.json`.", ""]
    payload = {"preset": {**preset.identity(), "description": preset.description,
                          "expected": preset.expected},
               "environment": env, "wall_s": wall, "cpu_s": cpu, "load_avg": load,
               "comparisons": comparisons, "headline": headline,
               "observations": observations, "rows": rows,
               "paper": {"table7": PAPER_TABLE7, "table3": PAPER_TABLE3},
               "activation_maps": {"models": cams["keys"], "labels": cams["labels"],
                                   "predictions": cams["preds"]} if cams else None,
               "plots": plots}
    atomic_write_text(out / "results.json", json.dumps(payload, indent=1) + "\n")
    path = out / "report.md"
    atomic_write_text(path, "\n".join(md))
    return path
