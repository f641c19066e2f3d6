"""The numbers of a study: mean ± standard error over seeds of every row and column, and McNemar's
test of each criterion against the control with the predictions of all seeds pooled."""

from __future__ import annotations

import numpy as np

from e2mc_cli.evaluate.compare import check_comparable
from e2mc_cli.evaluate.stats import mcnemar, mean_se
from e2mc_cli.study.cells import KNN, column_name, config_record, read_correctness
from e2mc_cli.study.config import CONTROL, StudyConfig

STUDY_FORMAT = "sslboost-study/1"
MCNEMAR_NOTE = (
    "pooled over seeds: per-sample correctness of seed k of both criteria "
    "(same label subset) concatenated over k; chi2 = (n01 - n10)^2 / (n01 + n10), exact binomial p"
)


def mcnemar_vs_control(control_paths: list[str], other_paths: list[str]) -> dict:
    """McNemar of ``other`` against ``control``, predictions of all seeds pooled, plus per seed.

    Each list holds evaluation folders (one per seed); folders are paired by seed and checked to
    be comparable (same data, labels and label subset) with
    :func:`e2mc_cli.evaluate.compare.check_comparable`.
    """
    ctrl = {}
    for p in control_paths:
        rec, arrays, correct = read_correctness(p)
        for s, c in correct.items():
            ctrl[s] = (rec, arrays, c)
    pooled_a, pooled_b, per_seed = [], [], []
    for p in other_paths:
        rec, arrays, correct = read_correctness(p)
        for s, c in correct.items():
            if s not in ctrl:
                continue
            crec, carrays, ccorrect = ctrl[s]
            check_comparable(crec, carrays, rec, arrays)
            pooled_a.append(ccorrect)
            pooled_b.append(c)
            per_seed.append({"seed": s, **mcnemar(ccorrect, c).to_dict()})
    if not pooled_a:
        return {"pooled": None, "per_seed": []}
    pooled = mcnemar(np.concatenate(pooled_a), np.concatenate(pooled_b)).to_dict()
    return {"pooled": pooled, "per_seed": per_seed, "seeds": [r["seed"] for r in per_seed]}


def seed_stat(values: list[float]) -> dict:
    """``{"values", "mean", "se", "n"}`` of one table cell (the top-1 of each seed)."""
    m, se = mean_se(values)
    return {"values": values, "mean": m, "se": se, "n": len(values)}


def study_columns(cfg: StudyConfig) -> list[str]:
    """The table columns of a study: ``linear <labels>`` for each label fraction, then ``knn``."""
    return [column_name(lab) for lab in cfg.labels] + ([KNN] if cfg.knn else [])


def summary_rows(cfg: StudyConfig, base: dict, cells: dict[tuple[str, int], dict]) -> list[dict]:
    """The base row and one row per criterion: per column the per-seed top-1, mean ± SE and the
    pooled McNemar test against the control; ``seeds_done`` per criterion."""
    columns = study_columns(cfg)
    rows = [{"name": "base", **{c: seed_stat(list(base["columns"].get(c, []))) for c in columns}}]
    for crit in cfg.criteria:
        row = {"name": crit}
        done = [cells[(crit, s)] for s in range(cfg.seeds) if (crit, s) in cells]
        for c in columns:
            row[c] = seed_stat([r["columns"][c] for r in done if c in r["columns"]])
            if crit != CONTROL and CONTROL in cfg.criteria:
                ctrl = [
                    cells[(CONTROL, s)]["eval"][c]["path"] for s in range(cfg.seeds) if (CONTROL, s) in cells
                ]
                other = [r["eval"][c]["path"] for r in done if c in r["eval"]]
                row[c]["mcnemar_vs_continued"] = mcnemar_vs_control(ctrl, other) if ctrl and other else None
        row["seeds_done"] = [r["seed"] for r in done]
        rows.append(row)
    return rows


def all_done(cfg: StudyConfig, cells: dict[tuple[str, int], dict]) -> bool:
    """Whether every ``(criterion, seed)`` of the study has a result."""
    return all((c, s) in cells for c in cfg.criteria for s in range(cfg.seeds))


def summarise(cfg: StudyConfig, base: dict, cells: dict[tuple[str, int], dict], meta: dict) -> dict:
    """The ``study.json`` document: per row and column the per-seed top-1, mean ± SE, p-values."""
    return {
        "format": STUDY_FORMAT,
        "config": config_record(cfg),
        "columns": study_columns(cfg),
        "rows": summary_rows(cfg, base, cells),
        "mcnemar": MCNEMAR_NOTE,
        "complete": all_done(cfg, cells),
        **meta,
    }


def row_seeds(row: dict, col: str) -> list[int]:
    """The seeds of a row's values in ``col``: its ``seeds_done`` (the base: 0 … n−1)."""
    values = row[col].get("values", [])
    seeds = row.get("seeds_done")
    return list(seeds) if seeds is not None and len(seeds) == len(values) else list(range(len(values)))


def seed_differences(row: dict, control: dict, col: str) -> list[tuple[int, float]]:
    """``[(seed, row − control)]`` in ``col`` over the seeds both have, by seed."""
    ours = dict(zip(row_seeds(row, col), row[col].get("values", [])))
    theirs = dict(zip(row_seeds(control, col), control[col].get("values", [])))
    return [(s, ours[s] - theirs[s]) for s in sorted(ours.keys() & theirs.keys())]
