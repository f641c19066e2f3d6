"""``sslboost tune``: a criterion's coefficients and learning rate chosen on a validation split."""

from __future__ import annotations

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from e2mc_cli.cli.app import app, console, err_console
from e2mc_cli.cli.options import (
    ENVIRONMENT,
    augment_option,
    base_option,
    device_option,
    epochs_option,
    reads_environment,
    workers_option,
)
from e2mc_cli.cli.study_cmds import command_line


def stage_table(doc: dict, stage: dict) -> Table:
    """One stage of a tuning document: per point the weights, lr, and on each label column the
    control's and the criterion's top-1, Δ and McNemar's p; the chosen row marked."""
    from e2mc_cli.tune.render import STAGE_TITLES, row_cells, stage_text, table_header

    title = escape(f"{STAGE_TITLES[stage['name']]}: {stage_text(doc, stage)}")
    table = Table(box=box.SIMPLE_HEAD, title=title, collapse_padding=True, pad_edge=False)
    for name in table_header(doc):  # "continued 1%" over two lines: narrower
        table.add_column(escape(name.replace(" ", "\n", 1)), justify="right", no_wrap=True)
    for row in stage["rows"]:
        table.add_row(*(escape(c) for c in row_cells(doc, stage, row)))
    return table


def print_whole(table: Table) -> None:
    """``table`` at its natural width even where the console is narrower (a log, a small
    terminal): a figure cut to ``82.…`` says nothing."""
    width = Measurement.get(console, console.options.update(max_width=1000), table).maximum
    if width <= console.width:
        console.print(table)
        return
    wide = Console(
        file=console.file, width=width, emoji=False, color_system=console.color_system,
        force_terminal=console.is_terminal,
    )  # fmt: skip
    wide.print(table)


def say(msg: str) -> None:
    console.print(escape(msg), highlight=False, soft_wrap=True)


def report(result, out: str) -> None:
    """The stage tables, the chosen values and the command that reads the test split."""
    from e2mc_cli.tune.render import values_text

    doc = result.tuning
    say(f"validation split: {doc['evaluated_on']}")
    for stage in doc["stages"]:
        print_whole(stage_table(doc, stage))
    trials = sum(k.startswith("trials/") for k in result.trained)
    say(
        f"{trials} trial(s) and {len(result.trained) - trials} control(s) run, {len(result.skipped)} "
        f"already finished; wrote {out}/tuning.json, tuning.md"
    )
    if doc["chosen"] is not None:
        chosen = doc["chosen"]
        say(f"chosen: {values_text(chosen['weights'], chosen['lr'])}")
        say("read the test split once with:")
        say(f"  {doc['test_command']}")
    elif result.status == "stopped":
        err_console.print("nothing chosen: no trial of the last stage has a Δ", highlight=False)
    if result.status == "interrupted":
        err_console.print("interrupted: run the same command again to resume", highlight=False)


# the options of `tune` that no other command has (kept here so that the command reads short)
CRITERION = typer.Option(
    "e2mc", "--criterion", help="The criterion whose coefficients are chosen (not `continued`)."
)
OUT = typer.Option(..., "--out", help="Tuning folder (trials/, controls/, tuning.json, tuning.md).")
HOLDOUT = typer.Option(
    10000, "--holdout", help="Training images held out to evaluate on (the test split is never read)."
)
SCALES = typer.Option(
    "1,0.1,0.01,0.001", "--scales", help="Stage 1: every coefficient times each, their ratio kept."
)
RATIOS = typer.Option(
    "0.1,10", "--ratios", help="Stage 2: the second … last coefficients times each, relative to the first."
)
LR_SCALES = typer.Option(
    "0.33,3", "--lr-scales", help="Stage 3: the learning rate times each, each with its own control."
)
LABELS = typer.Option(
    "1%,10%", "--labels", help="Label fractions of the linear probe; the first one chooses."
)
ALPHA = typer.Option(
    0.05,
    "--alpha",
    help="A stage leaves its ×1 point only for a higher Δ that beats it with p below this "
    "(exact test of the two gains); 1: the highest Δ whatever its p. A stage without a ×1 result "
    "(--scales without 1, a diverged ×1 run) keeps its highest Δ.",
)
SEED = typer.Option(
    0, "--seed", min=0, help="Data order, augmentations and the probe's label subset of every run."
)
KNN = typer.Option(False, "--knn/--no-knn", help="Also evaluate with kNN (k = 20, all labels).")
DATA = typer.Option(None, "--data", help="Dataset (default: the one a built-in base was trained on).")
SETS = typer.Option(
    None,
    "--set",
    help="Override a recipe key (section.key=value), or for one criterion only "
    "(e2mc:criterion.view_reduction=sum). Repeatable.",
)
EVAL_EPOCHS = typer.Option(
    None,
    "--eval-epochs",
    min=1,
    help="Linear-probe epochs, run exactly (default: the protocol's, see `sslboost eval --help`).",
)
IMAGE_SIZE = typer.Option(
    None, "--image-size", min=8, help="Image size of training and evaluation (default: recipe / data)."
)


@app.command()
@reads_environment(*ENVIRONMENT)
def tune(
    base: str = base_option(..., help="Base to tune for: a registry name (e.g. fmnist-vicreg) or a file."),
    criterion: str = CRITERION,
    out: str = OUT,
    epochs: float = epochs_option("Epochs of each continued pre-training (default: the recipe's)."),
    holdout: int = HOLDOUT,
    scales: str = SCALES,
    ratios: str = RATIOS,
    lr_scales: str = LR_SCALES,
    labels: str = LABELS,
    alpha: float = ALPHA,
    seed: int = SEED,
    knn: bool = KNN,
    data: str = DATA,
    sets: list[str] = SETS,
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Override run.batch_size."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop each training run after N steps."),
    eval_epochs: int = EVAL_EPOCHS,
    image_size: int = IMAGE_SIZE,
    workers: int = workers_option(
        "Data-loading processes of each training run (default: chosen for the data and machine)."
    ),
    augment: str = augment_option(),
    device: str = device_option(),
) -> None:
    """Choose a criterion's coefficients and learning rate on a validation split, in three stages.

    From the recipe's values (the paper's), stage 1 scales every coefficient at their ratio, stage 2
    the ratio of the others to the first, stage 3 the learning rate; each keeps the highest Δ top-1
    over `continued` at the same learning rate on the first --labels, if it beats the stage's ×1
    point with p < --alpha (else the ×1 point stays). Finished runs are skipped: run
    the same command again to resume. The test split is not read: the command prints the one
    `sslboost study` that reads it with the chosen values.

    Example:

        sslboost tune --base fmnist-vicreg --criterion e2mc --epochs 3 --out runs/tune/vicreg
    """
    from e2mc_cli.tune import TuneConfig, run_tune

    cfg = TuneConfig(
        base=base, out=out, criterion=criterion, epochs=epochs, holdout=holdout, scales=scales, ratios=ratios,
        lr_scales=lr_scales, labels=labels, alpha=alpha, seed=seed, knn=knn, data=data, sets=list(sets or []),
        batch_size=batch_size, max_steps=max_steps, eval_epochs=eval_epochs, image_size=image_size,
        workers=workers, augment=augment, device=device,
    )  # fmt: skip
    result = run_tune(cfg, log=say, command=command_line("tune"))
    report(result, out)
