"""report.md: the study's results in plain words, computed from results.json's payload."""

from __future__ import annotations

from .presets import PAPER_TABLE3, PAPER_TABLE7, STRATEGIES, Preset

WORDS = {"win": "wins", "loss": "loses", "tie": "ties (not significant)"}


def _pct(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}"


def verdict_counts(verdicts: list[dict]) -> dict[str, int]:
    """How many of `verdicts` are wins, ties and losses."""
    return {k: sum(v["verdict"] == k for v in verdicts) for k in ("win", "tie", "loss")}


def _gap(v: dict) -> str:
    """The MAC gap of a comparison in words, when the two models are not matched."""
    more = "more" if v["mac_gap"] > 0 else "fewer"
    return "" if v["macs_matched"] else \
        f" (compound has {abs(100 * v['mac_gap']):.1f}% {more} MACs)"


def verdict_line(v: dict) -> str:
    """One verdict in words: compound against the best single dimension, with its interval."""
    gap = _gap(v)
    return (f"{v['base']}, {v['budget']} budget, ~{v['target']:g}x MACs: compound "
            f"**{WORDS[v['verdict']]}** against {v['best_single']} — "
            f"{_pct(v['compound_top1'])}% vs {_pct(v['best_single_top1'])}%, difference "
            f"{100 * v['diff']:+.2f} points, 95% CI [{100 * v['ci_low']:+.2f}, "
            f"{100 * v['ci_high']:+.2f}]{gap}.")


def headline(verdicts: list[dict]) -> str:
    """The verdicts counted, in one sentence."""
    if not verdicts:
        return "No comparison could be made (no finished results)."
    n = len(verdicts)
    counts = verdict_counts(verdicts)
    return (f"Compound scaling won {counts['win']}, tied {counts['tie']} and lost "
            f"{counts['loss']} of {n} comparison(s) with the best single dimension at the same "
            "measured MACs (95% Welch intervals over seeds).")


def primary_line(v: dict) -> str:
    """One primary comparison in words: compound against one single dimension, Holm-corrected."""
    gap = _gap(v)
    return (f"{v['base']}, ~{v['target']:g}x MACs: compound **{WORDS[v['verdict']]}** against "
            f"{v['single']} — {_pct(v['compound_top1'])}% vs {_pct(v['single_top1'])}%, "
            f"difference {100 * v['diff']:+.2f} points, {100 * v['level']:.1f}% CI "
            f"[{100 * v['ci_low']:+.2f}, {100 * v['ci_high']:+.2f}], Holm-adjusted "
            f"p = {v['p']:.3g}{gap}.")


def primary_lines(primary: list[dict], budget: str) -> list[str]:
    """The primary family of one budget: a count, then one line per comparison."""
    fam = [v for v in primary if v["budget"] == budget]
    if not fam:
        return []
    counts = verdict_counts(fam)
    return [f"**Primary comparisons, {budget} budget** (named before the run: compound against "
            f"each single dimension at equal measured MACs; Holm's correction over the "
            f"{len(fam)} comparisons): compound won {counts['win']}, tied {counts['tie']} and "
            f"lost {counts['loss']}.", ""] + [f"- {primary_line(v)}" for v in fam] + [""]


def _ci(ci: list[float] | tuple[float, float] | None) -> str:
    return "" if not ci else f" (seed-bootstrap 95% interval [{ci[0]:.2f}, {ci[1]:.2f}])"


def _table(rows: list[dict], paper: dict | None) -> list[str]:
    head = ["model", "d", "w", "px", "params (k)", "MACs (M)", "x base", "val top-1 %",
            "last-quarter gain", "seeds"]
    if paper:
        head.append("paper top-1 % (B MACs)")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = r["scaled"]
        name = "baseline" if r["strategy"] == "baseline" else f"{r['strategy']} {r['target']:g}x"
        cells = [name, f"{s['depth_mult']:.3g}", f"{s['width_mult']:.3g}",
                 f"{s['resolution']}" + ("*" if r["above_native"] else ""),
                 f"{r['params'] / 1e3:.0f}", f"{r['macs'] / 1e6:.2f}", f"{r['mac_ratio']:.2f}",
                 f"{_pct(r['val_top1_mean'])} ± {_pct(r['val_top1_std'])}",
                 f"{100 * r['last_quarter_gain']:+.2f}"
                 + (" still learning" if r["still_learning"] else ""), str(r["seeds"])]
        if paper:
            ref = paper.get(r["strategy"])
            cells.append(f"{ref[0]} ({ref[1]})" if ref else "-")
        out.append("| " + " | ".join(cells) + " |")
    return out


def _compound_lines(models: list[dict]) -> list[str]:
    out = []
    for m in models:
        d = m.get("compound_distance")
        if d and m["budget"] == models[-1]["budget"]:
            out.append(f"- {m['key']}: budget asks for phi = {d['phi_nominal']:.2f}, matched "
                       f"phi = {d['phi_matched']:.2f}; (d, w, r) off (alpha^phi, beta^phi, "
                       f"gamma^phi) by {100 * d['depth']:+.1f}%, {100 * d['width']:+.1f}%, "
                       f"{100 * d['resolution']:+.1f}%.")
    return out


def _reference_lines(payload: dict, ref: dict | None) -> list[str]:
    if payload["preset"]["name"] == "standard" or ref is None:
        return []
    out = ["### The reference (`standard` preset, committed)", ""]
    fam = payload.get("reference_primary") or []
    for budget in reversed(list(dict.fromkeys(v["budget"] for v in fam))):
        vs = [v for v in fam if v["budget"] == budget]
        counts = verdict_counts(vs)
        out += [f"Its primary comparisons at the `{budget}` budget (compound against each "
                f"single dimension, Holm-corrected over {len(vs)}): compound won "
                f"{counts['win']}, tied {counts['tie']} and lost {counts['loss']}.", ""]
    out += ["After the fact, against the best single dimension (uncorrected): "
            + headline(ref["verdicts"]), ""]
    out += [f"- {verdict_line(v)}" for v in ref["verdicts"]]
    tau = payload["kendall_tau"]
    out += ["", f"This run ranks the B0 models with Kendall's tau = "
            f"{'-' if tau is None else f'{tau:.2f}'}{_ci(payload.get('kendall_tau_ci'))} "
            "against the reference's ranking at its longest budget (1 = same order; the target "
            "for the quick proxy is >= 0.7)."]
    rep = payload.get("replication")
    if rep and rep["kendall_tau"] is not None:
        kind = ("a replication: this run's seeds are not the reference's" if
                rep["disjoint_seeds"] else "not a replication: this run shares seeds with the "
                "reference, and CPU training is deterministic")
        out += ["", f"Against the reference's own `{rep['budget']}` budget, the same recipe: "
                f"tau = {rep['kendall_tau']:.2f}{_ci(rep['ci'])} over {rep['models']} models, "
                f"{kind} (seeds {rep['seeds'][0]}-{rep['seeds'][-1]} against "
                f"{rep['reference_seeds'][0]}-{rep['reference_seeds'][-1]})."]
    return out + [""]


def report_markdown(payload: dict, preset: Preset, ref: dict | None) -> str:
    """The whole report.md text."""
    models, figs = payload["models"], payload["plots"]
    b0 = preset.bases[0].name
    budgets = [b.name for b in preset.budgets]
    md = [f"# Compound scaling study — preset `{preset.name}`", "",
          "## Verdict in plain words", ""]
    md += _reference_lines(payload, ref)
    if ref and preset.name != "standard":
        md += [f"### This run (`{preset.name}`)", ""]
    primary = payload.get("primary", [])
    for budget in reversed(budgets):
        md += primary_lines(primary, budget)
    md += ["**After the fact**, against the best single dimension of each target (the one with "
           "the highest mean, picked after the run, uncorrected): "
           + headline(payload["verdicts"]), ""]
    md += [f"- {verdict_line(v)}" for v in payload["verdicts"]]
    if payload["kendall_tau_short_long"] is not None:
        t = payload["kendall_tau_short_long"]
        md += ["", f"Ranking of the B0 models, {budgets[0]} against {budgets[-1]} budget: "
               f"Kendall's tau = {t:.2f}. Where the verdicts differ between budgets, the "
               "training regime decides which scaling looks best (Bello et al. 2021, Sec. 6)."]
    sl = payload["still_learning"]
    md += ["", f"{sl} model-budget pair(s) still learning (validation top-1 rose by more than "
           "0.5 point over the last quarter of the run, mean over seeds)." if sl else
           "\nEvery model has flattened: none rose by more than 0.5 point over the last quarter "
           "of its run (mean over seeds).", ""]
    md += ["## How it was measured", "",
           f"- **Data**: {preset.dataset}, {payload['native_resolution']} px originals. The base "
           f"sees {preset.image_size} px, downsampled with antialiasing, so resolution scaling "
           f"adds real detail up to {payload['native_resolution']} px; sizes above it (marked *) "
           "add pixels, not detail. Scores are top-1 on a validation split held out of the "
           "training set; the test set is never used.",
           "- **Proxy architecture**: each base is its paper baseline scaled down in width and "
           "depth (depth off the ceil's rounding edges) with a stride-1 stem, as CIFAR variants "
           "of ImageNet networks do, so small inputs keep a spatial map in the last stages.",
           "- **One recipe for every model**, tuned once on the B0 base and applied unchanged: "
           "AdamW, one-cycle (warm-up then cosine to zero), label smoothing 0.1, random flips, "
           "residual branches and classifier initialised at zero (Goyal et al. 2017), so deep "
           "models are not handicapped by the initialisation; what is evaluated is a moving "
           "average of the weights (as in the paper's recipe) whose time constant is a fixed "
           "share of the run, so a curve flattens when the model stops learning, not only "
           "when the learning rate reaches zero. Budgets: "
           + "; ".join(f"`{b.name}` {b.recipe.epochs} epoch(s) over "
                       f"{b.recipe.train_size or 'all'} training images, batch "
                       f"{b.recipe.batch_size}, lr {b.recipe.lr:g}, "
                       + (f"weight average over {100 * b.recipe.ema_fraction:g}% of the run"
                          if b.recipe.ema_fraction else "raw weights evaluated")
                       for b in preset.budgets)
           + ".",
           "- **Equal cost is measured**: MACs counted exactly for each built network "
           "(effnet.cost, equal to torch.utils.flop_counter on the module); compound scaling "
           "is matched to each target first, then each single dimension to the compound "
           "model's measured MACs.",
           f"- **Verdicts**: {preset.seeds} seeds per model (seeds {preset.seed_list[0]}-"
           f"{preset.seed_list[-1]}); the primary comparisons, named before the run, are compound "
           "against each single dimension at each target, with Welch intervals Holm-corrected "
           "over each budget's family; compound against the best single dimension (the one "
           "with the highest mean, which favours the single dimensions) is reported after the "
           "fact with a plain 95% Welch interval; win or loss only when the interval excludes "
           "zero.", ""]
    md += ["### Compound models against Eq. 3", ""] + _compound_lines(models) + [""]
    for base in preset.bases:
        key = f"curves_{base.name}"
        if key in figs:
            md += [f"## Learning curves — {base.name}", "", f"![curves]({figs[key]})", ""]
    if "fig3" in figs:
        md += ["## Fig. 3 and Fig. 8 — the B0 base, " + budgets[-1] + " budget", "",
               f"![Fig. 3]({figs['fig3']})", "", f"![Fig. 8]({figs['fig8']})", ""]
    for budget in budgets:
        for base in preset.bases:
            rows = [m for m in models if m["base"] == base.name and m["budget"] == budget]
            if not rows:
                continue
            rows.sort(key=lambda r: (r["target"], STRATEGIES.index(r["strategy"])
                                     if r["strategy"] in STRATEGIES else -1))
            paper = PAPER_TABLE7 if base.name == b0 else PAPER_TABLE3.get(base.name)
            md += [f"### {base.name}, {budget} budget", ""] + _table(rows, paper) + [""]
    md += ["The paper's column is ImageNet (Tables 3 and 7), for the shape of the result only.",
           ""]
    if "table3" in figs:
        md += ["## Table 3 — three bases", "", f"![Table 3]({figs['table3']})", ""]
    if "fig7" in figs:
        md += ["## Fig. 7 — activation maps", "", f"![Fig. 7]({figs['fig7']})", "",
               "Grad-CAM of the true class (the paper uses CAM on the last map, 1-2 pixels "
               "wide here), the first seed's weights, same validation images; 'wrong' marks a "
               "miss.", ""]
    env = payload["environment"]
    md += ["## Time and machine", "",
           f"Wall time {payload['wall_s'] / 60:.1f} min; {env['workers']} worker process(es) "
           f"with one thread each on {env['cpu_cores']} CPU core(s); torch {env['torch']}, "
           f"Python {env['python']}, CUDA {'yes' if env['cuda'] else 'no'}. Reproduce: "
           f"`effnet study --preset {preset.name} --output DIR` (a rerun into the same folder "
           "resumes). Every number above is in `results.json`.", ""]
    return "\n".join(md)
