"""A study over continuation lengths (``sslboost study --epochs 1,3,10``): the analogue of Figure 4
of the E2MC paper (Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931), where
the gain of each criterion is read after each epoch of one continued pre-training.

Each cell ``(criterion, seed)`` trains **one** run to the largest value, with a snapshot of the
model at every value (:mod:`e2mc_cli.training.snapshots`), and each snapshot is evaluated as a
one-length study evaluates its cell (the linear probe at each label fraction, kNN). The run stops
at each point (``stop_at_snapshot``), which is evaluated before it resumes: resuming is bit for
bit the uninterrupted run, and each point's figures are there as soon as the run reaches it. Layout:
``DIR/cells/<criterion>-seed<k>/train/`` (the run, ``snapshots/epoch-<e>/`` in it) and, per
point, ``DIR/cells/<criterion>-seed<k>/epoch-<e>/`` (``eval/`` and ``result.json``, written last).
A point whose ``result.json`` exists (made under today's evaluation protocol) is not evaluated
again; a cell whose points all have one is skipped; an interrupted run resumes from its last
checkpoint. The base, evaluated once in ``DIR/base/``, is the point at 0 epochs.

``study.json`` (format :data:`STUDY_EPOCHS_FORMAT`) holds per point the rows of a one-length
study (per-seed top-1, mean ± standard error, McNemar's test against ``continued`` with the
predictions of all seeds pooled), and per criterion the sign of (criterion − continued) in the
first column for each seed at each point (``signs``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from e2mc_cli.errors import UserError
from e2mc_cli.run_layout import SUMMARY_FILE
from e2mc_cli.study.cells import (
    RESULT_FILE,
    Log,
    cell_folder,
    cell_name,
    config_record,
    evaluate_cell,
    quiet,
    read_current_result,
    train_cell,
)
from e2mc_cli.study.config import CONTROL, StudyConfig, epoch_points
from e2mc_cli.study.summary import (
    MCNEMAR_NOTE,
    all_done,
    seed_differences,
    study_columns,
    summary_rows,
)
from e2mc_cli.training.outputs import epoch_text
from e2mc_cli.training.snapshots import read_snapshot, snapshot_file

STUDY_EPOCHS_FORMAT = "sslboost-study-epochs/1"

Cells = dict[tuple[str, int], dict]


def point_folder(cfg: StudyConfig, criterion: str, seed: int, epochs: float) -> Path:
    """``DIR/cells/<criterion>-seed<k>/epoch-<e>/``: one point's evaluations and result."""
    return cell_folder(cfg, criterion, seed) / f"epoch-{epoch_text(epochs)}"


def _point_results(cfg: StudyConfig, criterion: str, seed: int) -> dict[float, dict | None]:
    return {
        e: read_current_result(point_folder(cfg, criterion, seed, e) / RESULT_FILE) for e in epoch_points(cfg)
    }


def _run_summary(run_dir: Path) -> dict:
    path = run_dir / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _evaluate_reached(
    cfg: StudyConfig, data: str, key: tuple[str, int], results: dict, train_s: float, log: Log,
    summary: dict,
) -> None:  # fmt: skip
    """Evaluate, into ``results``, every point of cell ``key`` not evaluated yet whose snapshot its
    run has written; ``train_s`` (the training of this invocation) is counted with the first;
    ``summary``: the run's ``summary.json``."""
    criterion, seed = key
    run_dir = cell_folder(cfg, criterion, seed) / "train"
    reached = {e: read_snapshot(run_dir, e) for e, r in results.items() if r is None}
    reached = {e: info for e, info in reached.items() if info is not None}
    for epochs, info in reached.items():
        results[epochs] = evaluate_cell(
            cfg,
            data,
            key,
            snapshot_file(run_dir, epochs),
            point_folder(cfg, criterion, seed, epochs),
            summary=summary,
            train_s=train_s,
            log=log,
            what=f" at {epochs:g} epochs",
            extra={"epochs": epochs, "snapshot": info},
        )
        train_s = 0.0


def run_point_cell(
    cfg: StudyConfig, data: str, criterion: str, seed: int, log: Log = quiet
) -> tuple[dict[float, dict], bool]:
    """Point by point: evaluate each point not evaluated yet whose snapshot the cell's run has
    written; for the next one, train the run on (resuming) to its next snapshot point and evaluate
    what it reached. Each point's figures are written as soon as the run reaches it, so a stopped
    study keeps them all; ``({epochs: result}, trained now)``."""
    results = _point_results(cfg, criterion, seed)
    key = (criterion, seed)
    run_dir = cell_folder(cfg, criterion, seed) / "train"
    summary = _run_summary(run_dir)
    _evaluate_reached(cfg, data, key, results, 0.0, log, summary)
    trained = False
    for epochs in sorted(e for e, r in results.items() if r is None):
        while results[epochs] is None:
            if summary.get("status") == "finished":
                raise UserError(
                    f"{run_dir}: no snapshot at {epochs:g} epochs (the run was trained without it); "
                    f"remove {run_dir.parent} to train the cell again"
                )
            log(f"{cell_name(criterion, seed)}: training to {epochs:g} epochs")
            t0 = time.perf_counter()
            after = train_cell(cfg, data, criterion, seed, run_dir, stop_at_snapshot=True)
            trained = True
            if after.get("steps") == summary.get("steps"):
                raise UserError(f"{run_dir}: the run did not reach its snapshot at {epochs:g} epochs")
            summary = after
            _evaluate_reached(cfg, data, key, results, time.perf_counter() - t0, log, summary)
    return results, trained


def collect_points(cfg: StudyConfig) -> dict[float, Cells]:
    """``{epochs: {(criterion, seed): result}}`` of the points evaluated on disk."""
    out: dict[float, Cells] = {e: {} for e in epoch_points(cfg)}
    for crit in cfg.criteria:
        for s in range(cfg.seeds):
            for e, result in _point_results(cfg, crit, s).items():
                if result is not None:
                    out[e][(crit, s)] = result
    return out


def sign(difference: float) -> str:
    """``+``, ``−`` or ``0``: the sign of a difference in points."""
    return "+" if difference > 0 else "−" if difference < 0 else "0"


def seed_signs(points: list[dict], column: str) -> dict[str, list[dict]]:
    """Per criterion other than the control, per point: the seeds, the differences (criterion −
    continued) in ``column`` paired by seed, their signs and how many are above zero."""
    out: dict[str, list[dict]] = {}
    for point in points:
        rows = {row["name"]: row for row in point["rows"]}
        control = rows.get(CONTROL)
        for name, row in rows.items():
            if name in ("base", CONTROL) or control is None:
                continue
            pairs = seed_differences(row, control, column)
            out.setdefault(name, []).append(
                {
                    "epochs": point["epochs"],
                    "column": column,
                    "seeds": [s for s, _ in pairs],
                    "differences": [d for _, d in pairs],
                    "signs": [sign(d) for _, d in pairs],
                    "above": sum(d > 0 for _, d in pairs),
                    "n": len(pairs),
                }
            )
    return out


def summarise_points(cfg: StudyConfig, base: dict, cells: dict[float, Cells], meta: dict) -> dict:
    """The ``study.json`` document of a study over continuation lengths (see the module docstring)."""
    columns = study_columns(cfg)
    points = [
        {
            "epochs": e,
            "rows": summary_rows(cfg, base, cells.get(e, {})),
            "complete": all_done(cfg, cells.get(e, {})),
        }
        for e in epoch_points(cfg)
    ]
    return {
        "format": STUDY_EPOCHS_FORMAT,
        "config": config_record(cfg),
        "columns": columns,
        "epochs": epoch_points(cfg),
        "points": points,
        "signs": seed_signs(points, columns[0]),
        "mcnemar": MCNEMAR_NOTE,
        "complete": all(p["complete"] for p in points),
        **meta,
    }
