"""The files of a run folder that training writes, and only rank 0 writes them.

``recipe.toml`` (the resolved recipe), ``metrics.jsonl`` (one JSON line per logging step),
``checkpoints/last.pt`` (the training state, :mod:`e2mc_cli.training.state`), and at the end
``sslboost.safetensors`` (the canonical checkpoint) and ``summary.json`` (how the run ended); the
snapshots of ``run.snapshot_epochs`` go to ``snapshots/`` (:mod:`~e2mc_cli.training.snapshots`). A new
run into an existing folder (``--overwrite``, or a run stopped before its first checkpoint) first
removes these, the exported files and the evaluations; every start removes the temporary files a
killed process left behind.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from e2mc_cli import distributed as D
from e2mc_cli.checkpoint import save_checkpoint
from e2mc_cli.io import append_line, write_json_atomic, write_text_atomic
from e2mc_cli.run_layout import (
    CHECKPOINT_FILE,
    EXPORT_FILES,
    LEGACY_FILES,
    METRICS_FILE,
    RECIPE_FILE,
    SNAPSHOTS_DIR,
    STATE_FILE,
    SUMMARY_FILE,
    TRACKER_OUTPUTS,
    TRAINING_OUTPUTS,
)
from e2mc_cli.training import recipe as R
from e2mc_cli.training.plan import RunPlan
from e2mc_cli.training.state import TrainState

OUTPUTS = (*TRAINING_OUTPUTS, *EXPORT_FILES)


def resume_command(argv: list[str]) -> str:
    """The command that continues a run started by ``sslboost ARGV`` (``--resume``, no ``--overwrite``)."""
    args = [a for a in argv if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["sslboost", *args])


def epoch_text(value: float) -> str:
    """An epoch count as the checkpoint metadata writes it: ``101``, ``101.5``."""
    value = round(value, 4)
    return str(int(value)) if value == int(value) else str(value)


def earlier_outputs(out: Path) -> list[Path]:
    """What an earlier run left in ``out`` and a new run replaces: the training outputs (its
    snapshots included), the exported files and every ``eval*`` folder (evaluations of the earlier
    model)."""
    names = (*OUTPUTS, SNAPSHOTS_DIR, *LEGACY_FILES, *TRACKER_OUTPUTS)
    named = [out / name for name in names if (out / name).exists() or (out / name).is_symlink()]
    return named + sorted(p for p in out.glob("eval*") if p.is_dir() and not p.is_symlink())


def clear_outputs(out: Path) -> None:
    """Remove what an earlier run wrote into ``out`` (:func:`earlier_outputs`); other files stay."""
    for p in earlier_outputs(out):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def is_temporary(p: Path) -> bool:
    """A temporary file of an atomic write (``.<name>.<random>.tmp``)."""
    return p.name.startswith(".") and p.name.endswith(".tmp")


def remove_temporaries(out: Path) -> None:
    """Temporary files a killed process left behind (``.<name>.<random>.tmp``; never final files)."""
    for folder in (out, out / "checkpoints"):
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)


def never_checkpointed(out: Path) -> bool:
    """Whether the folder ``out`` holds only what a run writes before its first checkpoint (the
    recipe, the metrics, temporary files): a run stopped that early, which a new start replaces."""
    for p in out.iterdir():
        if is_temporary(p) or (p.name in (RECIPE_FILE, METRICS_FILE) and p.is_file()):
            continue
        if p.name != STATE_FILE.parts[0] or not p.is_dir() or not all(map(is_temporary, p.iterdir())):
            return False
    return True


def trim_metrics(path: Path, step: int) -> None:
    """Keep only the metric lines up to ``step`` (a killed run may have logged more); create the file."""
    if not path.exists():
        write_text_atomic(path, "")
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(rec.get("step", 0)) <= step:
            kept.append(json.dumps(rec))
    write_text_atomic(path, "".join(k + "\n" for k in kept))


def prepare_folder(plan: RunPlan) -> None:
    """The run folder before the first step: created (and cleared) for a new run, temporaries removed,
    the recipe written, the metrics trimmed to the starting step."""
    if not plan.resuming:
        plan.out.mkdir(parents=True, exist_ok=True)
        clear_outputs(plan.out)
    remove_temporaries(plan.out)
    write_text_atomic(plan.out / RECIPE_FILE, R.dumps(plan.recipe))
    trim_metrics(plan.out / METRICS_FILE, plan.start_step)


def append_metrics(out: Path, record: dict) -> None:
    """One line of ``metrics.jsonl``, flushed at once."""
    append_line(out / METRICS_FILE, json.dumps(record))


def run_summary(plan: RunPlan, state: TrainState, status: str, wall: float) -> dict:
    """``summary.json``: how the run ended, its size and speed, how its batches were loaded
    (``loader``: workers, prefetch_factor, pin_memory, augment) and the last loss terms."""
    images = state.step * plan.batch_size
    epochs_done = state.step / plan.steps_per_epoch
    return {
        "status": status,
        "base": plan.base_name,
        "method": plan.method_name,
        "criterion": plan.criterion_name,
        "data": plan.data,
        "steps": state.step,
        "epochs_trained": round(epochs_done, 6),
        "epoch": float(epoch_text(plan.base_epoch + epochs_done)),
        "images_seen": images,
        "skipped_files": int(getattr(plan.dataset, "skipped", 0)) + len(state.failed_indices),
        "wall_time_s": round(wall, 3),
        "images_per_s": round(images / wall, 3) if wall > 0 else None,
        "batch_size": plan.batch_size,
        "world_size": plan.world,
        "device": str(plan.device),
        "precision": plan.precision,
        "loader": plan.loader,
        "final_terms": state.last_terms,
    }


def save_model(plan: RunPlan, state: TrainState, path: Path) -> None:
    """The canonical checkpoint of the model at the current step (atomically), with the run's
    metadata: base, criterion, epoch (the base's plus this run's), recipe, command, steps."""
    save_checkpoint(
        path,
        state.model,
        base=plan.base_name,
        criterion=plan.criterion_name,
        epoch=epoch_text(plan.base_epoch + state.step / plan.steps_per_epoch),
        recipe=plan.recipe,
        command=plan.command,
        steps=str(state.step),
    )


def write_final(
    plan: RunPlan, state: TrainState, status: str, wall: float, extra: dict | None = None
) -> dict:
    """``sslboost.safetensors`` and ``summary.json`` (with ``extra`` added) for the current step
    (rank 0; every process raises if it could not write them); the summary."""
    summary = {**run_summary(plan, state, status, wall), **(extra or {})}

    def write() -> None:
        save_model(plan, state, plan.out / CHECKPOINT_FILE)
        write_json_atomic(plan.out / SUMMARY_FILE, summary)

    D.on_main_process(write)
    return summary
