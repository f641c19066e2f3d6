"""A study's document rendered for people: ``study.md`` (the tables, as text) and ``study.png``.
Pure: text is returned, the figure is written where asked.

``study.png`` has two panels. Left, the top-1 of every row and column as bars from 0 with their
standard error over seeds (``n`` named); a cell that could not run (or has not run yet) is a
hatched slot that says so. Right, each row's difference to ``continued`` in points, paired by
seed (the same label subset), with the standard error of the paired differences, and stars for
McNemar's exact test against ``continued`` (predictions of all seeds pooled): the differences a
study is about, which bars from 0 cannot show and a truncated axis would exaggerate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2mc_cli.diagnostics.plots import figure, save_png
from e2mc_cli.evaluate.stats import format_mean_se, mean_se
from e2mc_cli.study.config import CONTROL
from e2mc_cli.study.summary import seed_differences

SIGNIFICANCE = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
DELTA_MIN_SPAN = 1.0  # the difference axis shows at least ±1 point, so noise does not look like an effect
SIGNIFICANCE_NOTE = "* p < 0.05, ** p < 0.01, *** p < 0.001: McNemar's exact test against continued"


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


def evaluated_on_text(cfg: dict) -> str:
    """What the study's figures were measured on: the test split, or the held-out images."""
    if cfg.get("holdout"):
        return f"{cfg['holdout']} validation images held out from the training split (not the test split)"
    return "the test split"


def _probe_text(cfg: dict) -> str:
    if cfg.get("probe_mode", "cached") == "standard":
        return "augmented crops every epoch (the paper's protocol)"
    return "cached features"


def intro_text(study: dict) -> str:
    """What the tables hold: the split, the seeds, the probe, kNN and the McNemar test."""
    cfg, first = study["config"], study["columns"][0]
    return (
        f"Top-1 (%) on {evaluated_on_text(cfg)}, mean ± standard error over {cfg['seeds']} seed(s); linear "
        f"probe with {_probe_text(cfg)}, kNN with k = 20, T = 0.07. `p` is McNemar's exact p-value of "
        f"the criterion against `continued` on the {first} column, predictions of all seeds pooled."
    )


def table_lines(cols: list[str], rows: list[dict]) -> list[str]:
    """The top-1 table (mean ± SE, p against the control on the first column) and the table of
    McNemar p-values in every column."""
    first = cols[0]
    lines = [
        "| model | " + " | ".join(cols) + f" | p vs continued ({first}) |",
        "|---|" + "---:|" * len(cols) + "---:|",
    ]
    for row in rows:
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
    for row in rows:
        if row["name"] in ("base", CONTROL):
            continue
        lines.append(f"| {row['name']} | " + " | ".join(fmt_p(row[c]) for c in cols) + " |")
    return lines


def closing_lines(study: dict, incomplete: bool) -> list[str]:
    """The cells that cannot run, whether some are unfinished, and the command that made it."""
    lines: list[str] = []
    reasons: dict[str, list[str]] = {}
    for cell, why in (study.get("cannot_run") or {}).items():
        reasons.setdefault(why, []).append(cell)
    if reasons:
        lines += ["", "Cells that cannot run with this base:", ""]
        lines += [f"- {', '.join(cells)}: {why}" for why, cells in reasons.items()]
    if incomplete:
        lines += ["", "_Incomplete: some cells are not finished yet (see study.json, `seeds_done`)._"]
    return [*lines, "", f"Made by `{study.get('command', 'sslboost study')}`."]


def unfinished(study: dict, rows: list[dict]) -> bool:
    """Whether some cell of ``rows`` has neither finished nor been found unable to run."""
    expected = sum(row["name"] != "base" for row in rows) * study["config"]["seeds"]
    done = sum(len(row.get("seeds_done", [])) for row in rows if row["name"] != "base")
    return done + len(study.get("cannot_run") or {}) < expected


def render_markdown(study: dict) -> str:
    """``study.md``: the top-1 table (mean ± SE over seeds) and the McNemar p-values."""
    cfg = study["config"]
    lines = [f"# Study: {cfg['base']} on {study.get('data', '')}", "", intro_text(study), ""]
    lines += table_lines(study["columns"], study["rows"])
    lines += closing_lines(study, unfinished(study, study["rows"]))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Delta:
    """A row's difference to the control in one column, paired by seed: mean, SE (None for one
    pair) and the number of pairs."""

    mean: float
    se: float | None
    n: int


def paired_delta(row: dict, control: dict, col: str) -> Delta | None:
    """``row − control`` in ``col`` over the seeds both have; None when they share none."""
    diffs = [d for _, d in seed_differences(row, control, col)]
    if not diffs:
        return None
    mean, se = mean_se(diffs)
    return Delta(mean, se, len(diffs))


def stars(p: float | None) -> str:
    """``***``, ``**``, ``*`` below p = 0.001, 0.01, 0.05; empty otherwise (or without a test)."""
    if p is None:
        return ""
    return next((mark for limit, mark in SIGNIFICANCE if p < limit), "")


def cell_p(cell: dict) -> float | None:
    """The pooled McNemar exact p-value of a cell against the control, if it was tested."""
    test = cell.get("mcnemar_vs_continued") or {}
    return (test.get("pooled") or {}).get("p_exact")


def cell_status(study: dict, row: dict, col: str) -> str:
    """``done``, ``cannot run`` (the criterion cannot run with this base) or ``not run yet``."""
    if row[col].get("n"):
        return "done"
    cannot = study.get("cannot_run") or {}
    return "cannot run" if any(k.startswith(f"{row['name']}-seed") for k in cannot) else "not run yet"


def seeds_text(study: dict) -> str:
    """``n = 3`` (seeds per cell), ``n = 1–3`` when cells differ."""
    ns = sorted({row[c]["n"] for row in study["rows"] for c in study["columns"] if row[c].get("n")})
    if not ns:
        return "n = 0"
    return f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]}"


def _slots(n_rows: int, n_cols: int) -> tuple[np.ndarray, float]:
    """x position of every (row, column) bar, and the bar width."""
    width = 0.8 / max(n_rows, 1)
    x = np.arange(n_cols)
    return np.array([x - 0.4 + width * (i + 0.5) for i in range(n_rows)]), width


def _absolute_panel(ax, study: dict) -> None:
    cols, rows = study["columns"], study["rows"]
    xs, width = _slots(len(rows), len(cols))
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            status = cell_status(study, row, col)
            if status != "done":
                ax.bar(xs[i, j], 100, width, fill=False, hatch="///", edgecolor="0.75", lw=0)
                ax.text(xs[i, j], 2, status, rotation=90, ha="center", va="bottom", fontsize=6, color="0.35")
                continue
            se = row[col].get("se")
            ax.bar(xs[i, j], row[col]["mean"], width, color=f"C{i}", yerr=se or 0.0, capsize=2)
    ax.set_xticks(np.arange(len(cols)), cols)
    ax.set_ylim(0, 100)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"top-1, mean ± standard error over seeds ({seeds_text(study)})", fontsize=9)


def _delta_panel(ax, study: dict, control: dict) -> None:
    cols, rows = study["columns"], study["rows"]
    others = [(i, row) for i, row in enumerate(rows) if row["name"] != CONTROL]
    xs, _ = _slots(len(others), len(cols))
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.annotate("continued", (1.0, 0.0), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                textcoords="offset points", ha="right", va="bottom", fontsize=7, color="0.3")  # fmt: skip
    for k, (i, row) in enumerate(others):
        for j, col in enumerate(cols):
            delta = paired_delta(row, control, col) if cell_status(study, row, col) == "done" else None
            if delta is None:
                ax.plot(xs[k, j], 0.0, marker="x", color="0.6", ms=5)
                continue
            top = delta.mean + (delta.se or 0.0)
            ax.errorbar(xs[k, j], delta.mean, yerr=delta.se or 0.0, fmt="o", color=f"C{i}", ms=4, capsize=2)
            mark = stars(cell_p(row[col]))
            if mark:
                ax.annotate(
                    mark, (xs[k, j], top), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8
                )
    ax.set_xticks(np.arange(len(cols)), cols)
    ax.set_ylabel("Δ top-1 vs continued (points)")
    ax.set_title("difference to continued, paired by seed (± standard error)", fontsize=9)
    ax.margins(y=0.15)
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, -DELTA_MIN_SPAN), max(high, DELTA_MIN_SPAN))


def _legend(fig, study: dict) -> None:
    from matplotlib.patches import Patch

    handles = []
    for i, row in enumerate(study["rows"]):
        states = {cell_status(study, row, c) for c in study["columns"]}
        label = row["name"] + ("" if "done" in states else f" ({states.pop()})")
        handles.append(Patch(color=f"C{i}", label=label))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=8)


def render_png(study: dict, path: str | Path) -> Path:
    """``study.png``: absolute top-1 (bars from 0) beside the paired difference to ``continued``
    (when the study has it), error bars and significance named on the figure."""
    cols, rows = study["columns"], study["rows"]
    control = next((r for r in rows if r["name"] == CONTROL), None)
    panels = 2 if control is not None else 1
    fig, axes = figure(1, panels, max(4.5, 1.3 * len(cols) + 0.25 * len(rows)), 4.6)
    _absolute_panel(axes[0, 0], study)
    if control is not None:
        _delta_panel(axes[0, 1], study, control)
    _legend(fig, study)
    cfg = study["config"]
    note = f"error bars: standard error over seeds ({seeds_text(study)})"
    if control is not None:
        note += f"; {SIGNIFICANCE_NOTE} (all seeds pooled)"
    title = f"{cfg['base']}: continued pre-training with each criterion; top-1 on {evaluated_on_text(cfg)}"
    fig.suptitle(f"{title}\n{note}", fontsize=9)
    return save_png(fig, path)
