"""A convergence curve rendered for people: ``curve.md`` (the table and the verdict) and
``curve.png`` (kNN and linear top-1 against epochs, on a log-2 axis so that each doubling is one
step). Pure: text is returned, the figure is written where asked."""

from __future__ import annotations

import textwrap
from pathlib import Path

from e2mc_cli.diagnostics.plots import figure, save_png

TITLE_WIDTH = 95  # characters per title line at 9 pt on the 7-inch figure


def _points(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _gain(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def wall_text(seconds: float | None) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h``; ``–`` when unknown."""
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def render_curve_markdown(doc: dict) -> str:
    """``curve.md``: per budget kNN and linear top-1, their gains over the previous doubling and the
    training time, then the plateau verdict and the command."""
    cfg, col = doc["config"], doc["linear_column"]
    lines = [
        f"# Convergence: {doc['recipe']} pre-trained from scratch on {cfg['data']}",
        "",
        f"Top-1 (%) on {doc['evaluated_on']}, seed {cfg['seed']}: kNN (k = 20, T = 0.07, all training "
        f"labels) and the linear probe on cached features with {col.split()[-1]} of the labels. Each "
        "budget is its own pre-training of that many epochs with the recipe's schedule, from the same "
        "initial weights. Gains are over the budget at half as many epochs.",
        "",
        f"| epochs | kNN | {col} | kNN gain | linear gain | train wall time |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in doc["points"]:
        if not p["done"]:
            lines.append(f"| {p['epochs']:g} | not run yet | | | | |")
            continue
        lines.append(
            f"| {p['epochs']:g} | {_points(p['knn'])} | {_points(p['linear'])} | {_gain(p['knn_gain'])} | "
            f"{_gain(p['linear_gain'])} | {wall_text(p['train_wall_time_s'])} |"
        )
    sources: dict[str, list[str]] = {}
    for p in doc["points"]:
        if p.get("from"):
            sources.setdefault(p["from"], []).append(f"{p['epochs']:g}")
    for source, budgets in sources.items():
        lines += ["", f"Budgets of {', '.join(budgets)} epochs: finished in `{source}` (`--earlier`)."]
    rule = f"kNN gains less than {doc['plateau_gain']:g} points over the last doubling of epochs"
    lines += ["", f"**Verdict** (the plateau: {rule}): {doc['verdict']['text']}."]
    if not doc["complete"]:
        lines += ["", "_Incomplete: some budgets are not finished yet; run the same command again._"]
    lines += ["", f"Made by `{doc.get('command', 'sslboost curve')}`."]
    return "\n".join(lines) + "\n"


def render_curve_png(doc: dict, path: str | Path) -> Path:
    """``curve.png``: kNN and linear top-1 against the epoch budget (log-2 axis), the verdict in
    the title."""
    done = [p for p in doc["points"] if p["done"]]
    fig, axes = figure(1, 1, 7.0, 4.4)
    ax = axes[0, 0]
    xs = [float(p["epochs"]) for p in done]
    ax.plot(xs, [p["knn"] for p in done], marker="o", ms=4, color="C0", label="kNN")
    ax.plot(xs, [p["linear"] for p in done], marker="s", ms=4, color="C1", label=doc["linear_column"])
    ax.set_xscale("log", base=2)
    budgets = [float(p["epochs"]) for p in doc["points"]]
    ax.set_xticks(budgets, [f"{e:g}" for e in budgets])
    ax.minorticks_off()
    ax.set_xlabel("pre-training epochs (each budget a full run)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.legend(fontsize=8)
    title = textwrap.fill(f"{doc['recipe']}: top-1 on {doc['evaluated_on']}", TITLE_WIDTH)
    fig.suptitle(f"{title}\n{textwrap.fill(doc['verdict']['text'], TITLE_WIDTH)}", fontsize=9)
    return save_png(fig, path)
