"""`sslboost inspect`: embedding-health statistics of one or more checkpoints, side by side."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from e2mc_cli.cli.app import app, call_with_options, console, err_console
from e2mc_cli.cli.options import (
    BASE_ENV,
    DATA_ENV,
    device_option,
    parse_bases,
    reads_environment,
    resolve_device,
)
from e2mc_cli.errors import UserError


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _table(report: dict) -> Table:
    """The statistics of every model side by side, one section per embedding level."""
    from e2mc_cli.diagnostics import LEVELS, TABLE_ROWS, ordinal

    models = report["models"]
    table = Table(
        title=escape(f"{report['data']} ({report['split']}, {report['n_samples']} images)"),
        caption=f"distances: {report['distance']}; k = {report['neighbour_k']}",
    )
    table.add_column("statistic", no_wrap=True)
    for m in models:
        table.add_column(escape(m["label"]).replace(" (", "\n("), justify="right")
    table.add_row("method / space", *(f"{m['method']} / {m['space']}" for m in models))
    table.add_row("image size", *(str(m["image_size"]) for m in models))
    for level in LEVELS:
        dims = " / ".join(dict.fromkeys(str(m[level]["d"]) for m in models))  # in model order
        table.add_section()
        table.add_row(f"[bold]{level}[/] (d = {dims})", *("" for _ in models))
        for key, name, spec in TABLE_ROWS:
            if key == "nn_dk_mean":
                name = f"{ordinal(report['neighbour_k'])}-neighbour distance"
            table.add_row(f"  {name}", *(_fmt(m[level].get(key), spec) for m in models))
    return table


@app.command()
@reads_environment(*BASE_ENV, *DATA_ENV)
def inspect(
    weights: list[str] = typer.Option(
        ...,
        "--weights",
        "-w",
        help="Canonical .safetensors file, base name or hf://ORG/NAME; repeat to compare.",
        callback=parse_bases,
    ),
    data: str = typer.Option(..., "--data", help="ImageFolder root or a built-in dataset (fmnist)."),
    split: str = typer.Option("val", "--split", help="Split to embed: train, val or test."),
    image_size: int | None = typer.Option(
        None,
        "--image-size",
        help="Image size in px (default: the checkpoint recipe's, else 28 for fmnist, else 224).",
    ),
    max_samples: int = typer.Option(2048, "--max-samples", help="Embed at most this many images (seeded)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = device_option(),
    workers: int = typer.Option(
        0,
        "--workers",
        min=0,
        help="Data-loading worker processes (default 0, unlike other commands: the augmented views are "
        "drawn in the loader processes, so they and the statistics depend on the worker count).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the image subset, the views and the plotted pairs."),
    neighbours: int = typer.Option(100, "--neighbours", help="k of the k-th-neighbour distance."),
    out: Path | None = typer.Option(
        None, "--out", help="Write inspect.json and the PNG figures into this folder."
    ),
) -> None:
    """Measure how spread out each model's embedding is (entropy, rank, centre norm, neighbours).

    Every model embeds the same images and the same augmented views (--seed); the table puts
    their statistics side by side.

    Example:

        sslboost inspect -w fmnist-vicreg -w runs/fmnist-vicreg-e2mc/model.safetensors --data fmnist
    """
    from e2mc_cli.diagnostics import run_inspect

    if batch_size < 1 or workers < 0 or neighbours < 1:
        raise UserError("--batch-size and --neighbours must be at least 1, --workers at least 0")
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    dev = resolve_device(device)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    tasks: dict[str, int] = {}

    def progress(label: str, done: int, total: int) -> None:
        if not tasks:
            bar.start()  # only once the inputs have been checked and embedding begins
        if label not in tasks:
            tasks[label] = bar.add_task(f"embedding {label}", total=total)
        bar.update(tasks[label], completed=done)

    try:
        given = {"device": dev, "num_workers": workers, "k": neighbours, "out_dir": out, "progress": progress}
        report = call_with_options(run_inspect, locals(), **given)
    finally:
        if tasks:
            bar.stop()
    console.print(_table(report))
    if out is not None:
        files = ", ".join(["inspect.json", *report["figures"]])
        console.print(f"wrote {escape(str(out))}/: {escape(files)}", highlight=False, soft_wrap=True)
