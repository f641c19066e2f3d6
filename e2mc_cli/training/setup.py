"""Run setup as a pure step: :func:`plan_run` turns :class:`~e2mc_cli.training.plan.TrainOptions`,
the recipe and the base into a :class:`~e2mc_cli.training.plan.RunPlan`.

A new run resolves its criterion (``--criterion``, the one in ``--recipe``, else ``e2mc``), its
folder (``--out``, else ``runs/<base>-<criterion>``), its data, its base checkpoint and its recipe;
a resumed run (``--resume``) reads all of them back from the training state in ``--out``, its stop
point (``--max-steps``) and its command line included, unless a new ``--max-steps`` is given. A
``--base`` on a resume's command line must be the run's own base (a note says it is not read
again); ``--overwrite`` contradicts it. A run stopped before its first checkpoint is started again
(without ``--overwrite``, or from its base on ``--resume``). ``--overwrite`` never deletes the base
it starts from (the folder's rules: :mod:`e2mc_cli.training.run_folder`). From there both take the
same path: batch and step counts, the view pipeline (``--augment``; a resume keeps the run's own,
and another mode on its command line is an error), the method and criterion options. Every check
happens here, before anything is built or written; the only side effects are reading files
(recipe, data listing, base, saved state) and removing the temporary files of a killed run that
``--resume`` cannot continue.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from e2mc_cli.checkpoint import Checkpoint
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.errors import UserError
from e2mc_cli.methods import method_config, view_pipeline
from e2mc_cli.precision import check_precision, resolve_precision
from e2mc_cli.run_layout import RECIPE_FILE, STATE_FILE
from e2mc_cli.training import recipe as R
from e2mc_cli.training.data import DEFAULT_AUGMENT, default_workers, steps_per_epoch
from e2mc_cli.training.outputs import never_checkpointed, remove_temporaries, resume_command
from e2mc_cli.training.plan import RunPlan, TrainOptions
from e2mc_cli.training.progress import metrics_interval
from e2mc_cli.training.run_folder import check_base_kept, check_out, default_out, resume_base_notes
from e2mc_cli.training.snapshots import snapshot_steps
from e2mc_cli.training.state import load_training_state
from e2mc_cli.zoo import builtin_data, resolve_base


class _Start(NamedTuple):
    """What a new run resolves and a resumed run reads back: the only part where they differ."""

    out: Path
    recipe: dict
    method_name: str
    arch: str
    heads: dict
    base: Checkpoint | None
    base_name: str
    base_epoch: float
    saved: dict | None
    start_step: int
    data: str
    dataset: Dataset
    max_steps: int | None
    command: str
    notes: tuple[str, ...]


def _start(
    out: Path,
    recipe: dict,
    info: dict,
    data: str,
    dataset: Dataset,
    *,
    max_steps: int | None,
    command: str,
    base: Checkpoint | None = None,
    saved: dict | None = None,
    notes: tuple[str, ...] = (),
) -> _Start:
    """A :class:`_Start` from the model's description ``info`` (method, arch, heads, base, base_epoch)."""
    return _Start(
        out=out,
        recipe=recipe,
        method_name=info["method"],
        arch=info["arch"],
        heads=info["heads"],
        base=base,
        base_name=info["base"],
        base_epoch=info["base_epoch"],
        saved=saved,
        start_step=int(saved["step"]) if saved is not None else 0,
        data=data,
        dataset=dataset,
        max_steps=max_steps,
        command=command,
        notes=notes,
    )


def _criterion(opts: TrainOptions) -> str:
    """The criterion of a new run: ``--criterion``, else the one in ``--recipe``, else ``e2mc``."""
    chosen = opts.criterion
    if opts.recipe_file is not None:
        in_file = R.load_toml(Path(opts.recipe_file)).get("criterion", {}).get("name")
        if chosen and in_file and chosen != in_file:
            raise UserError(f"--recipe {opts.recipe_file} trains with {in_file!r}, not --criterion {chosen}")
        chosen = chosen or in_file
    chosen = chosen or "e2mc"
    R.check_criterion(chosen)
    return chosen


def _base_epoch(ckpt: Checkpoint) -> float:
    try:
        return float(ckpt.metadata.get("epoch", "0") or 0)
    except ValueError:
        return 0.0


def snapshot_sets(points: list[float] | None) -> list[str]:
    """``TrainOptions.snapshot_epochs`` as a recipe override (``run.snapshot_epochs=[1, 3]``)."""
    return [] if points is None else [f"run.snapshot_epochs={json.dumps(list(points))}"]


def _new_run(opts: TrainOptions) -> _Start:
    criterion = _criterion(opts)
    out = Path(opts.out) if opts.out else default_out(opts.base, opts.base_file, criterion)
    check_out(out, opts.overwrite)
    check_base_kept(out, [opts.base, opts.base_file])
    data = opts.data or builtin_data(opts.base)
    if not data:
        raise UserError("--data is required: an ImageFolder root or a built-in dataset (fmnist)")
    dataset = resolve_dataset(data, "train")
    if not opts.base and not opts.base_file:
        raise UserError(
            "no base: pass --base NAME | hf://ORG/NAME | PATH.safetensors, or --base-file PATH --method M"
        )
    ckpt = resolve_base(
        opts.base, base_file=opts.base_file, method=opts.method, allow_new_heads=opts.allow_new_heads
    )
    recipe_file, extra_sets = opts.recipe_file, []
    if recipe_file is None:
        recipe_file, extra_sets = R.base_recipe_file(opts.base, criterion)
    recipe = R.resolve_recipe(
        ckpt.method,
        criterion,
        recipe_file=recipe_file,
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        lr=opts.lr,
        image_size=opts.image_size,
        sets=[*extra_sets, *opts.sets, *snapshot_sets(opts.snapshot_epochs)],
    )
    info = {
        "method": ckpt.method,
        "arch": ckpt.arch,
        "heads": ckpt.heads,
        "base": opts.base or str(opts.base_file),
        "base_epoch": _base_epoch(ckpt),
    }
    command = shlex.join(["sslboost", *(a for a in opts.argv if a != "--resume")])
    return _start(out, recipe, info, data, dataset, max_steps=opts.max_steps, command=command, base=ckpt)


def _restart(opts: TrainOptions, out: Path) -> _Start:
    """``--resume`` where there is no training state: a run stopped before its first checkpoint is
    started again from its base (a UserError when the command does not name it, after removing the
    orphaned temporary files); anything else has nothing to resume."""
    if not (out.is_dir() and any(out.iterdir()) and never_checkpointed(out)):
        raise UserError(f"{out}: nothing to resume (no {STATE_FILE}); start a run without --resume")
    if opts.base or opts.base_file:
        start = _new_run(opts)
        note = f"note: {out} stopped before its first checkpoint; starting the run again from its base"
        return start._replace(notes=(*start.notes, note))
    remove_temporaries(out)
    raise UserError(
        f"{out}: the run stopped before its first checkpoint, there is nothing to resume; start it "
        "again with the command that started it (without --resume)"
    )


def _resumed_run(opts: TrainOptions) -> _Start:
    if opts.out is None:
        raise UserError("--resume needs --out DIR (the folder of the run to continue)")
    out = Path(opts.out)
    if opts.overwrite:
        raise UserError(f"--resume continues the run in {out}, --overwrite replaces it: pass one of them")
    if not (out / STATE_FILE).is_file():
        return _restart(opts, out)
    saved = load_training_state(out / STATE_FILE)
    recipe = saved["recipe"]
    criterion = recipe["criterion"]["name"]
    if opts.criterion and opts.criterion != criterion:
        raise UserError(f"{out}: this run trains with {criterion!r}, not {opts.criterion!r}")
    notes = resume_base_notes(opts.base, opts.base_file, out, saved["model_info"]["base"])
    overrides = [opts.recipe_file, opts.epochs, opts.batch_size, opts.lr, opts.image_size, *opts.sets]
    overrides.append(opts.snapshot_epochs)
    if any(o is not None for o in overrides):
        notes += (
            f"note: resuming with the recipe saved in {out / RECIPE_FILE}; "
            "recipe options on the command line are ignored",
        )
    data = opts.data or saved.get("data")
    dataset = resolve_dataset(data, "train")
    if len(dataset) != saved.get("n_items"):
        raise UserError(
            f"--data {data}: {len(dataset)} images, but the run started with "
            f"{saved.get('n_items')}; resume with the same data"
        )
    max_steps = opts.max_steps if opts.max_steps is not None else saved.get("max_steps")
    command = saved.get("command") or shlex.join(["sslboost", *opts.argv])
    return _start(
        out, recipe, saved["model_info"], data, dataset, max_steps=max_steps, command=command, saved=saved,
        notes=notes,
    )  # fmt: skip


class _Steps(NamedTuple):
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    end_step: int
    warmup_steps: int
    snapshot_steps: tuple[int, ...]


def _steps(start: _Start, world: int, stop_at_snapshot: bool = False) -> _Steps:
    """Batch size and step counts (the snapshots' included); a batch the processes cannot share or
    a dataset smaller than one batch is an error, and so is resuming a run already past
    ``--max-steps`` or a snapshot point that is not a step of the run. ``stop_at_snapshot``: this
    invocation ends at the first snapshot point after the step it starts from (if there is one)."""
    run, optim = start.recipe["run"], start.recipe["optim"]
    batch_size = int(run["batch_size"])
    if batch_size % world:
        raise UserError(f"batch size {batch_size} is not divisible by the {world} processes")
    n = len(start.dataset)
    per_epoch = steps_per_epoch(n, batch_size)
    if per_epoch == 0:
        raise UserError(
            f"--data {start.data}: {n} images, fewer than one batch of {batch_size}; lower --batch-size"
        )
    total = max(1, round(float(run["epochs"]) * per_epoch))
    end = total if start.max_steps is None else min(total, start.max_steps)
    if start.start_step > end:
        raise UserError(f"{start.out}: the run is already at step {start.start_step}, past --max-steps")
    warmup = int(round(float(optim.get("warmup_epochs", 0)) * per_epoch))
    points = run.get("snapshot_epochs")
    points = () if points is None else snapshot_steps(points, per_epoch, float(run["epochs"]))
    if stop_at_snapshot:
        end = min([end, *(p for p in points if p > start.start_step)])
    return _Steps(batch_size, per_epoch, total, end, warmup, points)


def _stop_note(start: _Start, steps: _Steps, stop_at_snapshot: bool = False) -> str:
    """Where a resumed run stops, and why there."""
    if stop_at_snapshot and steps.end_step in steps.snapshot_steps and steps.end_step < steps.total_steps:
        why = "its next snapshot point"
    elif steps.end_step < steps.total_steps:
        why = f"--max-steps {start.max_steps}"
    else:
        why = "the end of its recipe"
    if start.start_step == steps.end_step:
        return (
            f"note: {start.out} is already at step {start.start_step}, its stop point ({why}); writing its "
            "final files again (a larger --max-steps trains further)"
        )
    return f"note: resuming {start.out} at step {start.start_step}; it stops at step {steps.end_step} ({why})"


def run_precision(opts: TrainOptions, start: _Start, device: torch.device) -> str:
    """The precision of a run (:mod:`e2mc_cli.precision`): a new run's ``--precision``, else its
    recipe's ``run.precision`` on CUDA and ``fp32`` elsewhere; a resumed run keeps the one it
    started with (a different ``--precision`` is a UserError). A run saved without one trained as
    a recipe without one does (``bf16`` on CUDA)."""
    if start.saved is None:
        return resolve_precision(opts.precision, start.recipe["run"]["precision"], device)
    kept = start.recipe["run"].get("precision") or resolve_precision(None, "bf16", device)
    if opts.precision is not None and check_precision(opts.precision) != kept:
        raise UserError(
            f"{start.out}: this run trains in {kept}, not --precision {opts.precision}; "
            "resume it without --precision, or start a new run with another --out"
        )
    return kept


def _augment(opts: TrainOptions, start: _Start) -> str:
    """Where the run's views are made: a new run's ``--augment`` (else
    :data:`~e2mc_cli.training.data.DEFAULT_AUGMENT`); a resumed run's saved mode, so that it goes on
    with the images it started with (a state saved without one was made by the per-image pipeline,
    ``cpu``). Another mode on a resume's command line is a UserError."""
    if start.saved is None:
        return opts.augment or DEFAULT_AUGMENT
    saved = str(start.saved.get("augment", "cpu"))
    if opts.augment is not None and opts.augment != saved:
        raise UserError(
            f"--augment {opts.augment}: {start.out} trains with --augment {saved}; resume it without "
            "--augment (or with the same one), or start a new run with another --out"
        )
    return saved


def _threads_note(saved: dict, device: torch.device) -> tuple[str, ...]:
    """A note when a CPU run resumes on another number of threads than it trained on: its sums
    are then split otherwise, and its weights no longer match an uninterrupted run's bit for bit."""
    before, now = saved.get("cpu_threads"), torch.get_num_threads()
    if device.type != "cpu" or before is None or int(before) == now:
        return ()
    return (
        f"note: this run trained on {before} CPU threads and resumes on {now}; from here its weights "
        f"differ from an uninterrupted run's by floating-point rounding (OMP_NUM_THREADS={before} "
        "resumes it bit for bit)",
    )


def plan_run(opts: TrainOptions, device: torch.device, rank: int = 0, world: int = 1) -> RunPlan:
    """The :class:`RunPlan` of ``opts`` for process ``rank`` of ``world`` on ``device``.

    Raises :class:`~e2mc_cli.errors.UserError` for anything wrong in the options, the recipe, the
    data, the base or the run folder.
    """
    start = _resumed_run(opts) if opts.resume else _new_run(opts)
    precision = run_precision(opts, start, device)  # recorded as the run's recipe run.precision
    start = start._replace(recipe={**start.recipe, "run": {**start.recipe["run"], "precision": precision}})
    steps = _steps(start, world, opts.stop_at_snapshot)
    if start.saved is not None:
        notes = (_stop_note(start, steps, opts.stop_at_snapshot), *_threads_note(start.saved, device))
        start = start._replace(notes=(*start.notes, *notes))
    recipe = start.recipe
    views = dict(recipe["views"])
    image_size = int(views.pop("image_size", 224))
    return RunPlan(
        **start._asdict(),
        **steps._asdict(),
        device=device,
        rank=rank,
        world=world,
        schedule=recipe["optim"].get("schedule", "cosine"),
        final_lr_ratio=float(recipe["optim"].get("final_lr_ratio", 0.0)),
        # from the whole run's length, so that a run stopped and resumed (--max-steps, a snapshot
        # point) logs at the same steps as one trained in one go
        log_every=metrics_interval(steps.total_steps, recipe["run"]["log_every"]),
        checkpoint_every=int(recipe["run"]["checkpoint_every"]),
        seed=int(recipe["run"]["seed"]),
        workers=default_workers() if opts.workers is None else max(int(opts.workers), 0),
        pipeline=view_pipeline(
            start.method_name,
            image_size,
            augment=_augment(opts, start),
            decode=opts.decode or "cpu",
            device=device,
            **views,
        ),
        method_options=method_config(start.method_name, recipe["method"], recipe["views"]),
        criterion_options={k: v for k, v in recipe["criterion"].items() if k != "name"},
        compile=opts.compile,
        precision=precision,
        resume_command=resume_command(opts.argv),
    )
