"""What a baseline search leaves: spec.json, trials.csv, a plot and report.md (all atomic)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..io_utils import atomic_write_text, pyplot, save_figure
from ..spec import save_spec, spec_from_dict
from .search import NasConfig, NasResult, describe_row

CSV_FIELDS = ("trial", "status", "baseline", "macs", "params", "accuracy", "reward", "seconds",
              "pareto", "spec")


def pareto_front(rows: list[dict]) -> list[dict]:
    """The finished trials no other beats on both accuracy (higher) and MACs (lower), by MACs."""
    done = [r for r in rows if r["status"] == "complete"]
    front = [r for r in done
             if not any(o["accuracy"] >= r["accuracy"] and o["macs"] <= r["macs"]
                        and (o["accuracy"] > r["accuracy"] or o["macs"] < r["macs"])
                        for o in done)]
    return sorted(front, key=lambda r: r["macs"])


def trials_csv(rows: list[dict]) -> str:
    """trials.csv: one line per trial (spec as 'k3 e6 c24 r2 se0.25 | ...', MACs of the proxy)."""
    front = {r["trial"] for r in pareto_front(rows)}
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({"trial": r["trial"], "status": r["status"], "baseline": int(r["baseline"]),
                    "macs": r["macs"], "params": r["params"],
                    "accuracy": "" if r["accuracy"] is None else f"{r['accuracy']:.6f}",
                    "reward": "" if r["reward"] is None else f"{r['reward']:.6f}",
                    "seconds": "" if r["seconds"] is None else f"{r['seconds']:.2f}",
                    "pareto": int(r["trial"] in front), "spec": describe_row(r)})
    return out.getvalue()


def plot(rows: list[dict], path: Path, target: float) -> None:
    """Accuracy against MACs of every trial, the front as a line, the baseline (B0) marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for status, style in (("complete", {"c": "tab:blue", "label": "trial"}),
                          ("pruned", {"c": "lightgray", "label": "pruned (last evaluation)"})):
        pts = [r for r in rows if r["status"] == status and r["accuracy"] is not None]
        if pts:
            ax.scatter([r["macs"] / 1e6 for r in pts], [100 * r["accuracy"] for r in pts], s=18,
                       **style)
    front = pareto_front(rows)
    if front:
        ax.plot([r["macs"] / 1e6 for r in front], [100 * r["accuracy"] for r in front], "-o",
                c="tab:orange", ms=4, label="accuracy-MACs front")
    for r in rows:
        if r["baseline"] and r["accuracy"] is not None:
            ax.scatter([r["macs"] / 1e6], [100 * r["accuracy"]], marker="*", s=200, c="tab:red",
                       zorder=5, label="baseline (B0)")
            break
    ax.axvline(target / 1e6, ls=":", c="gray", label="target MACs")
    ax.set_xlabel("MACs of the proxy model (M, measured)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Baseline search: every trial")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def report_md(result: NasResult, cfg: NasConfig, command: str = "") -> str:
    """report.md: what was searched, the best baseline against B0, in plain words."""
    rows = result.rows
    best = result.best
    base = next((r for r in rows if r["baseline"] and r["status"] == "complete"), None)
    done = [r for r in rows if r["status"] == "complete"]
    pruned = [r for r in rows if r["status"] == "pruned"]
    p = cfg.proxy
    strategy = ("NSGA-II on (accuracy, MACs)" if cfg.multi_objective
                else f"{cfg.sampler} sampling on the reward ({cfg.startup} random trials "
                f"first), successive halving judging at evaluations "
                f"{', '.join(map(str, cfg.rungs()))} of {cfg.evals} and keeping the best "
                f"1/{cfg.eta}")
    cost = result.trainings()
    lines = [
        "# Baseline search (Tan & Le 2019, Sec. 4)", "",
        f"Searched {len(rows)} architectures around {cfg.space.base.name} "
        f"({cfg.space.size:.2e} choices: kernel, expansion, SE, width and repeats per stage) "
        f"with {strategy}. {len(done)} finished, {len(pruned)} were stopped early: "
        f"{cost['search']:.1f} full trainings, then {cost['pick']:.0f} retrainings for the "
        "pick.", "",
        f"Each candidate was scaled down to the proxy (width {p.width:g}, depth {p.depth:g}, "
        f"stem stride {p.stem_stride}, {p.dataset} at {p.resolution} px), its MACs measured on "
        f"the built model, and trained for {p.recipe.epochs} epoch(s) on "
        f"{p.recipe.train_size or 'all'} training images; accuracy is top-1 on the validation "
        "split held out of the training data (the test split is never used).", "",
        f"Reward: accuracy x (MACs / T)^w with T = {result.target_macs / 1e6:.3f} M MACs and "
        f"w = {cfg.w:g}" + (" (accuracy only)." if cfg.w == 0 else "."), "",
    ]
    lines += _pick_lines(result, cfg)
    if best is not None:
        lines += [
            "## The picked baseline" if result.pick is not None else "## The best baseline", "",
            f"Trial {best['trial']}: search reward {best['reward']:.4f}, validation top-1 "
            f"{_pct(best['accuracy'])} in the search, {best['macs'] / 1e6:.3f} M MACs and "
            f"{best['params'] / 1e6:.3f} M parameters at proxy scale.", "",
            f"Stages: `{describe_row(best)}`", "",
            "It is saved as `spec.json` (the full-size baseline, like B0 in paper Table 1): "
            "`effnet.create_model(spec='spec.json')`, `effnet scale --base spec.json --phi 1..3` "
            "and `effnet search --base spec.json` take it.", ""]
    if base is not None and best is not None:
        same = best["trial"] == base["trial"]
        lines += [
            "## Against B0", "",
            f"B0 itself (trial {base['trial']}) reached {_pct(base['accuracy'])} at "
            f"{base['macs'] / 1e6:.3f} M MACs, reward {base['reward']:.4f}. "
            + ("The search found nothing better than B0." if same else
               f"The best trial differs by {100 * (best['accuracy'] - base['accuracy']):+.2f} "
               f"points of accuracy at {best['macs'] / base['macs']:.2f}x B0's MACs."),
            "",
            "These are the search's single runs (one seed each), with no interval: "
            "`benchmarks/bench_nas.py` retrains the found baseline, B0 and random specs of the "
            "same MACs with new seeds and gives Welch's 95% interval.", ""]
    stopped = next((r for r in rows if r["baseline"] and r["status"] == "pruned"), None)
    if stopped is not None:
        lines += ["## Against B0", "",
                  f"B0 itself (trial {stopped['trial']}) was stopped by successive halving after "
                  f"evaluation {len(stopped['curve'])} of {cfg.evals} "
                  f"({_pct(stopped['accuracy'])} there), judged like any other trial: "
                  "`benchmarks/bench_nas.py` retrains it beside the found baseline.", ""]
    lines += ["## Files", "",
              "- `spec.json`: the best baseline; `trials.csv`: every trial (spec, MACs, params, "
              "accuracy, reward, seconds, whether it is on the accuracy-MACs front);",
              "- `accuracy_vs_macs.png`: every trial, the front and B0.", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    return "\n".join(lines)


def _pick_lines(result: NasResult, cfg: NasConfig) -> list[str]:
    """The pick's table: the top k, their search score and their mean over new seeds."""
    if not result.picks:
        return []
    pick = result.pick
    lines = ["## The pick: the top by the mean over new seeds", "",
             f"The {len(result.picks)} best finished trials were trained again with "
             f"{cfg.pick_seeds} seeds the search never used; the pick is the best mean reward "
             "(a single run's score is partly its seed's luck).", "",
             "| trial | MACs (M) | search top-1 % | new seeds top-1 % | mean % | mean reward |",
             "|---|---|---|---|---|---|"]
    for p in result.picks:
        mark = " (pick)" if pick is not None and p["trial"] == pick["trial"] else ""
        lines.append(f"| {p['trial']}{mark} | {p['macs'] / 1e6:.3f} | "
                     f"{100 * p['search_accuracy']:.2f} | "
                     + ", ".join(f"{100 * a:.2f}" for a in p["accuracies"])
                     + f" | {_pct(p['mean_accuracy'])} | "
                     + ("-" if p["mean_reward"] is None else f"{p['mean_reward']:.4f}") + " |")
    if pick is None:
        lines += ["", "The retrainings are not all done: rerun the same command to finish them."]
    return [*lines, ""]


def write_report(result: NasResult, cfg: NasConfig, output: str | Path,
                 command: str = "") -> dict[str, Path]:
    """Write spec.json (if a trial finished), trials.csv, accuracy_vs_macs.png and report.md."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"trials": out / "trials.csv", "plot": out / "accuracy_vs_macs.png",
             "report": out / "report.md"}
    best = result.best
    if best is not None:
        spec = spec_from_dict(best["spec"]).with_(name="effnet-nas-baseline")
        paths["spec"] = out / "spec.json"
        save_spec(spec, paths["spec"], search={
            "trial": best["trial"], "proxy_accuracy": best["accuracy"],
            "proxy_macs": best["macs"], "reward": best["reward"],
            "pick": result.pick,
            "target_macs": result.target_macs, "w": cfg.w, "proxy": cfg.proxy.identity(),
            "study": result.study_name})
    atomic_write_text(paths["trials"], trials_csv(result.rows))
    plot(result.rows, paths["plot"], result.target_macs)
    atomic_write_text(paths["report"], report_md(result, cfg, command))
    return paths
