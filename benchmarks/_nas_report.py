"""bench_nas.py's report (a helper, not a benchmark): summary.json and REPORT.md."""

from __future__ import annotations

import json
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path

from bench_nas import ARMS, SAME_MACS, eval_seeds, found_key, per_seed_means


def _pts(c) -> str:
    return (f"{100 * c.diff:+.2f} [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] -> "
            f"{c.verdict}")


def _taus(results: dict, arm: str) -> dict:
    """Early-vs-final tau at each evaluation over one arm's trials trained to the end."""
    from effnet.nas.compare import rung_taus

    curves = {f"{s}-{r['trial']}": r["curve"] for s, res in (results.get(arm) or {}).items()
              for r in res.rows if r["status"] == "complete"}
    return {"trials": len(curves), "taus": rung_taus(curves)}


def _spreads(results: dict, models: dict, done: dict, seeds: list[int]) -> dict:
    """Seed SD vs between-architecture SD: random specs at equal MACs (evaluation phase) and
    every pick candidate (pick phase)."""
    from effnet.nas.compare import seed_spread

    rand = {k: [done[(k, e)]["val_top1"] for e in seeds if (k, e) in done]
            for k in models if k.startswith(SAME_MACS)}
    cands = {f"{arm}-s{s}-t{p['trial']}": p["accuracies"]
             for arm, by_seed in results.items() for s, res in by_seed.items()
             for p in res.picks}
    return {"random_specs_equal_macs": seed_spread(rand), "pick_candidates": seed_spread(cands)}


def _costs(results: dict) -> dict:
    return {arm: {s: res.trainings() for s, res in by_seed.items()}
            for arm, by_seed in results.items()}


def write_summary(out: Path, args, preset, results: dict, models: dict, done: dict,
                  storage: str) -> None:
    """summary.json and REPORT.md from what is stored (any part of the run)."""
    import torch

    import effnet
    from effnet.bench.harness import machine_info
    from effnet.io_utils import atomic_write_json, atomic_write_text
    from effnet.nas.compare import compare_searches
    from effnet.nas.reward import reward
    from effnet.nas.search import NasConfig
    from effnet.nas.space import describe
    from effnet.study.stats import compare

    seeds = eval_seeds(args.eval_seeds)
    means = per_seed_means(results, done, seeds)
    acc = {k: [done[(k, e)]["val_top1"] for e in seeds] for k in models
           if all((k, e) in done for e in seeds)}
    found = found_key(results)
    comparisons: dict = {}
    for arm in means:
        if arm != "random" and "random" in means and len(means[arm]) >= 2 \
                and len(means["random"]) >= 2:
            comparisons[f"{arm} - random (picks, per search seed)"] = compare_searches(
                list(means[arm].values()), list(means["random"].values()))
    rand = [k for k in acc if k.startswith(SAME_MACS)]
    if found in acc and "b0" in acc:
        comparisons["found - B0"] = compare(acc[found], acc["b0"])
    if found in acc and rand:
        med = [statistics.median(acc[k][i] for k in rand) for i in range(len(seeds))]
        comparisons["found - median random spec of its MACs (per seed)"] = compare(acc[found],
                                                                                   med)
    if "b0" in models:  # the reward, T = B0's proxy MACs as in `effnet nas` (added after the run)
        def rew(key: str, acc: float) -> float:
            return reward(acc, models[key][1], models["b0"][1])

        rmeans = per_seed_means(results, done, seeds, rew)
        for arm in rmeans:
            if arm != "random" and len(rmeans[arm]) >= 2 and len(rmeans.get("random", {})) >= 2:
                comparisons[f"{arm} - random on the reward (picks, per search seed)"] = \
                    compare_searches(list(rmeans[arm].values()),
                                     list(rmeans["random"].values()))
        if found in acc and "b0" in acc:
            comparisons["found - B0 on the reward"] = compare(
                [rew(found, a) for a in acc[found]], [rew("b0", a) for a in acc["b0"]])
    cfg = NasConfig()
    taus = {arm: _taus(results, arm) for arm in results}
    spreads = _spreads(results, models, done, seeds)
    pieces = [json.loads(x) for x in (out / "pieces.jsonl").read_text().splitlines()] \
        if (out / "pieces.jsonl").exists() else []
    summary = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_info(),
        "python": platform.python_version(), "torch": torch.__version__,
        "effnet": effnet.__version__, "preset": preset.__dict__, "storage": storage,
        "rungs": cfg.rungs(), "evals": cfg.evals, "eta": cfg.eta,
        "recipe": cfg.proxy.recipe.as_dict(), "eval_seeds": seeds, "found": found,
        "picks": {arm: {s: {"trial": res.best["trial"], "macs": res.best["macs"],
                            "pick": res.pick, "spec": describe_spec(res.best["spec"], describe)}
                        for s, res in by_seed.items()} for arm, by_seed in results.items()},
        "eval_means": means, "eval": {k: acc[k] for k in acc},
        "comparisons": {k: c.as_dict() for k, c in comparisons.items()},
        "taus": taus, "spread": spreads, "costs": _costs(results),
        "pieces": pieces, "wall_s": sum(p["wall_s"] for p in pieces)}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "REPORT.md", report_md(summary, models, comparisons))
    print((out / "REPORT.md").read_text())


def describe_spec(spec: dict, describe) -> str:
    from effnet.spec import spec_from_dict

    return describe(spec_from_dict(spec))


def report_md(s: dict, models: dict, comparisons: dict) -> str:
    """REPORT.md: the comparisons first, then how noisy and how early-readable the proxy is."""
    m = s["machine"]
    lines = ["# Baseline search against random search at equal trainings (issue 19)", "",
             f"- date {s['date']}; CPU {m['cpu']} ({m['aten_cpu_capability']}, oneDNN "
             f"{m['onednn_isa']}); Python {s['python']}, torch {s['torch']}, effnet "
             f"{s['effnet']}; wall time {s['wall_s'] / 3600:.2f} h over {len(s['pieces'])} "
             "piece(s) (`pieces.jsonl`)",
             f"- preset `{s['preset']['name']}`: a budget of {s['preset']['budget']:g} "
             f"trainings per search, the top {s['preset']['top_k']} retrained with "
             f"{s['preset']['pick_seeds']} new seeds, pick by the mean; successive halving at "
             f"evaluations {s['rungs']} of {s['evals']} (eta {s['eta']})",
             "- arms: " + "; ".join(f"`{a}` = {ARMS[a][0]}"
                                     + (" + successive halving" if ARMS[a][1] else
                                        ", every trial to the end") for a in s["picks"]),
             f"- evaluation: every pick, B0 and random specs retrained with seeds "
             f"{s['eval_seeds']} (no search or pick used them); the found baseline is "
             f"`{s['found']}`, the search arm's pick with the best pick-phase mean reward", "",
             "## Comparisons (validation top-1 unless said, points; Welch 95% interval)", "",
             "Primary, named before the run: the search's picks against random search's, "
             "each search seed one value (the mean of its pick's evaluation seeds). The reward "
             "ACC x (MACs / T)^-0.07 (T: B0's proxy MACs), the search's objective, was added "
             "after the run.", ""]
    lines += [f"- {name}: {_pts(c)}" for name, c in comparisons.items()] or ["- (not run yet)"]
    lines += ["", "| arm | search seed | pick (trial) | MACs (M) | pick-phase mean % | "
              "evaluation mean % | trials | search trainings | pick trainings |",
              "|---|---|---|---|---|---|---|---|---|"]
    for arm, by_seed in s["picks"].items():
        for seed, p in by_seed.items():
            ev = s["eval_means"].get(arm, {}).get(seed)
            c = s["costs"][arm][seed]
            lines.append(f"| {arm} | {seed} | {p['trial']} | {p['macs'] / 1e6:.3f} | "
                         f"{100 * p['pick']['mean_accuracy']:.2f} | "
                         f"{'-' if ev is None else f'{100 * ev:.2f}'} | {c['trials']} | "
                         f"{c['search']:.1f} | {c['pick']:.0f} |")
    lines += ["", "## Early against final scores (Kendall's tau over trials trained to the end)",
              ""]
    for arm, t in s["taus"].items():
        cells = ", ".join(f"eval {i + 1}{' (rung)' if i + 1 in s['rungs'] else ''}: "
                          + ("-" if v is None else f"{v:+.2f}") for i, v in enumerate(t["taus"]))
        lines.append(f"- `{arm}` ({t['trials']} trials): {cells}")
    lines += ["", "## Noise per trial: seed SD against the SD between architectures (points)", ""]
    for name, sp in s["spread"].items():
        if sp["seed_sd"] is None:
            lines.append(f"- {name}: not enough runs yet")
            continue
        lines.append(f"- {name} ({sp['architectures']} architectures): seed SD "
                     f"{100 * sp['seed_sd']:.2f}, SD of the means {100 * sp['between_sd']:.2f}, "
                     f"between architectures once the seeds' share is removed "
                     f"{100 * sp['between_sd_true']:.2f}")
    lines += ["", "## Every retrained model (evaluation seeds)", "",
              "| model | MACs (M) | mean % | per seed |", "|---|---|---|---|"]
    for k, accs in s["eval"].items():
        lines.append(f"| {k} | {models[k][1] / 1e6:.3f} | {100 * statistics.fmean(accs):.2f} | "
                     + ", ".join(f"{100 * a:.2f}" for a in accs) + " |")
    return "\n".join(lines) + "\n"
