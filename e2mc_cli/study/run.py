"""``run_study``: every missing cell of a study, then its outputs (``study.json``, ``study.md``,
``study.png``) from what is on disk; with a list of ``--epochs``, every missing point
(:mod:`~e2mc_cli.study.points`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from e2mc_cli.errors import UserError
from e2mc_cli.io import write_json_atomic, write_text_atomic
from e2mc_cli.study.cells import Log, StudyInterrupted, cell_name, collect, quiet, run_base, run_cell
from e2mc_cli.study.config import (
    StudyConfig,
    check_config,
    check_points,
    check_sets,
    default_data,
    epoch_points,
)
from e2mc_cli.study.locks import claimed, waiting_for
from e2mc_cli.study.points import collect_points, run_point_cell, summarise_points
from e2mc_cli.study.render import render_markdown, render_png
from e2mc_cli.study.render_points import render_points_markdown, render_points_png
from e2mc_cli.study.summary import summarise
from e2mc_cli.zoo import resolve_base


def write_outputs(cfg: StudyConfig, base: dict, meta: dict) -> dict:
    """Write ``study.json``, ``study.md`` and ``study.png`` from what is on disk."""
    out = Path(cfg.out)
    if epoch_points(cfg):
        study = summarise_points(cfg, base, collect_points(cfg), meta)
        write_json_atomic(out / "study.json", study)
        write_text_atomic(out / "study.md", render_points_markdown(study))
        render_points_png(study, out / "study.png")
        return study
    study = summarise(cfg, base, collect(cfg), meta)
    write_json_atomic(out / "study.json", study)
    write_text_atomic(out / "study.md", render_markdown(study))
    render_png(study, out / "study.png")
    return study


@dataclass
class StudyRun:
    """What one invocation of a study did, and the study document it wrote last."""

    study: dict
    trained: list[str]
    skipped: list[str]
    status: str  # "complete", "interrupted" or "incomplete" (cells left to other processes)
    cannot_run: dict[str, str] = field(default_factory=dict)  # cell name → reason
    busy: list[str] = field(default_factory=list)  # cells another process was running


def run_study(cfg: StudyConfig, *, log: Log = quiet, command: str = "") -> StudyRun:
    """Run every missing cell, then write the outputs (see :mod:`e2mc_cli.study`)."""
    cfg = check_config(cfg)
    data = default_data(cfg.base, cfg.data)
    recipes = check_sets(cfg, resolve_base(cfg.base).method)  # fail early on a bad base or --set
    check_points(cfg, recipes, data)
    run_one = run_point_cell if epoch_points(cfg) else run_cell
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with waiting_for(out, "base", log):  # one process evaluates the base, the others read it
        base = run_base(cfg, data, log)
    trained, skipped, busy = [], [], []
    cannot_run: dict[str, str] = {}
    status = "complete"

    def outputs() -> dict:
        meta = {
            "data": data,
            "cannot_run": dict(cannot_run),
            "command": command or "sslboost study",
            "wall_time_s_this_run": round(time.perf_counter() - started, 1),
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return write_outputs(cfg, base, meta)

    try:
        for seed in range(cfg.seeds):
            for crit in cfg.criteria:
                name, t = cell_name(crit, seed), time.perf_counter()
                with claimed(out, name) as mine:
                    if not mine:  # another process is running it: its figures join when it is done
                        busy.append(name)
                        log(f"{name}: being run by another process; skipped")
                        continue
                    try:
                        _, now = run_one(cfg, data, crit, seed, log)
                    except UserError as exc:  # this criterion cannot run with this base: say why, go on
                        cannot_run[name] = str(exc)
                        log(f"{name}: cannot run: {exc}")
                        continue
                (trained if now else skipped).append(name)
                if now:
                    log(f"{name}: done in {time.perf_counter() - t:.0f} s")
                    outputs()  # the tables so far, after every new cell
    except StudyInterrupted as exc:
        log(f"{exc}; run the same command again to resume")
        status = "interrupted"
    if busy and status == "complete":
        status = "incomplete"
    return StudyRun(outputs(), trained, skipped, status, cannot_run, busy)
