"""The results of a reproduction beside the paper's: read from the evaluations on disk, written
as ``OUT/table<N>.json`` and ``OUT/table<N>.md``.

Each cell of a row is the mean ± standard error (``s/√n``) over seeds of the best-epoch top-1
(%) of its evaluations (:mod:`e2mc_cli.evaluate.records`), selected on the evaluation split as the
paper's figures are, with the final-epoch top-1 beside it (``final``): for a base row the seeds
of the base's evaluation, for a trained row one evaluation per training seed. An evaluation not made yet (or
made under an older protocol, or a linear probe of the other mode) is left out; ``complete``
says whether every cell has all its seeds.
"""

from __future__ import annotations

from pathlib import Path

from e2mc_cli.data.subsets import labels_tag
from e2mc_cli.evaluate import records
from e2mc_cli.evaluate.stats import format_mean_se, mean_se
from e2mc_cli.papers import PAPERS
from e2mc_cli.reproduce.plan import PROBE_MODE, Plan, PlannedRow
from e2mc_cli.study import EVAL_DIR, cell_name

RESULTS_FORMAT = "sslboost-reproduce/1"


def eval_folder(plan: Plan, row: PlannedRow, column: str, seed: int) -> Path:
    """Where the evaluation ``column`` of ``row`` lies for ``seed`` (a trained row's training
    seed; a base row's evaluations of every seed share one folder)."""
    protocol, labels = column.split(" ")
    r = row.paper
    inner = Path("base") if not r.trained else Path("cells") / cell_name(r.criterion, seed)
    return plan.out / r.base / inner / EVAL_DIR / f"{protocol}-{labels_tag(labels)}"


def _read(folder: Path, protocol: str):
    record = records.read_current(folder)
    if record is None or (protocol == "linear" and record.mode != PROBE_MODE):
        return None
    return record


def _figures(result) -> tuple[float, float]:
    """``(best-epoch top-1, final-epoch top-1)`` of one seed's result (the final one where the
    record has no best epoch)."""
    best = result.best_top1 if result.best_top1 is not None else result.top1
    return best, result.top1


def row_values(plan: Plan, row: PlannedRow) -> dict[str, list[tuple[float, float]]]:
    """``{column: [(best-epoch, final-epoch) top-1 of each seed found]}`` of one row."""
    seeds = range(plan.options.seeds)
    out: dict[str, list[tuple[float, float]]] = {}
    for col in row.evaluations:
        protocol = col.split(" ")[0]
        if not row.paper.trained:
            record = _read(eval_folder(plan, row, col, 0), protocol)
            found = {r.seed: _figures(r) for r in record.results} if record else {}
            out[col] = [found[s] for s in seeds if s in found]
            continue
        values = []
        for s in seeds:
            record = _read(eval_folder(plan, row, col, s), protocol)
            if record is not None and record.results:
                values.append(_figures(record.results[0]))
        out[col] = values
    return out


def _summary(values: list[float]) -> dict:
    mean, se = mean_se(values) if values else (None, None)
    return {"values": values, "mean": mean, "se": se, "n": len(values)}


def _cell(paper, figures: list[tuple[float, float]]) -> dict:
    ours = _summary([best for best, _ in figures])
    ours["selected_on"] = "evaluation split"
    diff = None if paper is None or ours["mean"] is None else ours["mean"] - paper.mean
    return {
        "paper": paper.to_dict() if paper else None,
        "ours": ours,
        "final": _summary([final for _, final in figures]),
        "difference": diff,
    }


def tabulate(plan: Plan, *, status: str = "complete", cannot_run: dict | None = None, meta=None) -> dict:
    """The ``table<N>.json`` document: each row's cells, paper beside ours."""
    columns = list(plan.table.columns)
    rows, complete = [], True
    for row in plan.rows:
        values = row_values(plan, row)
        cells = {c: _cell(row.paper.figures.get(c), values[c]) for c in row.evaluations}
        complete &= all(len(v) == plan.options.seeds for v in values.values())
        r = row.paper
        rows.append({
            "id": r.id, "label": r.label, "epochs": r.epochs, "base": r.base,
            "criterion": r.criterion, "recipe": row.recipe, "cells": cells, "notes": list(r.notes),
        })  # fmt: skip
    return {
        "format": RESULTS_FORMAT,
        "table": plan.table.number,
        "title": plan.table.title,
        "paper": PAPERS["e2mc"].short,
        "link": PAPERS["e2mc"].link,
        "data": plan.options.data,
        "out": str(plan.out),
        "seeds": plan.options.seeds,
        "probe_mode": PROBE_MODE,
        "columns": columns,
        "rows": rows,
        "status": status,
        "complete": complete and status == "complete",
        "cannot_run": dict(cannot_run or {}),
        **(meta or {}),
    }


def fmt_cell(cell: dict | None, key: str) -> str:
    """``paper`` or ``ours`` of a cell as ``mean ± se`` (``–`` when absent)."""
    if cell is None or cell[key] is None:
        return "–"
    value = cell[key]
    return format_mean_se(value["mean"], value["se"])


def fmt_difference(cell: dict | None) -> str:
    if cell is None or cell["difference"] is None:
        return "–"
    return f"{cell['difference']:+.2f}"


def render_markdown(doc: dict) -> str:
    """``table<N>.md``: per column the paper's figure / ours, then ours − paper in points."""
    cols = doc["columns"]
    lines = [
        f"# {doc['paper']}, Table {doc['table']}: {doc['title']}, paper / ours",
        "",
        f"Top-1 (%) on {doc.get('data') or 'the data'}'s validation split; paper: {doc['link']}. Ours: "
        f"mean ± standard error over {doc['seeds']} seed(s) of the best-epoch top-1, selected on the "
        "evaluation split as the paper's (the final epoch's is in the json); linear probe "
        "with augmented crops every epoch (the paper's protocol). `–`: not reported (paper) or not "
        "evaluated yet (ours).",
        "",
        "| row | epochs | " + " | ".join(cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    for row in doc["rows"]:
        cells = [row["cells"].get(c) for c in cols]
        text = [f"{fmt_cell(c, 'paper')} / {fmt_cell(c, 'ours')}" if c else "" for c in cells]
        lines.append(f"| {row['label']} | {row['epochs']:,} | " + " | ".join(text) + " |")
    lines += ["", "Ours − paper (points):", "", "| row | epochs | " + " | ".join(cols) + " |"]
    lines.append("|---|---:|" + "---:|" * len(cols))
    for row in doc["rows"]:
        diffs = [fmt_difference(row["cells"].get(c)) if c in row["cells"] else "" for c in cols]
        lines.append(f"| {row['label']} | {row['epochs']:,} | " + " | ".join(diffs) + " |")
    notes = [f"- {row['label']} ({row['epochs']:,}): {n}" for row in doc["rows"] for n in row["notes"]]
    notes += [f"- {cell}: cannot run: {why}" for cell, why in doc["cannot_run"].items()]
    if notes:
        lines += ["", "Notes:", "", *notes]
    if not doc["complete"]:
        lines += ["", f"Incomplete ({doc['status']}): run the same command again to resume."]
    return "\n".join(lines) + "\n"
