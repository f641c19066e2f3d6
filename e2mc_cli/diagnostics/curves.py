"""Training curves of run folders: what ``sslboost plot`` reads from each ``metrics.jsonl`` and draws.

A metrics line (written by the training loop every ``run.log_every`` steps) holds ``step``,
``epoch``, the total ``loss``, every loss term prefixed by its source (``vicreg.invariance``,
``e2mc.ent``), ``lr``, ``img_s`` and the embedding health ``health/*``
(:class:`e2mc_cli.training.health.HealthMonitor`). :func:`metric_series` turns the lines into one
``(steps, values)`` series per quantity, exactly the numbers read; :func:`plot_curves` draws one
panel per quantity against the step, one line per run, runs named by their folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from e2mc_cli.diagnostics.plots import figure, save_png, short_names
from e2mc_cli.errors import UserError
from e2mc_cli.run_layout import METRICS_FILE

NOT_PLOTTED = ("step", "epoch")  # the x axis (and the epoch, which the step fixes)
TITLES = {
    "loss": "total loss",
    "lr": "learning rate",
    "img_s": "training speed",
    "health/entropy": "health: marginal entropy of Ψ(z) (max 0)",
    "health/eff_rank": "health: effective rank",
    "health/centre_sq": "health: centre norm² (→ 1 in collapse)",
}
Y_LABELS = {"lr": "learning rate", "img_s": "images / s"}
PANEL_COLUMNS = 4
PANEL_RANKS = {"loss": 0, "lr": 2, "img_s": 3}  # loss terms (source.term) 1, health/* 4, others 5


@dataclass(frozen=True)
class Series:
    """One quantity of one run: the steps it was logged at and its values there."""

    steps: tuple[int, ...]
    values: tuple[float, ...]


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of a run folder's ``metrics.jsonl`` (a line that is not a JSON object, such as
    one cut off by a killed run, is skipped); a UserError when there are none."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {METRICS_FILE} (expected a run folder of `sslboost continue`)")
    records = [r for r in _json_lines(path.read_text()) if isinstance(r, dict) and _is_number(r.get("step"))]
    if not records:
        raise UserError(f"{path}: no metrics logged yet")
    return records


def _json_lines(text: str):
    """The value of every line of ``text`` that is valid JSON."""
    for line in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            yield json.loads(line)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def metric_series(records: Sequence[dict]) -> dict[str, Series]:
    """One :class:`Series` per quantity of the records (every numeric field but ``step`` and
    ``epoch``), in :func:`panel_order`; a record lacking a quantity adds no point to it."""
    points: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        for key, value in record.items():
            if key in NOT_PLOTTED or not _is_number(value):
                continue
            steps, values = points.setdefault(key, ([], []))
            steps.append(int(record["step"]))
            values.append(float(value))
    return {key: Series(tuple(points[key][0]), tuple(points[key][1])) for key in panel_order(points)}


def panel_order(keys) -> list[str]:
    """Total loss, the loss terms (by source), learning rate, speed, embedding health, the rest."""

    def rank(key: str) -> tuple[int, str]:
        if key in PANEL_RANKS:
            return PANEL_RANKS[key], key
        if key.startswith("health/"):
            return 4, key
        return (1 if "." in key else 5), key

    return sorted(keys, key=rank)


def _title(key: str) -> str:
    return TITLES.get(key, key)


def _draw(ax, key: str, runs: Sequence[tuple[str, dict[str, Series]]]) -> None:
    for i, (name, series) in enumerate(runs):
        s = series.get(key)
        if s is None:
            continue
        few = len(s.steps) <= 20
        ax.plot(s.steps, s.values, color=f"C{i}", label=name, marker="o" if few else None, ms=3, lw=1.2)
    ax.set_title(_title(key), fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel(Y_LABELS.get(key, key.removeprefix("health/")), fontsize=8)
    ax.tick_params(labelsize=7)


def plot_curves(runs: Sequence[tuple[str, dict[str, Series]]], path: str | os.PathLike) -> Path:
    """One panel per quantity of any run (in :func:`panel_order`) against the step, one line per
    run in the colour of its legend entry; written as PNG, atomically."""
    keys = panel_order({k for _, series in runs for k in series})
    ncols = min(PANEL_COLUMNS, max(len(keys), 1))
    nrows = max(math.ceil(len(keys) / ncols), 1)
    fig, axes = figure(nrows, ncols, 3.6, 2.7)
    for ax, key in zip(axes.flat, keys):
        _draw(ax, key, runs)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=f"C{i}", lw=1.5, label=name) for i, (name, _) in enumerate(runs)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(runs), 4), fontsize=8)
    fig.suptitle("training curves (metrics.jsonl): " + ", ".join(name for name, _ in runs), fontsize=10)
    return save_png(fig, path)


def plot_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Read every run folder's metrics (all of them before drawing) and plot them overlaid."""
    series = [metric_series(read_metrics(run)) for run in run_dirs]
    return plot_curves(list(zip(short_names(run_dirs), series)), out)
