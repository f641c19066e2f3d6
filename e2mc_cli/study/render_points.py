"""A study over continuation lengths rendered for people: ``study.md`` and ``study.png``. Pure: text
is returned, the figure is written where asked.

``study.md`` has, per point, the two tables of a one-length study (:mod:`~e2mc_cli.study.render`),
then the sign of (criterion − continued) per seed at each point. ``study.png`` is the analogue of
Figure 4 of the E2MC paper (Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931),
in two panels. Left, the top-1 in the first column (the linear probe at the first label fraction)
against the epochs of continued pre-training, one line per criterion from the base (the point at
0 epochs) with a band of ± one standard error over seeds. Right, each criterion's difference to
``continued`` paired by seed, with the standard error of the paired differences as a band and
stars for McNemar's exact test against ``continued`` (all seeds pooled).
"""

from __future__ import annotations

from pathlib import Path

from e2mc_cli.diagnostics.plots import figure, save_png
from e2mc_cli.study.config import CONTROL
from e2mc_cli.study.render import (
    DELTA_MIN_SPAN,
    SIGNIFICANCE_NOTE,
    cell_p,
    closing_lines,
    evaluated_on_text,
    intro_text,
    paired_delta,
    stars,
    table_lines,
    unfinished,
)


def epochs_text(epochs: float) -> str:
    """``1 epoch``, ``0.5 epochs``, ``10 epochs``."""
    return f"{epochs:g} epoch" + ("" if epochs == 1 else "s")


def sign_cell(entry: dict) -> str:
    """``+ + − (2/3)``: the sign of each seed's difference and how many are above zero."""
    if not entry["n"]:
        return "–"
    return " ".join(entry["signs"]) + f" ({entry['above']}/{entry['n']})"


def sign_lines(study: dict) -> list[str]:
    """The table of signs of (criterion − continued) per seed, one column per point."""
    signs = study.get("signs") or {}
    if not signs:
        return []
    col = study["columns"][0]
    heads = [epochs_text(e) for e in study["epochs"]]
    lines = [
        "",
        f"## Sign of (criterion − continued) per seed, {col}",
        "",
        f"Each seed's {col} top-1 minus that of `continued` with the same seed (same data order, "
        "augmentations and label subset), in seed order; in brackets the seeds above `continued`.",
        "",
        "| criterion | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(heads),
    ]
    for name, entries in signs.items():
        by_point = {entry["epochs"]: entry for entry in entries}
        cells = [sign_cell(by_point[e]) if e in by_point else "–" for e in study["epochs"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_points_markdown(study: dict) -> str:
    """``study.md`` of a study over continuation lengths: the tables per point, then the signs."""
    cfg = study["config"]
    lengths = ", ".join(f"{e:g}" for e in study["epochs"])
    lines = [
        f"# Study: {cfg['base']} on {study.get('data', '')}, {lengths} epochs of continued pre-training",
        "",
        intro_text(study),
        "",
        f"Each cell trains one run of {epochs_text(study['epochs'][-1])} per criterion and seed; each "
        "point is the snapshot of that run after so many epochs. The base row is the point at 0 epochs.",
    ]
    for point in study["points"]:
        lines += ["", f"## After {epochs_text(point['epochs'])} of continued pre-training", ""]
        lines += table_lines(study["columns"], point["rows"])
    lines += sign_lines(study)
    incomplete = any(unfinished(study, point["rows"]) for point in study["points"])
    lines += closing_lines(study, incomplete)
    return "\n".join(lines) + "\n"


def _curves(study: dict, col: str) -> dict[str, tuple[int, list[tuple[float, dict]]]]:
    """Per row name: its colour index and ``[(epochs, cell)]`` of the points it has, the base's
    cell at 0 epochs first."""
    base = next(row for row in study["points"][0]["rows"] if row["name"] == "base")
    out: dict[str, tuple[int, list[tuple[float, dict]]]] = {}
    for i, row in enumerate(study["points"][0]["rows"]):
        if row["name"] == "base":
            continue
        cells = [(0.0, base[col])] if base[col].get("n") else []
        for point in study["points"]:
            cell = next(r for r in point["rows"] if r["name"] == row["name"])[col]
            if cell.get("n"):
                cells.append((float(point["epochs"]), cell))
        out[row["name"]] = (i, cells)
    return out


def _epoch_ticks(ax, study: dict) -> None:
    """Ticks at 0 (the base) and at every point of the study, labelled as given (``1``, ``0.5``)."""
    ticks = [0.0, *(float(e) for e in study["epochs"])]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])


def _band(ax, xs: list[float], means: list[float], ses: list[float], colour: str, label: str) -> None:
    """A line through the means with a band of ± one standard error."""
    ax.plot(xs, means, marker="o", ms=4, color=colour, label=label)
    low, high = [m - s for m, s in zip(means, ses)], [m + s for m, s in zip(means, ses)]
    ax.fill_between(xs, low, high, color=colour, alpha=0.2, lw=0)


def _absolute_panel(ax, study: dict, col: str) -> None:
    base = next(row for row in study["points"][0]["rows"] if row["name"] == "base")[col]
    for name, (i, cells) in _curves(study, col).items():
        if cells:
            means = [c["mean"] for _, c in cells]
            _band(ax, [x for x, _ in cells], means, [c.get("se") or 0.0 for _, c in cells], f"C{i}", name)
    if base.get("n"):
        ax.errorbar(0.0, base["mean"], yerr=base.get("se") or 0.0, fmt="s", color="C0", ms=6, capsize=2,
                    label="base", zorder=5)  # fmt: skip
    ax.set_xlabel("epochs of continued pre-training")
    ax.set_ylabel(f"top-1 accuracy (%), {col}")
    ax.set_title("top-1, mean ± standard error over seeds (bands)", fontsize=9)
    _epoch_ticks(ax, study)
    ax.legend(fontsize=8)


def delta_series(study: dict, name: str, col: str) -> tuple[list[float], list[float], list[float], list[str]]:
    """``(epochs, mean, SE, stars)`` of a criterion's difference to ``continued`` in ``col``, paired
    by seed, at the points both have; ``(0, 0, 0, "")`` first: every criterion starts from the base."""
    xs, means, ses, marks = [0.0], [0.0], [0.0], [""]
    for point in study["points"]:
        rows = {r["name"]: r for r in point["rows"]}
        ours = rows[name]
        delta = paired_delta(ours, rows[CONTROL], col) if ours[col].get("n") else None
        if delta is not None:
            xs.append(float(point["epochs"]))
            means.append(delta.mean)
            ses.append(delta.se or 0.0)
            marks.append(stars(cell_p(ours[col])))
    return xs, means, ses, marks


def _delta_panel(ax, study: dict, col: str) -> None:
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.annotate("continued", (1.0, 0.0), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                textcoords="offset points", ha="right", va="bottom", fontsize=7, color="0.3")  # fmt: skip
    for i, row in enumerate(study["points"][0]["rows"]):
        if row["name"] in ("base", CONTROL):
            continue
        xs, means, ses, marks = delta_series(study, row["name"], col)
        if len(xs) == 1:
            continue
        _band(ax, xs, means, ses, f"C{i}", row["name"])
        for x, top, mark in zip(xs, [m + s for m, s in zip(means, ses)], marks):
            if mark:
                ax.annotate(
                    mark, (x, top), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8
                )
    ax.set_xlabel("epochs of continued pre-training")
    ax.set_ylabel(f"Δ top-1 vs continued (points), {col}")
    ax.set_title("difference to continued, paired by seed (± standard error)", fontsize=9)
    _epoch_ticks(ax, study)
    ax.margins(y=0.15)
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, -DELTA_MIN_SPAN), max(high, DELTA_MIN_SPAN))


def render_points_png(study: dict, path: str | Path) -> Path:
    """``study.png``: top-1 in the first column against the epochs of continued pre-training, beside
    the paired difference to ``continued`` (when the study has it)."""
    col = study["columns"][0]
    names = [row["name"] for row in study["points"][0]["rows"]]
    panels = 2 if CONTROL in names and len(names) > 2 else 1
    fig, axes = figure(1, panels, 5.2, 4.4)
    _absolute_panel(axes[0, 0], study, col)
    if panels == 2:
        _delta_panel(axes[0, 1], study, col)
    cfg = study["config"]
    note = "bands: ± one standard error over seeds"
    if panels == 2:
        note += f"; {SIGNIFICANCE_NOTE} (all seeds pooled)"
    title = f"{cfg['base']}: top-1 ({col}) on {evaluated_on_text(cfg)} during continued pre-training"
    fig.suptitle(f"{title}\n{note}", fontsize=9)
    return save_png(fig, path)
