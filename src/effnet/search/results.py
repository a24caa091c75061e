"""The grid search's results: the ranked table, the pruning saving, the files, the best point."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EffnetError
from ..proxy.queue import finished_jobs, storage_url, study_identities
from ..train.checkpoint import atomic_write_text
from .config import KIND, SearchConfig
from .grid import GridPoint

if TYPE_CHECKING:
    from .run import SearchResult

ROW_KEYS = ("resolution", "width_mult", "depth_mult", "params", "macs", "base_macs",
            "mac_ratio", "mac_distance", "val_top1_seeds", "val_top1_std", "val_top1_curves",
            "seconds", "epochs_done", "epochs_budget", "last_val_top1")


def _row(point: GridPoint, result: dict | None, state: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {**point.as_dict(), "label": point.label}
    if result is None:
        row["status"] = {"running": "running", "waiting": "queued",
                         "failed": "failed"}.get(state or "", "todo")
        return row
    row.update({k: result[k] for k in ROW_KEYS if k in result})
    if result.get("pruned"):
        row["status"] = result.get("skipped", "pruned")
    else:
        row["status"] = "complete"
        row["val_top1"] = result["val_top1"]
    return row


def ranked_rows(points: list[GridPoint], results: dict[str, dict],
                states: dict[str, str]) -> list[dict]:
    """One row per grid point: trained ones ranked by mean validation top-1, then the rest.

    `results` and `states` are the queue's (:func:`~effnet.proxy.queue.run_jobs`,
    :func:`~effnet.proxy.queue.job_states`), keyed by grid-point label.
    """
    rows = [_row(p, results.get(p.label), states.get(p.label)) for p in points]
    rows.sort(key=lambda r: (r["status"] != "complete", -(r.get("val_top1") or 0.0),
                             r["alpha"], r["beta"], r["gamma"]))
    for i, r in enumerate(rows):
        r["rank"] = i + 1 if r["status"] == "complete" else None
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _cells(r: dict) -> list[str]:
    seeds = r.get("val_top1_seeds") or []
    score = (_pct(r.get("val_top1")) if r["status"] != "pruned"
             else f"({_pct(r.get('last_val_top1'))})")
    return [str(r["rank"] or "-"), f"{r['alpha']:.2f}", f"{r['beta']:.2f}",
            f"{r['gamma']:.2f}", f"{r['constraint']:.4f}", str(r.get("resolution", "-")),
            f"{r['params'] / 1e6:.3f}" if "params" in r else "-",
            f"{r['macs'] / 1e6:.2f}" if "macs" in r else "-",
            f"{r['mac_ratio']:.2f}" if "mac_ratio" in r else "-",
            f"{100 * r['mac_distance']:+.1f}%" if "mac_distance" in r else "-",
            score, _pct(r.get("val_top1_std")), str(len(seeds)),
            f"{r['seconds']:.1f}" if "seconds" in r else "-", r["status"]]


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The ranked table as text (or a Markdown table)."""
    cols = ["rank", "alpha", "beta", "gamma", "a*b^2*g^2", "res", "params(M)", "MACs(M)",
            "x base", "vs target", "val top-1 %", "std", "seeds", "time(s)", "status"]
    lines = [_cells(r) for r in rows]
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(v) + " |" for v in lines]
        return "\n".join(out)
    widths = [max(len(c), *(len(v[i]) for v in lines)) if lines else len(c)
              for i, c in enumerate(cols)]
    out = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    out.append("-" * len(out[0]))
    out += ["  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True)) for vals in lines]
    return "\n".join(out)


def pruning_saving(rows: list[dict]) -> dict[str, float] | None:
    """Time pruning saved, from each pruned candidate's own measured seconds per epoch.

    A pruned candidate that trained `e` of its `E` epochs in `s` seconds would
    have needed about s * E / e; the saving is the sum of s * (E / e - 1).
    """
    pruned = [r for r in rows if r["status"] == "pruned" and r.get("epochs_done")]
    if not pruned:
        return None
    spent = sum(r.get("seconds", 0.0) for r in rows if "seconds" in r)
    saved = sum(r["seconds"] * (r["epochs_budget"] / r["epochs_done"] - 1) for r in pruned)
    return {"pruned": len(pruned), "seconds_spent": spent, "seconds_saved": saved,
            "fraction_saved": saved / (spent + saved) if spent + saved > 0 else 0.0}


def _markdown(result: SearchResult, cfg: SearchConfig, saving: dict | None) -> str:
    r = cfg.recipe
    md = [f"# Grid search `{result.study_name}`", "",
          f"Base: {cfg.base} (width {cfg.base_width:g}, depth {cfg.base_depth:g}) at "
          f"{cfg.image_size} px on {cfg.dataset}: {result.base_cost.params / 1e6:.3f} M params, "
          f"{result.base_cost.macs / 1e6:.2f} M MACs (measured). Target: {cfg.target:g}x the "
          f"base's MACs; 'vs target' is each candidate's measured distance from it.", "",
          f"Proxy training per candidate and seed (effnet.proxy.trainer.train_proxy, the "
          f"study's trainer): {r.epochs} epoch(s) over {r.train_size or 'all'} training images, "
          f"AdamW one-cycle, lr {r.lr:g}, batch {r.batch_size}, flips {'on' if r.flip else 'off'};"
          f" score: mean validation top-1 over {cfg.seeds} seed(s) (validation held out of the "
          "training set). A short run is a proxy: it ranks candidates by how fast they learn "
          "as well as by how well they end up. A pruned candidate shows, in brackets, its last "
          "validation score before it was stopped.", ""]
    if result.native is not None:
        high = [row["resolution"] for row in result.rows
                if row.get("resolution", 0) > result.native]
        md += [f"The data's own resolution is {result.native} px: {len(high)} candidate(s) above "
               "it see added pixels, not added detail.", ""]
    md += [format_table(result.rows, True), ""]
    if saving:
        total = saving["seconds_spent"] + saving["seconds_saved"]
        md.append(f"Pruning stopped {saving['pruned']} candidates early and saved about "
                  f"{saving['seconds_saved']:.0f} s of {total:.0f} s "
                  f"({100 * saving['fraction_saved']:.0f}%), from their measured time per epoch.")
    return "\n".join(md) + "\n"


def write_results(result: SearchResult, cfg: SearchConfig, out_dir: str | Path
                  ) -> tuple[Path, Path]:
    """Save the ranked table as Markdown and JSON (each written atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"search-{result.study_name}"
    saving = pruning_saving(result.rows)
    payload = {"study": result.study_name, "storage": result.storage, "config": cfg.identity(),
               "base_params": result.base_cost.params, "base_macs": result.base_cost.macs,
               "target_macs": cfg.target * result.base_cost.macs, "native": result.native,
               "pruning": saving, "rows": result.rows}
    md_path, json_path = out / f"{stem}.md", out / f"{stem}.json"
    atomic_write_text(md_path, _markdown(result, cfg, saving))
    atomic_write_text(json_path, json.dumps(payload, indent=1) + "\n")
    return md_path, json_path


# ---------------------------------------------------------------- step 2: the result
def search_studies(storage: str) -> list[str]:
    """Names of the grid-search studies in `storage`."""
    return [name for name, ident in study_identities(storage).items()
            if isinstance(ident, dict) and ident.get("kind") == KIND]


def best_coefficients(storage: str, study_name: str | None = None) -> tuple[Any, dict]:
    """The best (alpha, beta, gamma) of a finished search, as a CompoundScaling and its row.

    `storage` is a URL or an SQLite file path; ``PATH#STUDY`` names the study
    when the storage holds several.
    """
    from ..scaling import CompoundScaling

    if study_name is None and "#" in storage:
        storage, study_name = storage.rsplit("#", 1)
    names = search_studies(storage)
    if study_name is None:
        if not names:
            raise EffnetError(f"{storage} holds no grid search: run `effnet search --storage "
                              f"{storage_url(storage)}` first")
        if len(names) > 1:
            raise EffnetError(f"{storage} holds several searches ({', '.join(names)}): pick one "
                              f"with {storage}#NAME")
        study_name = names[0]
    elif study_name not in names:
        raise EffnetError(f"no grid search {study_name!r} in {storage} (found: "
                          f"{', '.join(names) or 'none'})")
    done = [(k, r) for k, r in finished_jobs(storage, study_name).items()
            if not r.get("pruned") and math.isfinite(r.get("val_top1", math.nan))]
    if not done:
        raise EffnetError(f"search {study_name!r} has no finished candidate yet: run "
                          "`effnet search` with the same settings to finish it")
    # ties: the cheaper candidate (fewer MACs), then the label, so the choice is stable
    _, r = max(done, key=lambda kr: (kr[1]["val_top1"], -kr[1].get("macs", 0), kr[0]))
    row = {"alpha": r["alpha"], "beta": r["beta"], "gamma": r["gamma"],
           "val_top1": r["val_top1"], "val_top1_std": r.get("val_top1_std"),
           "study": study_name}
    return CompoundScaling(r["alpha"], r["beta"], r["gamma"]), row
