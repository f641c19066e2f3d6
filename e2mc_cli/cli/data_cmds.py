"""`sslboost bench data`."""

from __future__ import annotations

import typer
from rich.table import Table

from e2mc_cli.cli.app import bench_app, console, err_console
from e2mc_cli.cli.options import device_option, json_option, print_json, resolve_device, workers_option
from e2mc_cli.errors import UserError

DECODES = ("cpu", "device")


def _rate(part: dict | None, key: str, fmt: str) -> str:
    return "—" if not part or part.get(key) is None else format(part[key], fmt)


def _print_table(result: dict) -> None:
    per = f"per worker ({result['workers']} processes each)" if result["workers"] else "per core (one thread)"
    title = f"{result['method']} views at {result['image_size']} px, {result['images']} images, {per}"
    table = Table(title=title)
    for col in ("pipeline", "img/s per worker", "ms per image", "device ms per image"):
        table.add_column(col, justify="left" if col == "pipeline" else "right")
    rows = [("cpu (official)", result["cpu"]), ("split", result["split"])]
    if result["decode_device"]:
        rows.append(("split, device decode", result["decode_device"]))
    for name, part in rows:
        table.add_row(
            name,
            _rate(part, "img_per_s_per_worker", ".1f"),
            _rate(part, "ms_per_image", ".2f"),
            _rate(part, "device_ms_per_image", ".3f"),
        )
    console.print(table)
    console.print(
        f"split / cpu: {result['ratio']:.2f}×   device: {result['device']}   load: {result['load_average']}"
    )
    for note in result["notes"]:
        console.print(f"note: {note}")


@bench_app.command("data")
def bench_data_cmd(
    data: str = typer.Option(
        ..., "--data", help="Folder of JPEG photographs in class folders (DIR/train/<class>/*.JPEG)."
    ),
    method: str = typer.Option(..., "--method", help="Whose training views (a method of `sslboost bases`)."),
    image_size: int = typer.Option(224, "--image-size", min=8, help="Full-resolution view size in px."),
    workers: int | None = workers_option(
        "Loader processes per pipeline (default: none, each runs here on one thread: per-core figures)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per batch (one batch a round)."),
    rounds: int = typer.Option(4, "--rounds", min=1, help="Timed rounds; the pipelines take turns in each."),
    decode: str = typer.Option(
        "cpu", "--decode", help="device: also time decoding the JPEG batches on the device, where it can."
    ),
    device: str = device_option(),
    as_json: bool = json_option(),
) -> None:
    """Images/s per loader worker: official per-image views against the split pipeline's CPU part.

    Both pipelines make the same views of the same images, round by round in turns; the split
    pipeline's device stage (colour jitter, grayscale, blur, solarisation, normalisation of a
    whole batch) is timed on --device, in ms per image.

    Example:

        sslboost bench data --data ~/imagenet --method swav --json
    """
    from e2mc_cli.benchmarks.data import bench_data

    if decode not in DECODES:
        raise UserError(f"--decode must be cpu or device, got {decode!r}")
    progress = None if as_json else (lambda msg: err_console.print(f"[dim]… {msg}[/]", highlight=False))
    result = bench_data(
        data,
        method,
        image_size=image_size,
        workers=workers,
        batch_size=batch_size,
        rounds=rounds,
        device=resolve_device(device),
        decode=decode,
        progress=progress,
    )
    if as_json:
        print_json(result)
        return
    _print_table(result)
