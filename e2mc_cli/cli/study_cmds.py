"""``sslboost study`` and ``sslboost pretrain``."""

from __future__ import annotations

import shlex
import sys

import typer
from rich.markup import escape

from e2mc_cli.cli.app import app, console, err_console
from e2mc_cli.cli.options import (
    DATA_ENV,
    ENVIRONMENT,
    augment_option,
    base_option,
    decode_option,
    device_option,
    epochs_option,
    log_option,
    precision_option,
    reads_environment,
    without_secrets,
    workers_option,
)
from e2mc_cli.cli.train_cmds import run_and_report
from e2mc_cli.trackers import Trackers


def command_line(name: str) -> str:
    """The command line of ``sslboost NAME`` as typed (secrets removed), else ``sslboost NAME``."""
    if sys.argv[1:2] == [name]:
        return shlex.join(["sslboost", *without_secrets(sys.argv[1:])])
    return f"sslboost {name}"


def report_unfinished(result) -> None:
    """The cells a study could not run, and how to resume an interrupted one (on stderr)."""
    for cell, why in result.cannot_run.items():
        err_console.print(
            f"warning: {escape(cell)} cannot run: {escape(why)}", highlight=False, soft_wrap=True
        )
    if result.busy:
        err_console.print(
            f"note: {len(result.busy)} cell(s) being run by another process, skipped: "
            f"{escape(', '.join(result.busy))}; run the same command once they finish for the full tables",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    if result.status == "interrupted":
        err_console.print("interrupted: run the same command again to resume", highlight=False)


@app.command()
@reads_environment(*ENVIRONMENT)
def study(
    base: str = base_option(..., help="Base to study: a registry name (e.g. fmnist-vicreg) or a file."),
    criteria: str = typer.Option(
        ",".join(("continued", "e2mc", "vcreg", "uniformity", "mmcr", "vne", "logdet", "simmer")),
        "--criteria",
        help="Comma-separated criteria; `continued` (base loss only) is the control of the p-values.",
    ),
    seeds: int = typer.Option(
        3, "--seeds", min=1, help="Seeds per criterion (training data order and label subset)."
    ),
    out: str = typer.Option(
        ..., "--out", help="Study folder (cells/, base/, study.json, study.md, study.png)."
    ),
    data: str = typer.Option(
        None, "--data", help="Dataset (default: the one a built-in base was trained on)."
    ),
    epochs: str = typer.Option(
        None,
        "--epochs",
        help="Epochs of continued pre-training (default: the recipe's; fractions allowed), or a list "
        "(1,3,10): one run per cell to the largest, each point evaluated from its snapshot.",
    ),
    labels: str = typer.Option("1%,10%,100%", "--labels", help="Label fractions of the linear probe."),
    knn: bool = typer.Option(True, "--knn/--no-knn", help="Also evaluate with kNN (k = 20, all labels)."),
    probe_mode: str = typer.Option(
        "cached",
        "--probe-mode",
        help="Linear probe: cached (features once) or standard (the paper's augmented crops every epoch).",
    ),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Override run.batch_size."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop each training run after N steps."),
    sets: list[str] = typer.Option(
        None,
        "--set",
        help="Override a recipe key (section.key=value), or for one criterion only "
        "(e2mc:criterion.beta=100). Repeatable.",
    ),
    holdout: int = typer.Option(
        0,
        "--holdout",
        min=0,
        help="Evaluate on N training images held out (a validation split for tuning), not on the test split.",
    ),
    eval_epochs: int = typer.Option(
        None,
        "--eval-epochs",
        min=1,
        help="Linear-probe epochs, run exactly (default: the protocol's, see `sslboost eval --help`).",
    ),
    image_size: int = typer.Option(
        None, "--image-size", min=8, help="Image size of training and evaluation (default: recipe / data)."
    ),
    workers: int = workers_option(
        "Data-loading processes of each training run (default: chosen for the data and machine)."
    ),
    augment: str = augment_option(),
    device: str = device_option(),
) -> None:
    """Continue a base with each criterion and seed, evaluate, and tabulate with significance.

    Finished cells (DIR/cells/<criterion>-seed<k>/result.json) are skipped: run the same command
    again to resume an interrupted study. With a list of --epochs, each point of each cell has its
    own result (DIR/cells/<cell>/epoch-<e>/result.json) and study.png draws top-1 against epochs.

    Example:

        sslboost study --base fmnist-vicreg --criteria continued,e2mc --seeds 3 --out studies/vicreg

        sslboost study --base fmnist-vicreg --criteria continued,e2mc --epochs 1,3,10 --out fig4
    """
    from e2mc_cli.cli.tables import study_table
    from e2mc_cli.study import StudyConfig, run_study

    cfg = StudyConfig(
        base=base, out=out, criteria=criteria, seeds=seeds, labels=labels, knn=knn, data=data, epochs=epochs,
        batch_size=batch_size, max_steps=max_steps, sets=list(sets or []), eval_epochs=eval_epochs,
        image_size=image_size, workers=workers, augment=augment, device=device, holdout=holdout,
        probe_mode=probe_mode,
    )  # fmt: skip

    def log(msg: str) -> None:
        console.print(escape(msg), highlight=False, soft_wrap=True)

    result = run_study(cfg, log=log, command=command_line("study"))
    for point in result.study.get("points", [result.study]):
        if "epochs" in point:
            console.print(f"after {point['epochs']:g} epochs of continued pre-training:", highlight=False)
        console.print(study_table({"columns": result.study["columns"], "rows": point["rows"]}, base))
    console.print(
        f"{len(result.trained)} cell(s) run, {len(result.skipped)} already finished; "
        f"wrote {escape(out)}/study.json, study.md, study.png",
        highlight=False,
        soft_wrap=True,
    )
    report_unfinished(result)


@app.command()
@reads_environment(*DATA_ENV)
def pretrain(
    recipe: str = typer.Option(
        ...,
        "--recipe",
        help="A recipe with a \\[model] section: fmnist-vicreg, fmnist-swav, fmnist-simsiam, or a file.",
    ),
    data: str = typer.Option("fmnist", "--data", help="ImageFolder root or a built-in dataset."),
    out: str = typer.Option(None, "--out", help="Run folder (default runs/<recipe>)."),
    epochs: float = epochs_option(),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Override run.batch_size."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Override optim.lr."),
    sets: list[str] = typer.Option(
        None, "--set", help="Override a recipe key (section.key=value). Repeatable."
    ),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop after N optimiser steps."),
    snapshot_epochs: str = typer.Option(
        None,
        "--snapshot-epochs",
        help="Also save the model at these epochs of the run (1,3: snapshots/epoch-1/, epoch-3/).",
    ),
    workers: int = workers_option(
        "Data-loading worker processes (default: the usable CPU cores, one left to the training process)."
    ),
    precision: str = precision_option(),
    augment: str = augment_option(),
    decode: str = decode_option(),
    device: str = device_option(),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the outputs of an earlier run in --out."
    ),
    log: list[str] = log_option(),
) -> None:
    """Pre-train a model from scratch (random initial weights) with a method's own loss.

    The recipe's \\[model] section gives the backbone and head sizes; everything else is the
    continued pre-training loop of `sslboost continue` (checkpoints, --resume, metrics).

    Example:

        sslboost pretrain --recipe fmnist-vicreg --epochs 0.5 --out runs/vicreg-scratch --log csv
    """
    from e2mc_cli.pretrain import pretrain_options
    from e2mc_cli.training.snapshots import parse_points

    points = None if snapshot_epochs is None else parse_points(snapshot_epochs, "--snapshot-epochs")
    opts, path, spec = pretrain_options(
        recipe,
        out,
        resume=resume,
        sets=list(sets or []),
        data=data,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_steps=max_steps,
        snapshot_epochs=points,
        workers=workers,
        precision=precision,
        augment=augment,
        decode=decode,
        overwrite=overwrite,
        device=device,
        argv=sys.argv[1:] if sys.argv[1:2] == ["pretrain"] else ["pretrain", "--recipe", recipe],
    )
    console.print(
        f"pre-training a {spec.arch} {spec.method} model from scratch ({escape(str(path.name))}, "
        f"heads {spec.heads}) on {escape(data)}",
        highlight=False,
        soft_wrap=True,
    )
    with Trackers(log) as trackers:
        run_and_report(opts, trackers)
