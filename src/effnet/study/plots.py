"""The study's figures (matplotlib, PNG): Fig. 3, Fig. 8, Table 3, learning curves, Fig. 7.

Every function takes the report's model rows (one per budget and model, with
the mean and spread over seeds) and writes one PNG atomically.
"""

from __future__ import annotations

from pathlib import Path

from ..io_utils import pyplot, save_figure
from .presets import STRATEGIES

COLORS = {"baseline": "black", "depth": "tab:blue", "width": "tab:orange",
          "resolution": "tab:green", "compound": "tab:red", "searched": "tab:purple"}


def _color(strategy: str) -> str:
    """A strategy's colour; the sweep's other directions in grey."""
    return COLORS.get(strategy, "tab:brown" if strategy.startswith("searched") else "tab:gray")


def _tag(r: dict) -> str:
    s = r["scaled"]
    return {"depth": f"d={s['depth_mult']:.2g}", "width": f"w={s['width_mult']:.2g}",
            "resolution": f"{s['resolution']}px" + ("*" if r["above_native"] else ""),
            "compound": f"phi={r['multiplier']:.2f}"}.get(r["strategy"], "")


def _curve(ax, rows: list[dict], strategy: str, base: dict, label: str | None = None) -> None:
    pts = [base] + sorted((r for r in rows if r["strategy"] == strategy),
                          key=lambda r: r["macs"])
    xs = [r["macs"] / 1e6 for r in pts]
    ys = [100 * r["val_top1_mean"] for r in pts]
    es = [100 * r["val_top1_std"] for r in pts]
    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=COLORS[strategy],
                label=label or strategy)
    for r, x, y in zip(pts[1:], xs[1:], ys[1:], strict=True):
        ax.annotate(_tag(r), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)


def plot_fig3(rows: list[dict], path: Path) -> None:
    """Fig. 3: accuracy against measured MACs when one dimension of the base grows."""
    plt = pyplot()
    base = next(r for r in rows if r["strategy"] == "baseline")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, strategy in zip(axes, ("width", "depth", "resolution"), strict=True):
        _curve(ax, rows, strategy, base)
        ax.set_title(f"scale {base['group']} by {strategy}")
        ax.set_xlabel("MACs (millions, measured)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation top-1 (%)")
    fig.suptitle("Fig. 3 at proxy scale: one dimension at a time (mean ± std over seeds; "
                 "* above the native resolution)", y=1.03)
    save_figure(fig, path, bbox_inches="tight")


def plot_fig8(rows: list[dict], path: Path) -> None:
    """Fig. 8: compound scaling beside the three single-dimension curves."""
    plt = pyplot()
    base = next(r for r in rows if r["strategy"] == "baseline")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for strategy in STRATEGIES:
        _curve(ax, rows, strategy, base, label="compound scaling" if strategy == "compound"
               else f"scale by {strategy}")
    ax.set_xlabel("MACs (millions, measured)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"Fig. 8 at proxy scale: {base['group']}, compound vs single dimension")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, bbox_inches="tight")


def plot_table3(rows: list[dict], groups: list[str], target: float, path: Path) -> None:
    """Table 3: each base and its four scalings at one MAC budget, as bars."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        sel = {r["strategy"]: r for r in rows if r["group"] == group
               and (r["strategy"] == "baseline" or r["target"] == target)}
        order = [s for s in ("baseline", *STRATEGIES) if s in sel]
        vals = [sel[s] for s in order]
        ax.bar(range(len(vals)), [100 * r["val_top1_mean"] for r in vals],
               yerr=[100 * r["val_top1_std"] for r in vals], capsize=3,
               color=[COLORS[s] for s in order])
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels([f"{s}\n{r['mac_ratio']:.2f}x" for s, r in zip(order, vals,
                                                                            strict=True)],
                           fontsize=7)
        lo = min(100 * (r["val_top1_mean"] - r["val_top1_std"]) for r in vals)
        ax.set_ylim(max(0, lo - 3), None)
        ax.set_title(f"{group} at ~{target:g}x MACs")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("validation top-1 (%)")
    fig.suptitle("Table 3 at proxy scale (labels: strategy and measured MACs / base)", y=1.03)
    save_figure(fig, path, bbox_inches="tight")


def plot_curves(rows: list[dict], group: str, path: Path) -> None:
    """Learning curves: validation top-1 (mean over seeds) through the run, every model."""
    plt = pyplot()
    budgets = sorted({r["budget"] for r in rows if r["group"] == group},
                     key=lambda b: [r["budget"] for r in rows].index(b))
    fig, axes = plt.subplots(1, len(budgets), figsize=(6 * len(budgets), 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=True):
        for r in rows:
            if r["group"] != group or r["budget"] != budget or not r["curve_mean"]:
                continue
            n = len(r["curve_mean"])
            xs = [(i + 1) / n for i in range(n)]
            name = "baseline" if r["strategy"] == "baseline" else \
                f"{r['strategy']} {r['target']:g}x"
            style = "--" if r["still_learning"] else "-"
            ax.plot(xs, [100 * v for v in r["curve_mean"]], style, marker=".",
                    color=_color(r["strategy"]), alpha=1.0 if r["target"] >= 3 else 0.55,
                    label=name + (" (still learning)" if r["still_learning"] else ""))
        ax.set_xlabel(f"fraction of the run ({budget} budget)")
        ax.set_ylabel("validation top-1 (%)")
        ax.set_title(f"{group}: learning curves, {budget} budget")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path, bbox_inches="tight")


def plot_sweep(rows: list[dict], group: str, path: Path) -> None:
    """Accuracy of every direction at each MAC target (mean and SD over seeds), the
    directions ordered by their share of depth, then width (corners and the paper's and the
    searched coefficients coloured)."""
    plt = pyplot()
    targets = sorted({r["target"] for r in rows if r["strategy"] != "baseline"})
    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        sel = sorted((r for r in rows if r["target"] == target and r["strategy"] != "baseline"),
                     key=lambda r: (-r["shares"][0], -r["shares"][1]))
        xs = range(len(sel))
        ax.bar(xs, [100 * r["val_top1_mean"] for r in sel],
               yerr=[100 * r["val_top1_std"] for r in sel], capsize=3,
               color=[_color(r["strategy"]) for r in sel])
        ax.set_xticks(list(xs), [f"{r['strategy']}\n" + "/".join(f"{v:.2f}" for v in r["shares"])
                                 for r in sel], rotation=60, fontsize=6)
        lo = min(100 * (r["val_top1_mean"] - r["val_top1_std"]) for r in sel)
        hi = max(100 * (r["val_top1_mean"] + r["val_top1_std"]) for r in sel)
        ax.set_ylim(lo - 0.5, hi + 0.5)
        ax.set_ylabel("validation top-1 (%)")
        ax.set_title(f"{group}: ~{target:g}x MACs, shares depth/width/resolution")
        ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path, bbox_inches="tight")


def plot_cams(cams: dict, path: Path) -> None:
    """Fig. 7: the same images under each model's activation map of the true class."""
    plt = pyplot()
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
            axes[i][j].text(1, 3, "ok" if ok else "wrong", color="white" if ok else "red",
                            fontsize=6)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Fig. 7 at proxy scale: activation maps of the true class (Grad-CAM)",
                 fontsize=9)
    save_figure(fig, path, bbox_inches="tight")
