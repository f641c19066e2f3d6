"""`sslboost bases`, `sslboost fetch`, `sslboost convert`: the named public bases."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from e2mc_cli.cli.app import app, console
from e2mc_cli.cli.options import (
    BASE_ENV,
    allow_new_heads_option,
    base_option,
    json_option,
    print_json,
    reads_environment,
)
from e2mc_cli.errors import UserError


def _row(spec) -> dict:
    from e2mc_cli.zoo import base_path, is_cached, spec_heads

    return {
        "name": spec.name,
        "method": spec.method,
        "arch": spec.arch,
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "url": spec.url,
        "builtin": spec.builtin,
        "licence": spec.licence,
        "linear_top1": spec.linear_top1,
        "probe": spec.probe,
        "sha256": spec.sha256,
        "heads": spec_heads(spec),
        "notes": spec.notes,
        "paper_rows": list(spec.paper_rows),
        "cached": is_cached(spec),
        "path": str(base_path(spec)),
    }


def top1_cell(row: dict) -> str:
    """The top-1 cell of a base: the authors' ImageNet linear top-1, or for a built-in base the
    figures sslboost measured on its test split (linear 1 % / 10 %, kNN); "–" for neither."""
    if row["linear_top1"] is not None:
        return f"{row['linear_top1']:.1f}"
    if row["probe"]:
        return " / ".join(f"{v:.1f}" for v in row["probe"].values())
    return "–"


_PAPER_ROW = re.compile(r"(?P<paper>.+) Table (?P<table>\S+): (?P<row>.+)")


def paper_cell(rows: list[str]) -> str:
    """The paper rows of a base in one cell: ``E2MC Tables 1, 2: SwAV 400`` ("–" for none)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for text in rows:
        m = _PAPER_ROW.fullmatch(text)
        paper, table, row = m.group("paper", "table", "row") if m else (text, "", "")
        groups.setdefault((paper, row), []).append(table)
    cells = []
    for (paper, row), tables in groups.items():
        if not row:
            cells.append(paper)
            continue
        label = "Table" if len(tables) == 1 else "Tables"
        cells.append(f"{paper} {label} {', '.join(tables)}: {row}")
    return "; ".join(cells) or "–"


@app.command()
@reads_environment("SSLBOOST_CACHE")
def bases(
    as_json: bool = json_option("Print the registry as JSON to stdout instead of the table."),
) -> None:
    """List the named bases: method, epochs, batch size, URL, licence, reported linear top-1, and the
    rows of the E2MC paper's tables that start from each.

    Any of these names is a --base of `continue`, `eval`, `study`, `inspect` and `fetch`.

    Example:

        sslboost bases --json
    """
    from e2mc_cli.zoo import BASES

    rows = [_row(spec) for spec in BASES.values()]
    if as_json:
        print_json(rows)
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column, kw in (
        ("name", {"style": "bold"}),
        ("method", {}),
        ("epochs", {"justify": "right"}),
        ("batch", {"justify": "right"}),
        ("top-1", {"justify": "right"}),
        ("licence", {}),
        ("cached", {}),
        ("paper", {}),
    ):
        table.add_column(column, no_wrap=True, **kw)
    table.add_column("URL", overflow="fold")
    for r in rows:
        top1 = top1_cell(r)
        if r["builtin"]:
            cached = "built-in" if r["cached"] else "[red]missing[/]"
        else:
            cached = "[green]yes[/]" if r["cached"] else "no"
        table.add_row(
            r["name"],
            r["method"],
            str(r["epochs"]),
            str(r["batch_size"]),
            top1,
            r["licence"],
            cached,
            escape(paper_cell(r["paper_rows"])),
            escape(r["url"] or r["builtin"]),
        )
    # Piped output is not folded to 80 columns: one base per line.
    out = console if console.is_terminal else Console(width=260)
    out.print(table)
    out.print(
        "top-1: ImageNet linear probe (%) reported by the authors for that file; paper: the rows of the "
        "E2MC paper's tables (Chakraborty et al., AISTATS 2025) whose runs start from that file; "
        "fmnist-* bases are built in (pre-trained on Fashion-MNIST by sslboost, default --data fmnist), "
        "their top-1 measured by sslboost on the Fashion-MNIST test split: linear probe at 1 % / 10 % "
        "labels / kNN (evaluation protocol 3, seed 0)."
    )


@app.command()
@reads_environment(*BASE_ENV)
def fetch(
    base: str = base_option(..., help="A name from `sslboost bases`, or hf://ORG/NAME\\[@REV]."),
) -> None:
    """Download a base into the cache (resumable) and verify its sha256.

    Registry bases go to the --cache folder, hf:// bases to the Hugging Face cache; every later use
    checks the file again.

    Example:

        sslboost fetch --base swav800
    """
    from e2mc_cli.downloads import sha256_file
    from e2mc_cli.secrets import scrubbing
    from e2mc_cli.zoo import fetch_base, get_spec
    from e2mc_cli.zoo.hf import download_hf, is_hf

    with scrubbing():  # --stall-timeout sets $SSLBOOST_STALL_TIMEOUT, which every download reads
        path = download_hf(base) if is_hf(base) else fetch_base(get_spec(base))
    size_mb = path.stat().st_size / 2**20
    console.print(f"{escape(base)}: {escape(str(path))} ({size_mb:.1f} MiB, sha256 {sha256_file(path)})")


@app.command()
@reads_environment(*BASE_ENV)
def convert(
    out: Path = typer.Option(..., "--out", help="The canonical checkpoint to write (.safetensors)."),
    base: str = base_option(help="A name from `sslboost bases`, or hf://ORG/NAME\\[@REV]."),
    base_file: Path = typer.Option(None, "--base-file", help="A local file in an official layout."),
    method: str = typer.Option(None, "--method", help="Method of --base-file (see `sslboost bases`)."),
    allow_new_heads: bool = allow_new_heads_option("the file"),
    optimizer_state: bool = typer.Option(
        False,
        "--optimizer-state",
        help="Also keep the file's optimiser momentum, beside --out as NAME.optimizer.safetensors "
        "(read by `continue --set optim.keep_base_state=true`).",
    ),
) -> None:
    """Convert an official checkpoint into the canonical safetensors layout, with a report.

    The report lists the keys renamed, dropped and (with --allow-new-heads) initialised; with
    --optimizer-state, the momentum of a training checkpoint's optimiser (VICReg's full checkpoint)
    is kept too, mapped to the same canonical names.

    Example:

        sslboost convert --base-file resnet50_fullckpt.pth --method vicreg --out vicreg.safetensors
    """
    from e2mc_cli.checkpoint import optimizer_state_path, save_optimizer_state, save_state_dict
    from e2mc_cli.zoo import convert_base

    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the canonical checkpoint is a .safetensors file")
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder")
    ckpt, report = convert_base(
        base,
        base_file=base_file,
        method=method,
        allow_new_heads=allow_new_heads,
        optimizer_state=optimizer_state,
    )
    save_state_dict(out, ckpt.state_dict, ckpt.metadata)
    if ckpt.optimizer_state is not None:
        save_optimizer_state(optimizer_state_path(out), ckpt.optimizer_state)
    if report is None:
        console.print(f"already canonical ({ckpt.method} {ckpt.arch}); copied {len(ckpt.state_dict)} tensors")
    else:
        for line in report.lines():
            style = "bold red" if line.startswith("NEW HEADS") else None
            console.print(escape(line), style=style, highlight=False, soft_wrap=True)
    console.print(f"wrote {escape(str(out))} (base {escape(ckpt.metadata.get('base', ''))})", highlight=False)
    if ckpt.optimizer_state is not None:
        where = optimizer_state_path(out)
        console.print(f"wrote {escape(str(where))} (its optimiser momentum)", highlight=False)
