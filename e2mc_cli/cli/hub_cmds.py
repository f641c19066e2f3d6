"""`sslboost export` and `sslboost push`: publish a run folder (logic in e2mc_cli.publish)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from e2mc_cli.cli.app import app, console, err_console
from e2mc_cli.cli.options import reads_environment


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="Run folder (the --out of `sslboost continue`)."),
) -> None:
    """Make a run folder a Hub model repository: the root model.safetensors (the backbone, for timm and
    torchvision), config.json and the model card README.md with every evaluation below the folder.

    `sslboost continue` and `pretrain` export their run folder when they end; run this again after
    adding evaluations to the folder.

    Example:

        sslboost export runs/fmnist-vicreg-e2mc
    """
    from e2mc_cli.publish import export_run

    result = export_run(run_dir)
    _warn(result.warnings)
    for p in result.files:
        console.print(f"wrote {escape(str(p))} ({_size(p.stat().st_size)})", highlight=False, soft_wrap=True)


@app.command("push")
@reads_environment("HF_TOKEN", "HF_ENDPOINT", "SSLBOOST_STALL_TIMEOUT")
def push_cmd(
    run_dir: Path = typer.Argument(..., help="Run folder (the --out of `sslboost continue`)."),
    repo: str = typer.Option(..., "--repo", help="Hub repository ORG/NAME (created if needed)."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    revision: str = typer.Option(None, "--revision", help="Branch to commit to (created if missing)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List the files and the commit message; upload nothing (no token needed)."
    ),
    message: str = typer.Option(None, "--message", "-m", help="Commit message."),
) -> None:
    """Upload a run folder's publishable files to the Hugging Face Hub in one commit.

    The token comes from --token (HF_TOKEN) or `hf auth login`. Exports are written first when
    missing or stale.

    Example:

        sslboost push runs/fmnist-vicreg-e2mc --repo me/fmnist-vicreg-e2mc --dry-run
    """
    from e2mc_cli.publish import push_run

    result = push_run(run_dir, repo, private=private, revision=revision, dry_run=dry_run, message=message)
    _warn(result.warnings)
    for name in result.exported:
        console.print(f"exported {escape(name)}", highlight=False)
    table = Table(title=None, show_edge=False, pad_edge=False)
    table.add_column("file", overflow="fold")
    table.add_column("bytes", justify="right")
    table.add_column("size", justify="right")
    for f in result.files:
        table.add_row(escape(f.path_in_repo), str(f.size), _size(f.size))
    console.print(table)
    where = f"{result.repo_id}" + (f" @ {result.revision}" if result.revision else "")
    console.print(
        f"{len(result.files)} files, {_size(result.total_size)} → {escape(where)}"
        + (" (private)" if result.private else ""),
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"commit message: {escape(result.message)}", highlight=False, soft_wrap=True)
    if result.dry_run:
        console.print("dry run: nothing uploaded", highlight=False)
    else:
        console.print(f"pushed: {escape(result.commit_url or result.repo_url or where)}", highlight=False)
