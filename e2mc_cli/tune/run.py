"""``run_tune``: run the stages of a tuning (:mod:`e2mc_cli.tune.plan`) cell by cell, and write
``tuning.json`` and ``tuning.md`` after every new trial or control.

A trial is one study cell of the criterion (:func:`e2mc_cli.study.cells.run_cell`) in
``DIR/trials/<slug>/``; the control of a learning rate is the ``continued`` cell at that rate in
``DIR/controls/lr-<x>/``, shared by every trial at that rate. A finished cell is read back, so
a second invocation trains nothing, and an interrupted one resumes. A run whose loss became
non-finite is recorded in its folder (``failed.json``: it is not trained again) and has no Δ; a
cell that cannot run with this base (:class:`~e2mc_cli.errors.UserError` from its run) is
reported and tried again next time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from e2mc_cli.data.datasets import check_validation_holdout
from e2mc_cli.errors import UserError
from e2mc_cli.io import write_json_atomic, write_text_atomic
from e2mc_cli.study.cells import Log, StudyInterrupted, quiet, run_cell
from e2mc_cli.study.config import CONTROL, default_data
from e2mc_cli.study.locks import claimed, waiting_for
from e2mc_cli.training.state import NonFiniteLoss
from e2mc_cli.tune.config import (
    Start,
    TuneConfig,
    check_tune,
    control_key,
    control_sets,
    start_point,
    study_config,
    trial_key,
    trial_sets,
)
from e2mc_cli.tune.document import (
    CANNOT_RUN,
    DIVERGED,
    DONE,
    Outcome,
    stage_choice,
    stage_rows,
    summarise_tuning,
)
from e2mc_cli.tune.plan import Point, lr_grid, ratio_grid, scale_grid
from e2mc_cli.tune.render import render_tuning_markdown
from e2mc_cli.zoo import resolve_base

FAILED_FILE = "failed.json"
TUNING_JSON = "tuning.json"
TUNING_MD = "tuning.md"
# the settings that change what a finished cell measured: a tuning folder keeps them
RESULT_KEYS = (
    "base", "criterion", "epochs", "holdout", "labels", "seed", "knn", "data", "sets", "batch_size",
    "max_steps", "eval_epochs", "image_size",
)  # fmt: skip


def check_same_tuning(cfg: TuneConfig) -> None:
    """A ``tuning.json`` already in ``DIR`` was made with the settings of this one (the grids may
    differ: their trials are reused); else one :class:`UserError`, so that no finished cell is
    read back under settings it was not made with."""
    path = Path(cfg.out) / TUNING_JSON
    if not path.is_file():
        return
    theirs = json.loads(path.read_text()).get("config", {})
    ours = vars(cfg)
    for key in RESULT_KEYS:
        if key in theirs and theirs[key] != ours[key]:
            raise UserError(
                f"{cfg.out}: a tuning with {key} = {theirs[key]!r}, not {ours[key]!r}; "
                "run it with its own settings, or choose another --out"
            )


def alpha_note(cfg: TuneConfig) -> str | None:
    """A note when the ``tuning.json`` already in ``DIR`` chose its stages at another ``--alpha``
    (one written before the option chose at 1): the stages are chosen again at this one, so a
    stage may keep another point and the later stages run other trials."""
    path = Path(cfg.out) / TUNING_JSON
    if not path.is_file():
        return None
    theirs = json.loads(path.read_text()).get("config", {}).get("alpha", 1.0)
    if theirs == cfg.alpha:
        return None
    return (
        f"note: {cfg.out} chose its stages at --alpha {theirs:g}; they are chosen again at "
        f"--alpha {cfg.alpha:g}, so a stage may keep another point and later stages run other trials"
    )


@dataclass
class Tuner:
    """One invocation of a tuning: the cells read or run so far and the stages planned so far."""

    cfg: TuneConfig
    data: str
    start: Start
    log: Log = quiet
    command: str = ""
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    stages: list[tuple[str, list[Point]]] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def cell(self, key: str, criterion: str, sets: list[str]) -> Outcome:
        """The cell in ``DIR/<key>``: read back, or run now (then the outputs are written)."""
        if key in self.outcomes:
            return self.outcomes[key]
        folder = Path(self.cfg.out) / key
        marker, now, t = folder / FAILED_FILE, False, time.perf_counter()
        if marker.is_file():
            doc = json.loads(marker.read_text())
            outcome = Outcome(None, doc["status"], doc["reason"])
        else:
            study = study_config(self.cfg, folder, [criterion], [*self.cfg.sets, *sets])
            try:
                result, now = run_cell(study, self.data, criterion, self.cfg.seed, _prefixed(self.log, key))
                outcome = Outcome(result)
            except NonFiniteLoss as exc:  # too large a coefficient or rate: a result, not a fault
                outcome, now = Outcome(None, DIVERGED, str(exc)), True
                write_json_atomic(marker, {"status": outcome.status, "reason": outcome.reason})
            except UserError as exc:  # this criterion cannot run with this base: say why, go on
                outcome = Outcome(None, CANNOT_RUN, str(exc))
        self.outcomes[key] = outcome
        if now or outcome.status != CANNOT_RUN:  # a cell that cannot run is neither
            (self.trained if now else self.skipped).append(key)
        if outcome.status != DONE:
            self.log(f"{key}: {outcome.status}: {outcome.reason}")
        if now:
            self.log(f"{key}: done in {time.perf_counter() - t:.0f} s")
            self.write()  # the tables so far, after every new cell
        return outcome

    def run_stage(self, name: str, grid: list[Point]) -> Point | None:
        """Every point of ``grid`` (its control first); the point chosen in it (``None``: no Δ).

        A cell another process on this folder is running is skipped; once every other cell of the
        stage is done, this process waits for it and reads it back (or runs it, if that process
        ended without finishing it), so that both go on to the same next stage."""
        self.stages.append((name, grid))
        self.write()
        cells: dict[str, tuple[str, list[str]]] = {}
        for point in grid:
            cells.setdefault(control_key(point.lr), (CONTROL, control_sets(point.lr)))
            cells.setdefault(trial_key(point), (self.cfg.criterion, trial_sets(self.cfg.criterion, point)))
        busy = []
        for key, (criterion, sets) in cells.items():
            with claimed(self.cfg.out, key) as mine:
                if mine:
                    self.cell(key, criterion, sets)
                else:
                    busy.append(key)
                    self.log(f"{key}: being run by another process; the other cells first")
        for key in busy:
            with waiting_for(self.cfg.out, key, self.log):
                self.cell(key, *cells[key])
        chosen = stage_choice(self.cfg, grid, stage_rows(self.cfg, grid, self.outcomes))
        return None if chosen is None else grid[chosen]

    def run_stages(self) -> str:
        """Scale, ratio (two weights or more), lr; each grid from the previous stage's choice.
        ``complete``, or ``stopped`` when a stage has no point with a Δ."""
        cfg, start = self.cfg, self.start
        best = self.run_stage("scale", scale_grid(start.weights, start.lr, cfg.scales))
        if best is not None and len(best.weights) > 1:
            best = self.run_stage("ratio", ratio_grid(best, cfg.ratios))
        if best is not None:
            best = self.run_stage("lr", lr_grid(best, cfg.lr_scales))
        return "complete" if best is not None else "stopped"

    def write(self, status: str = "running") -> dict:
        """``tuning.json`` and ``tuning.md`` from the cells read or run so far."""
        meta = {
            "data": self.data,
            "status": status,
            "command": self.command or "sslboost tune",
            "wall_time_s_this_run": round(time.perf_counter() - self.started, 1),
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        doc = summarise_tuning(self.cfg, self.start, self.stages, self.outcomes, meta)
        out = Path(self.cfg.out)
        write_json_atomic(out / TUNING_JSON, doc)
        write_text_atomic(out / TUNING_MD, render_tuning_markdown(doc))
        return doc


def _prefixed(log: Log, key: str) -> Callable[[str], None]:
    """``log`` with the study cell's name (``e2mc-seed0: training``) replaced by the tuning's
    (``trials/<slug>: training``); indented detail lines pass as they are."""

    def say(msg: str) -> None:
        log(msg if msg.startswith(" ") else f"{key}: {msg.split(': ', 1)[-1]}")

    return say


@dataclass
class TuneRun:
    """What one invocation did: the document it wrote last, the cells run now and read back."""

    tuning: dict
    trained: list[str]
    skipped: list[str]
    status: str  # "complete", "interrupted", or "stopped" (a stage without any Δ)


def run_tune(cfg: TuneConfig, *, log: Log = quiet, command: str = "") -> TuneRun:
    """Check everything, then run every missing cell, stage by stage (see the module docstring)."""
    cfg = check_tune(cfg)
    data = default_data(cfg.base, cfg.data)
    check_validation_holdout(cfg.holdout, data, "tuning")  # leaves images to train the probe on
    start = start_point(cfg, resolve_base(cfg.base).method)  # a bad --set fails here, before any run
    check_same_tuning(cfg)
    note = alpha_note(cfg)
    if note:
        log(note)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    tuner = Tuner(cfg, data, start, log, command)
    try:
        status = tuner.run_stages()
    except StudyInterrupted as exc:
        log(f"{exc}; run the same command again to resume")
        status = "interrupted"
    return TuneRun(tuner.write(status), tuner.trained, tuner.skipped, status)
