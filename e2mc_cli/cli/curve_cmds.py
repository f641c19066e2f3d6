"""``sslboost curve``: convergence of a pre-training from scratch, budget by budget."""

from __future__ import annotations

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from e2mc_cli.cli.app import app, console, err_console
from e2mc_cli.cli.options import (
    DATA_ENV,
    augment_option,
    decode_option,
    device_option,
    precision_option,
    reads_environment,
    workers_option,
)
from e2mc_cli.cli.study_cmds import command_line


def curve_table(doc: dict) -> Table:
    """Per budget: kNN and linear top-1, their gains over the previous doubling, training time."""
    col = doc["linear_column"]
    title = escape(f"{doc['recipe']}: top-1 (%) on {doc['evaluated_on']}")
    table = Table(box=box.SIMPLE_HEAD, title=title)
    for name in ("epochs", "kNN", col, "kNN gain", "linear gain", "train time"):
        table.add_column(escape(name), justify="right", no_wrap=True)
    from e2mc_cli.curve.render import wall_text

    for p in doc["points"]:
        if not p["done"]:
            table.add_row(f"{p['epochs']:g}", "not run yet", "", "", "", "")
            continue
        gains = ["–" if g is None else f"{g:+.2f}" for g in (p["knn_gain"], p["linear_gain"])]
        wall = wall_text(p["train_wall_time_s"])
        table.add_row(f"{p['epochs']:g}", f"{p['knn']:.2f}", f"{p['linear']:.2f}", *gains, wall)
    return table


@app.command()
@reads_environment(*DATA_ENV)
def curve(
    recipe: str = typer.Option(
        ...,
        "--recipe",
        help="A recipe with a \\[model] section: fmnist-vicreg, fmnist-swav, fmnist-simsiam, or a file.",
    ),
    epochs: str = typer.Option(
        ...,
        "--epochs",
        "--budgets",
        help="Epoch budgets, e.g. 2,4,8,16,32: one full pre-training of each (its run.epochs).",
    ),
    out: str = typer.Option(
        ..., "--out", help="Curve folder (epochs-<E>/ per budget, curve.json, curve.md, curve.png)."
    ),
    holdout: int = typer.Option(
        10000,
        "--holdout",
        help="Training images held out to evaluate on (the test split is never read).",
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, help="Initial weights, data order and the probe's label subset (run.seed)."
    ),
    data: str = typer.Option("fmnist", "--data", help="ImageFolder root or a built-in dataset."),
    labels: str = typer.Option("1%", "--labels", help="Label fraction of the linear probe."),
    eval_epochs: int = typer.Option(
        None,
        "--eval-epochs",
        min=1,
        help="Linear-probe epochs, run exactly (default: the protocol's, see `sslboost eval --help`).",
    ),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Override run.batch_size."),
    sets: list[str] = typer.Option(
        None, "--set", help="Override a recipe key (section.key=value) of every budget. Repeatable."
    ),
    earlier: list[str] = typer.Option(
        None,
        "--earlier",
        help="An earlier curve.json of the same recipe, seed and split: its finished budgets count "
        "here and are not trained again. Repeatable.",
    ),
    workers: int = workers_option("Data-loading worker processes of each pre-training."),
    precision: str = precision_option(),
    augment: str = augment_option(),
    decode: str = decode_option(),
    device: str = device_option(),
) -> None:
    """Pre-train from scratch at each epoch budget and say whether kNN top-1 has plateaued.

    Each budget is a full `sslboost pretrain --epochs E` (its own schedule), evaluated with kNN
    and the cached linear probe on --holdout training images. The plateau: kNN gains less than
    0.3 points over the last doubling of epochs. Finished budgets are skipped and an interrupted
    one resumes: run the same command again. --earlier CURVE.json takes the budgets another curve
    folder finished, so a curve run in pieces gets one table and one verdict.

    Example:

        sslboost curve --recipe fmnist-vicreg --epochs 2,4,8,16,32 --out runs/curve/fmnist-vicreg
    """
    from e2mc_cli.curve import CurveConfig, run_curve
    from e2mc_cli.training.step import NonFiniteLoss

    cfg = CurveConfig(
        recipe=recipe, out=out, epochs=epochs, holdout=holdout, seed=seed, data=data, labels=labels,
        eval_epochs=eval_epochs, batch_size=batch_size, sets=list(sets or []), workers=workers,
        precision=precision, augment=augment, decode=decode, device=device, earlier=list(earlier or []),
    )  # fmt: skip

    def log(msg: str) -> None:
        console.print(escape(msg), highlight=False, soft_wrap=True)

    try:
        result = run_curve(cfg, log=log, command=command_line("curve"))
    except NonFiniteLoss as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(curve_table(result.curve))
    console.print(escape(result.curve["verdict"]["text"]), highlight=False, soft_wrap=True)
    console.print(
        f"{len(result.trained)} budget(s) trained, {len(result.skipped)} already finished; "
        f"wrote {escape(out)}/curve.json, curve.md, curve.png",
        highlight=False,
        soft_wrap=True,
    )
    if result.status == "interrupted":
        err_console.print("interrupted: run the same command again to resume", highlight=False)
