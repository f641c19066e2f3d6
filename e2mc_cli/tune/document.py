"""The numbers of a tuning: each trial against its control (Δ top-1 and McNemar's exact p on each
label column), each point's gain against the gain of its stage's ``×1`` point (on the column that
chooses), each stage's rows and choice, and the ``tuning.json`` document.

Everything here is computed from the cells' ``result.json`` files and evaluations on disk, so a
tuning read back after an interruption has the same stages and choices as one run in one go.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from e2mc_cli.evaluate.compare import check_comparable
from e2mc_cli.evaluate.stats import gain_difference_test, mcnemar
from e2mc_cli.study.cells import KNN, column_name, config_record, read_correctness
from e2mc_cli.tune.config import Start, TuneConfig, control_key, test_command, trial_key
from e2mc_cli.tune.plan import Point, choose, highest, start_index

TUNE_FORMAT = "sslboost-tune/1"
NOT_RUN = "not run yet"
DONE = "done"
DIVERGED = "diverged"  # the run met a non-finite loss: a result (no Δ), not run again
CANNOT_RUN = "cannot run"  # the criterion cannot run with this base (tried again next time)
POINT_KEYS = ("slug", "factor", "weights", "lr")  # a chosen point in tuning.json


@dataclass(frozen=True)
class Outcome:
    """A cell of the tuning: its ``result.json`` document, or why it has none (``status``
    :data:`DIVERGED` or :data:`CANNOT_RUN`, and the ``reason``)."""

    result: dict | None
    status: str = DONE
    reason: str = ""


def tune_columns(cfg: TuneConfig) -> list[str]:
    """``linear <labels>`` for each label fraction, then ``knn``; the first one chooses."""
    return [column_name(lab) for lab in cfg.labels] + ([KNN] if cfg.knn else [])


def paired(control_top1: float, trial_top1: float, control_correct, trial_correct) -> dict:
    """One column of a trial against its control: both top-1 (%), ``delta`` = trial − control
    (points) and McNemar's exact p-value on the paired per-sample correctness
    (:func:`e2mc_cli.evaluate.stats.mcnemar`, ``n01``: control wrong and trial right)."""
    test = mcnemar(np.asarray(control_correct, bool), np.asarray(trial_correct, bool))
    return {
        "continued": control_top1,
        "criterion": trial_top1,
        "delta": trial_top1 - control_top1,
        "p": test.p_exact,
        "n01": test.n01,
        "n10": test.n10,
    }


def _correctness(cell: dict, column: str):
    """``(eval record, arrays, {seed: correctness})`` of one column of a cell's ``result.json``."""
    return read_correctness(cell["eval"][column]["path"])


def score(control: dict, trial: dict, columns: list[str], seed: int) -> dict[str, dict]:
    """:func:`paired` on each column from the two cells' evaluations on disk (checked to be on the
    same images with the same label subset, :func:`e2mc_cli.evaluate.compare.check_comparable`)."""
    out = {}
    for col in columns:
        crec, carrays, ccorrect = _correctness(control, col)
        trec, tarrays, tcorrect = _correctness(trial, col)
        check_comparable(crec, carrays, trec, tarrays)
        out[col] = paired(control["columns"][col], trial["columns"][col], ccorrect[seed], tcorrect[seed])
    return out


def versus(start: tuple[dict, dict], other: tuple[dict, dict], column: str, seed: int) -> dict:
    """Point ``other``'s gain over its control against the ``start`` point's gain over its own
    (``(control, trial)`` result documents), on ``column``: ``delta`` = Δ(other) − Δ(start) in
    points and the exact p of :func:`e2mc_cli.evaluate.stats.gain_difference_test`."""
    (sc, st), (oc, ot) = ((_correctness(c, column) for c in pair) for pair in (start, other))
    check_comparable(st[0], st[1], ot[0], ot[1])  # the two trials, on the same images and subset
    test = gain_difference_test(sc[2][seed], st[2][seed], oc[2][seed], ot[2][seed])
    return {"delta": test["difference"], "p": test["p"]}


def point_row(cfg: TuneConfig, point: Point, outcomes: dict[str, Outcome], columns: list[str]) -> dict:
    """A point's row: its stage, factor, weights, lr, folders, ``status`` and, when both its trial
    and its control are done, the scored columns."""
    trial, control = outcomes.get(trial_key(point)), outcomes.get(control_key(point.lr))
    row = {
        "slug": point.slug,
        "stage": point.stage,
        "factor": point.factor,
        "weights": point.weight_map,
        "lr": point.lr,
        "trial": trial_key(point),
        "control": control_key(point.lr),
        "status": NOT_RUN,
        "columns": {},
    }
    if control is not None and control.status != DONE:
        row.update(status=control.status, reason=f"the control: {control.reason}")
    elif trial is not None and trial.status != DONE:
        row.update(status=trial.status, reason=trial.reason)
    elif trial is not None and control is not None:
        row.update(status=DONE, columns=score(control.result, trial.result, columns, cfg.seed))
    return row


def stage_rows(cfg: TuneConfig, grid: list[Point], outcomes: dict[str, Outcome]) -> list[dict]:
    """The rows of a stage (:func:`point_row`); once its ``×1`` point is done, every other done
    row also has ``vs_start``: its gain against the ``×1`` point's on the choosing column
    (:func:`versus`)."""
    columns = tune_columns(cfg)
    rows = [point_row(cfg, p, outcomes, columns) for p in grid]
    start = start_index(grid)
    if start is None or rows[start]["status"] != DONE:
        return rows
    def cells(row: dict) -> tuple[dict, dict]:
        return outcomes[row["control"]].result, outcomes[row["trial"]].result

    for i, row in enumerate(rows):
        if i != start and row["status"] == DONE:
            row["vs_start"] = versus(cells(rows[start]), cells(row), columns[0], cfg.seed)
    return rows


def stage_choice(cfg: TuneConfig, grid: list[Point], rows: list[dict]) -> int | None:
    """The chosen point of a finished stage (:func:`e2mc_cli.tune.plan.choose` on the choosing
    column at ``cfg.alpha``); ``None`` while a point is not run yet, or when no point has a Δ."""
    if any(r["status"] == NOT_RUN for r in rows):
        return None
    p_vs_start = [r.get("vs_start", {}).get("p") for r in rows]
    return choose(grid, choosing_deltas(cfg, rows), p_vs_start, cfg.alpha)


def choosing_deltas(cfg: TuneConfig, rows: list[dict]) -> list[float | None]:
    """Each row's Δ on the choosing column (``None``: a row without one)."""
    column = tune_columns(cfg)[0]
    return [r["columns"][column]["delta"] if r["status"] == DONE else None for r in rows]


def stage_doc(cfg: TuneConfig, name: str, grid: list[Point], outcomes: dict, seen: set[str]) -> dict:
    """One stage of ``tuning.json``: its factors, rows (``reused``: the trial of an earlier stage),
    whether every point is done, the chosen point, the point of the highest Δ (its slug) and
    ``kept_start``: whether the ``×1`` point was kept over it (not better at ``cfg.alpha``)."""
    rows = stage_rows(cfg, grid, outcomes)
    for r in rows:
        r["reused"] = r["slug"] in seen
    chosen = stage_choice(cfg, grid, rows)
    top = highest(grid, choosing_deltas(cfg, rows)) if chosen is not None else None
    return {
        "name": name,
        "factors": [p.factor for p in grid],
        "rows": rows,
        "complete": all(r["status"] != NOT_RUN for r in rows),
        "chosen": None if chosen is None else {k: rows[chosen][k] for k in POINT_KEYS},
        "highest": None if top is None else rows[top]["slug"],
        "kept_start": chosen is not None and chosen != top,
    }


def chosen_row(stage: dict) -> dict | None:
    """The row of a stage's chosen point (``None`` while it has none)."""
    slug = (stage["chosen"] or {}).get("slug")
    return next((r for r in stage["rows"] if r["slug"] == slug), None)


def summarise_tuning(
    cfg: TuneConfig,
    start: Start,
    stages: list[tuple[str, list[Point]]],
    outcomes: dict[str, Outcome],
    meta: dict,
) -> dict:
    """The ``tuning.json`` document: the configuration, the starting point, every stage with its
    rows and choice, every trial once, the chosen point and the command that reads the test split."""
    seen: set[str] = set()
    docs, trials = [], {}
    for name, grid in stages:
        doc = stage_doc(cfg, name, grid, outcomes, seen)
        docs.append(doc)
        for row in doc["rows"]:
            trials.setdefault(row["slug"], row)
        seen.update(r["slug"] for r in doc["rows"])
    final = chosen_row(docs[-1]) if docs and docs[-1]["name"] == "lr" else None
    point = None if final is None else [p for _, g in stages for p in g if p.slug == final["slug"]][0]
    return {
        "format": TUNE_FORMAT,
        "config": config_record(cfg),
        "base": cfg.base,
        "criterion": cfg.criterion,
        "weights": list(start.weights),
        "start": {"weights": dict(start.weights), "lr": start.lr},
        "columns": tune_columns(cfg),
        "choose_by": tune_columns(cfg)[0],
        "evaluated_on": f"{cfg.holdout} images held out from the training split (not the test split)",
        "stages": docs,
        "trials": list(trials.values()),
        "chosen": None if final is None else {k: final[k] for k in (*POINT_KEYS, "stage", "columns")},
        "complete": final is not None,
        "test_command": None if point is None else test_command(cfg, point, start),
        **meta,
    }
