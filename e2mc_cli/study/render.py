"""A study's document rendered for people: ``study.md`` (the tables, as text) and ``study.png``
(grouped bars with standard-error bars). Pure: text is returned, the figure is written where asked."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from e2mc_cli.evaluate.stats import format_mean_se
from e2mc_cli.io import atomic_path
from e2mc_cli.study.config import CONTROL


def fmt_mean_se(cell: dict) -> str:
    """``72.00 ± 1.15`` (top-1 mean ± SE over seeds), ``72.00`` without an SE, ``–`` when empty."""
    return format_mean_se(cell["mean"] if cell.get("n") else None, cell.get("se"))


def fmt_p(cell: dict) -> str:
    """The pooled McNemar p-value against the control (``<1e-4`` below that), ``–`` when none."""
    test = cell.get("mcnemar_vs_continued")
    if not test or not test.get("pooled"):
        return "–"
    p = test["pooled"]["p_exact"]
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def render_markdown(study: dict) -> str:
    """``study.md``: the top-1 table (mean ± SE over seeds) and the McNemar p-values."""
    cols = study["columns"]
    cfg = study["config"]
    first = cols[0]
    evaluated_on = (
        f"{cfg['holdout']} validation images held out from the training split (not the test split)"
        if cfg.get("holdout")
        else "the test split"
    )
    lines = [
        f"# Study: {cfg['base']} on {study.get('data', '')}",
        "",
        f"Top-1 (%) on {evaluated_on}, mean ± standard error over {cfg['seeds']} seed(s); linear "
        "probe with cached features, kNN with k = 20, T = 0.07. `p` is McNemar's exact p-value of "
        f"the criterion against `continued` on the {first} column, predictions of all seeds pooled.",
        "",
        "| model | " + " | ".join(cols) + f" | p vs continued ({first}) |",
        "|---|" + "---:|" * len(cols) + "---:|",
    ]
    for row in study["rows"]:
        name = row["name"] if row["name"] == "base" else f"+ {row['name']}"
        if row["name"] == CONTROL:
            name = "continued"
        p = "" if row["name"] in ("base", CONTROL) else fmt_p(row[first])
        lines.append(f"| {name} | " + " | ".join(fmt_mean_se(row[c]) for c in cols) + f" | {p} |")
    lines += [
        "",
        "McNemar's exact p-value against `continued`, every column (pooled over seeds):",
        "",
        "| criterion | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for row in study["rows"]:
        if row["name"] in ("base", CONTROL):
            continue
        lines.append(f"| {row['name']} | " + " | ".join(fmt_p(row[c]) for c in cols) + " |")
    reasons: dict[str, list[str]] = {}
    for cell, why in (study.get("cannot_run") or {}).items():
        reasons.setdefault(why, []).append(cell)
    if reasons:
        lines += ["", "Cells that cannot run with this base:", ""]
        lines += [f"- {', '.join(cells)}: {why}" for why, cells in reasons.items()]
    expected = sum(row["name"] != "base" for row in study["rows"]) * cfg["seeds"]
    done = sum(len(row.get("seeds_done", [])) for row in study["rows"] if row["name"] != "base")
    if done + len(study.get("cannot_run") or {}) < expected:
        lines += ["", "_Incomplete: some cells are not finished yet (see study.json, `seeds_done`)._"]
    lines += ["", f"Made by `{study.get('command', 'sslboost study')}`."]
    return "\n".join(lines) + "\n"


def render_png(study: dict, path: str | Path) -> Path:
    """``study.png``: one group of bars per column, one bar per row, standard-error bars."""
    import matplotlib  # loaded, and switched to Agg, only when a figure is drawn

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    cols, rows = study["columns"], study["rows"]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(cols) + 0.3 * len(rows)), 4.2))
    x = np.arange(len(cols))
    lo = min((r[c]["mean"] for r in rows for c in cols if r[c].get("n")), default=0.0)
    for i, row in enumerate(rows):
        means = [row[c]["mean"] if row[c].get("n") else np.nan for c in cols]
        errs = [row[c]["se"] or 0.0 if row[c].get("n") else 0.0 for c in cols]
        ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=errs, capsize=2, label=row["name"])
    ax.set_xticks(x, cols)
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(bottom=max(0.0, math.floor(lo) - 5) if math.isfinite(lo) else 0.0)
    ax.set_title(f"{study['config']['base']}: continued pre-training with each criterion")
    ax.legend(fontsize="small", ncols=min(len(rows), 5), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
