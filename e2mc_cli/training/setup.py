"""Run setup as a pure step: :func:`plan_run` turns :class:`~e2mc_cli.training.plan.TrainOptions`,
the recipe and the base into a :class:`~e2mc_cli.training.plan.RunPlan`.

A new run resolves its criterion (``--criterion``, the one in ``--recipe``, else ``e2mc``), its
folder (``--out``, else ``runs/<base>-<criterion>``), its data, its base checkpoint and its recipe;
a resumed run (``--resume``) reads all of them back from the training state in ``--out``. From
there both take the same path: batch and step counts, the view transform, the method and
criterion options. Every check happens here, before anything is built or written; the only side
effects are reading files (recipe, data listing, base, saved state).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from e2mc_cli.checkpoint import Checkpoint
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.errors import UserError
from e2mc_cli.methods import method_config, view_transform
from e2mc_cli.run_layout import RECIPE_FILE, STATE_FILE
from e2mc_cli.training import recipe as R
from e2mc_cli.training.data import EpochBatches, default_workers
from e2mc_cli.training.outputs import resume_command
from e2mc_cli.training.plan import RunPlan, TrainOptions
from e2mc_cli.training.progress import metrics_interval
from e2mc_cli.training.state import load_training_state
from e2mc_cli.zoo import builtin_data, resolve_base


def base_label(base: str | None, base_file: str | None) -> str:
    """A short name for a base, used in the default output folder ``runs/<label>-<criterion>``."""
    text = base or str(base_file or "base")
    if text.startswith("hf://"):
        return text[5:].split("@")[0].rstrip("/").split("/")[-1]
    p = Path(text)
    if p.suffix in (".safetensors", ".pth", ".tar", ".pt"):
        return p.parent.name if p.stem == "model" and p.parent.name else p.stem.split(".")[0]
    return p.name or text


def default_out(base: str | None, base_file: str | None, criterion: str) -> Path:
    """``runs/<base label>-<criterion>``."""
    return Path("runs") / f"{base_label(base, base_file)}-{criterion}"


def check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """``--out`` holds a run to resume (``--resume``), or is new, empty or to be replaced
    (``--overwrite``)."""
    if resume:
        if not (out / STATE_FILE).is_file():
            raise UserError(f"{out}: nothing to resume (no {STATE_FILE}); start a run without --resume")
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"--out {out}: folder exists and is not empty; continue that run with --resume, "
            "pick another --out, or replace it with --overwrite"
        )


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
    notes: tuple[str, ...]


def _start(
    out: Path,
    recipe: dict,
    info: dict,
    data: str,
    dataset: Dataset,
    *,
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


def _new_run(opts: TrainOptions) -> _Start:
    criterion = _criterion(opts)
    out = Path(opts.out) if opts.out else default_out(opts.base, opts.base_file, criterion)
    check_out(out, False, opts.overwrite)
    data = opts.data or builtin_data(opts.base)
    if not data:
        raise UserError("--data is required: an ImageFolder root or a built-in dataset (fmnist)")
    dataset = resolve_dataset(data, "train")
    if not opts.base and not opts.base_file:
        raise UserError(
            "no base: pass --base NAME | hf://ORG/NAME | PATH.safetensors, or --base-file PATH --method M"
        )
    ckpt = resolve_base(opts.base, base_file=opts.base_file, method=opts.method)
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
        sets=[*extra_sets, *opts.sets],
    )
    info = {
        "method": ckpt.method,
        "arch": ckpt.arch,
        "heads": ckpt.heads,
        "base": opts.base or str(opts.base_file),
        "base_epoch": _base_epoch(ckpt),
    }
    return _start(out, recipe, info, data, dataset, base=ckpt)


def _resumed_run(opts: TrainOptions) -> _Start:
    if opts.out is None:
        raise UserError("--resume needs --out DIR (the folder of the run to continue)")
    out = Path(opts.out)
    check_out(out, True, False)
    saved = load_training_state(out / STATE_FILE)
    recipe = saved["recipe"]
    criterion = recipe["criterion"]["name"]
    if opts.criterion and opts.criterion != criterion:
        raise UserError(f"{out}: this run trains with {criterion!r}, not {opts.criterion!r}")
    notes = ()
    overrides = [opts.recipe_file, opts.epochs, opts.batch_size, opts.lr, opts.image_size, *opts.sets]
    if any(o is not None for o in overrides):
        notes = (
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
    return _start(out, recipe, saved["model_info"], data, dataset, saved=saved, notes=notes)


class _Steps(NamedTuple):
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    end_step: int
    warmup_steps: int


def _steps(start: _Start, max_steps: int | None, world: int) -> _Steps:
    """Batch size and step counts; a batch the processes cannot share or a dataset smaller than
    one batch is an error, and so is resuming a run already past ``--max-steps``."""
    run, optim = start.recipe["run"], start.recipe["optim"]
    batch_size = int(run["batch_size"])
    if batch_size % world:
        raise UserError(f"batch size {batch_size} is not divisible by the {world} processes")
    n = len(start.dataset)
    per_epoch = EpochBatches.steps_per_epoch(n, batch_size)
    if per_epoch == 0:
        raise UserError(
            f"--data {start.data}: {n} images, fewer than one batch of {batch_size}; lower --batch-size"
        )
    total = max(1, round(float(run["epochs"]) * per_epoch))
    end = total if max_steps is None else min(total, max_steps)
    if start.start_step > end:
        raise UserError(f"{start.out}: the run is already at step {start.start_step}, past --max-steps")
    warmup = int(round(float(optim.get("warmup_epochs", 0)) * per_epoch))
    return _Steps(batch_size, per_epoch, total, end, warmup)


def plan_run(opts: TrainOptions, device: torch.device, rank: int = 0, world: int = 1) -> RunPlan:
    """The :class:`RunPlan` of ``opts`` for process ``rank`` of ``world`` on ``device``.

    Raises :class:`~e2mc_cli.errors.UserError` for anything wrong in the options, the recipe, the
    data, the base or the run folder.
    """
    start = _resumed_run(opts) if opts.resume else _new_run(opts)
    steps = _steps(start, opts.max_steps, world)
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
        log_every=metrics_interval(steps.end_step, recipe["run"]["log_every"]),
        checkpoint_every=int(recipe["run"]["checkpoint_every"]),
        seed=int(recipe["run"]["seed"]),
        workers=default_workers() if opts.workers is None else max(int(opts.workers), 0),
        transform=view_transform(start.method_name, image_size, **views),
        method_options=method_config(start.method_name, recipe["method"], recipe["views"]),
        criterion_options={k: v for k, v in recipe["criterion"].items() if k != "name"},
        compile=opts.compile,
        command=shlex.join(["sslboost", *opts.argv]),
        resume_command=resume_command(opts.argv),
    )
