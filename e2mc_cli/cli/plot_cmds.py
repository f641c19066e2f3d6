"""`sslboost plot`: the training curves of one or more run folders (logic in e2mc_cli.diagnostics.curves)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from e2mc_cli.cli.app import app, console


@app.command("plot")
def plot_cmd(
    runs: list[Path] = typer.Argument(..., help="Run folders (the --out of `sslboost continue`); overlaid."),
    out: Path = typer.Option(Path("curves.png"), "--out", help="The PNG to write."),
) -> None:
    """Plot loss terms, learning rate, images/s and embedding health against the step, from each run
    folder's metrics.jsonl; several runs are overlaid and named by their folder.

    Writes one PNG (--out), one panel per quantity; a folder without metrics is one error line.

    Example:

        sslboost plot runs/fmnist-vicreg-e2mc runs/fmnist-vicreg-continued
    """
    from e2mc_cli.diagnostics.curves import plot_runs

    path = plot_runs(runs, out)
    console.print(f"wrote {escape(str(path))}", highlight=False, soft_wrap=True)
