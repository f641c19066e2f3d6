"""Snapshots: the canonical checkpoint of a run at chosen points of its training.

A recipe's ``run.snapshot_epochs = [1, 3]`` (``sslboost pretrain --snapshot-epochs 1,3``,
``sslboost continue --set run.snapshot_epochs=[1,3]``) writes, when the run has taken exactly
``e × steps_per_epoch`` optimiser steps, ``snapshots/epoch-<e>/sslboost.safetensors`` (the model
at that step, with the metadata of the final checkpoint: epoch, steps, recipe, command) and
beside it ``snapshot.json`` (step, epochs, images seen, training seconds so far), written last:
a folder holding it is a finished snapshot. The points are epochs of this run (not counting the
base's), strictly increasing, each on a whole optimiser step (to the four decimals of an epoch
count, :func:`~e2mc_cli.training.outputs.epoch_text`) and none beyond the run's
``run.epochs``; anything else is one :class:`~e2mc_cli.errors.UserError` before the run starts.

Resumable: the training state is saved at each point before its snapshot is written, so a run
stopped at any moment resumes at or after the point; a resume that starts on a point whose
snapshot is missing writes it first (the state it loads is that model), and a snapshot already
written is never written again. The run's ``summary.json`` lists the snapshots on disk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from e2mc_cli import distributed as D
from e2mc_cli.errors import UserError
from e2mc_cli.io import write_json_atomic
from e2mc_cli.run_layout import CHECKPOINT_FILE, SNAPSHOTS_DIR
from e2mc_cli.training.outputs import epoch_text, save_model
from e2mc_cli.training.plan import RunPlan
from e2mc_cli.training.state import TrainState

SNAPSHOT_FORMAT = "sslboost-snapshot/1"
SNAPSHOT_INFO = "snapshot.json"


def parse_points(text: str | Sequence[float], what: str = "--epochs") -> list[float]:
    """``"1,3,10"`` (or a list) → ``[1, 3, 10]``: positive finite epoch counts, strictly increasing
    (whole numbers come back as ``int``); anything else is one :class:`UserError`."""
    items = str(text).split(",") if isinstance(text, str) else list(text)
    points: list[float] = []
    for item in (str(i).strip() for i in items):
        try:
            value = float(item)
        except ValueError:
            raise UserError(f"{what} {text}: {item!r} is not a number of epochs (e.g. 1,3,10)") from None
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{what} must be a positive number (fractions allowed), got {item}")
        if points and value <= points[-1]:
            raise UserError(f"{what} {text}: the epoch counts must be strictly increasing")
        points.append(int(value) if value.is_integer() else value)
    if not points:
        raise UserError(f"{what}: give at least one epoch count, e.g. 1,3,10")
    return points


def point_step(epochs: float, steps_per_epoch: int) -> int | None:
    """The optimiser step ``epochs × steps_per_epoch`` if it names a whole step (to the four
    decimals an epoch count is written with), else ``None``."""
    step = round(epochs * steps_per_epoch)
    return step if epoch_text(step / steps_per_epoch) == epoch_text(epochs) else None


def snapshot_steps(
    points: Sequence[float],
    steps_per_epoch: int,
    run_epochs: float,
    where: str = "recipe run.snapshot_epochs",
) -> tuple[int, ...]:
    """The optimiser steps of a run's ``run.snapshot_epochs``, checked (see the module docstring);
    ``where`` names the points in an error."""
    steps: list[int] = []
    for epochs in parse_points(list(points), where):
        if epochs > run_epochs:
            raise UserError(f"{where}: {epochs:g} is beyond the run, which trains {run_epochs:g} epochs")
        step = point_step(epochs, steps_per_epoch)
        if step is None or step == 0:
            low = max(math.floor(epochs * steps_per_epoch), 1)
            near = sorted({low, low + 1})
            hint = " or ".join(f"{epoch_text(k / steps_per_epoch)} ({k} steps)" for k in near)
            raise UserError(
                f"{where}: {epochs:g} epochs is {epochs * steps_per_epoch:g} optimiser steps "
                f"({steps_per_epoch} per epoch); a snapshot is taken on a whole step, e.g. {hint}"
            )
        steps.append(step)
    return tuple(steps)


def snapshot_dir(out: str | Path, epochs: float) -> Path:
    """``OUT/snapshots/epoch-<e>/``: where the snapshot of a run at ``e`` epochs lives."""
    return Path(out) / SNAPSHOTS_DIR / f"epoch-{epoch_text(epochs)}"


def snapshot_file(out: str | Path, epochs: float) -> Path:
    """The snapshot's canonical checkpoint, ``OUT/snapshots/epoch-<e>/sslboost.safetensors``."""
    return snapshot_dir(out, epochs) / CHECKPOINT_FILE


def read_snapshot(out: str | Path, epochs: float) -> dict | None:
    """The ``snapshot.json`` of a finished snapshot at ``epochs``, else ``None``."""
    info = snapshot_dir(out, epochs) / SNAPSHOT_INFO
    if not (info.is_file() and (info.parent / CHECKPOINT_FILE).is_file()):
        return None
    try:
        return json.loads(info.read_text())
    except ValueError:
        return None


def write_snapshot(plan: RunPlan, state: TrainState, wall: float) -> Path | None:
    """The snapshot of the run at its current step, if the step is one of its points and the
    snapshot is not on disk yet (rank 0; every process raises if it could not write it); its
    folder, else ``None``."""
    if state.step not in plan.snapshot_steps:
        return None
    return D.on_main_process(lambda: _write_snapshot(plan, state, wall))


def _write_snapshot(plan: RunPlan, state: TrainState, wall: float) -> Path | None:
    epochs = state.step / plan.steps_per_epoch
    folder = snapshot_dir(plan.out, epochs)
    if read_snapshot(plan.out, epochs) is not None:
        return None
    for p in folder.glob(".*.tmp"):  # what a killed write left
        p.unlink(missing_ok=True)
    save_model(plan, state, folder / CHECKPOINT_FILE)
    info = {
        "format": SNAPSHOT_FORMAT,
        "epochs": float(epoch_text(epochs)),
        "step": state.step,
        "steps_per_epoch": plan.steps_per_epoch,
        "epoch": float(epoch_text(plan.base_epoch + epochs)),
        "images_seen": state.step * plan.batch_size,
        "wall_time_s": round(wall, 3),
        "checkpoint": CHECKPOINT_FILE,
    }
    write_json_atomic(folder / SNAPSHOT_INFO, info)
    return folder


def snapshot_summary(plan: RunPlan) -> dict:
    """``{"snapshots": [...]}`` for ``summary.json``: each point of the run with its step and its
    checkpoint (relative to the run folder) once written; ``{}`` for a run without points."""
    if not plan.snapshot_steps:
        return {}
    rows = []
    for step in plan.snapshot_steps:
        epochs = step / plan.steps_per_epoch
        written = read_snapshot(plan.out, epochs) is not None
        path = snapshot_file(plan.out, epochs).relative_to(plan.out)
        rows.append(
            {"epochs": float(epoch_text(epochs)), "step": step, "path": str(path), "written": written}
        )
    return {"snapshots": rows}
