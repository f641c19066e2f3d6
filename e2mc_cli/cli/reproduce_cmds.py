"""``sslboost reproduce``: the runs of Table 1 or 3 of the E2MC paper, planned, run and tabulated."""

from __future__ import annotations

import re
import shlex
import sys

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from e2mc_cli.cli.app import app, console, err_console
from e2mc_cli.cli.options import (
    DEVICE_HELP,
    ENVIRONMENT,
    json_option,
    parse_device,
    print_json,
    reads_environment,
    without_secrets,
    workers_option,
)
from e2mc_cli.cli.study_cmds import report_unfinished
from e2mc_cli.errors import UserError

_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def _device(value: str, dry_run: bool) -> str:
    """``--device``, checked against this machine unless the plan is only printed (a dry run
    prints the commands for another machine)."""
    if dry_run:
        if not _DEVICE_NAME.fullmatch(value):
            raise UserError(f"--device {value}: expected auto, cpu, cuda or cuda:N")
        return value
    return parse_device(value)


def _labels_of(columns: list[str], protocol: str) -> str:
    """``1/10/100`` for the label fractions of ``protocol`` among ``columns`` (``–``: none)."""
    found = [c.split(" ")[1].rstrip("%") for c in columns if c.startswith(protocol + " ")]
    return "/".join(found) or "–"


def _plan_table(doc: dict) -> Table:
    title = f"{doc['paper']}, Table {doc['table']}: {doc['title']} ({doc['seeds']} seed(s), GPU hours)"
    table = Table(box=box.SIMPLE_HEAD, title=escape(title))
    table.add_column("row", min_width=14)
    for col in ("base", "recipe", "criterion", "linear %", "semisup %", "train h", "eval h"):
        table.add_column(col, no_wrap=True, justify="left" if col in ("base", "recipe") else "right")
    for r in doc["rows"]:
        h, evals = r["gpu_hours"], r["evaluations"]
        table.add_row(
            escape(f"{r['label']} ({r['epochs']:,})") + (" *" if r["also_in_tables"] else ""),
            escape(r["base"]), r["recipe"] or "–", r["criterion"] or "–", _labels_of(evals, "linear"),
            _labels_of(evals, "semisup"), f"{h['train']:,.1f}", f"{h['eval']:,.1f}",
        )  # fmt: skip
    t = doc["totals"]
    table.add_section()
    runs = f"{t['training_runs']} runs"
    table.add_row("total", "", "", runs, "", "", f"{t['train']:,.1f}", f"{t['eval']:,.1f}")
    return table


def _print_plan(doc: dict) -> None:
    console.print(_plan_table(doc))
    say = lambda text: console.print(escape(text), highlight=False, soft_wrap=True)  # noqa: E731
    shared = sorted({t for r in doc["rows"] for t in r["also_in_tables"]})
    if shared:
        tables = " and ".join(f"Table {t}" for t in shared)
        say(f"* also a run of {tables}, in the same folder: the table run first makes it, the other reads it")
    say(f"estimated {doc['totals']['total']:,.1f} GPU hours in all; the estimate assumes:")
    for line in doc["assumptions"]:
        say(f"  - {line}")
    say("commands (the same work; `sslboost reproduce` runs them and resumes where they stopped):")
    for command in doc["commands"]:
        say(f"  {command}")


def _results_table(doc: dict) -> Table:
    from e2mc_cli.reproduce.results import fmt_cell

    table = Table(
        box=box.SIMPLE_HEAD,
        title=escape(f"Table {doc['table']}: top-1 (%), paper / ours (mean ± SE, {doc['seeds']} seed(s))"),
    )
    table.add_column("row", no_wrap=True)
    table.add_column("epochs", justify="right")
    for col in doc["columns"]:
        table.add_column(col, justify="right", no_wrap=True)
    for r in doc["rows"]:
        cells = [r["cells"].get(c) for c in doc["columns"]]
        text = [f"{fmt_cell(c, 'paper')} / {fmt_cell(c, 'ours')}" if c else "" for c in cells]
        table.add_row(escape(r["label"]), f"{r['epochs']:,}", *text)
    return table


def _command_line() -> str:
    if sys.argv[1:2] == ["reproduce"]:
        return shlex.join(["sslboost", *without_secrets(sys.argv[1:])])
    return "sslboost reproduce"


@app.command()
@reads_environment(*ENVIRONMENT)
def reproduce(
    table: str = typer.Option(
        ..., "--table", help="1 (VICReg, SwAV 400/800, SimSiam: continued, + E2MC) or 3 (SwAV 800 ablations)."
    ),
    data: str = typer.Option(
        None, "--data", help="ImageNet root (train/ and val/ class folders); not read with --dry-run."
    ),
    out: str = typer.Option(
        "runs/reproduce", "--out", help="Folder of the studies (one per base) and of table<N>.json / .md."
    ),
    rows: str = typer.Option(
        None,
        "--rows",
        help="Comma-separated rows (vicreg-e2mc), groups (swav800) or bases (swav400-bs256); "
        "default every row. A group's base row always comes with it.",
    ),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Training seeds per run (the paper's three trials)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan, GPU hours and commands; read no data, use no GPU."
    ),
    as_json: bool = json_option("Print the plan (with --dry-run) or the results as one JSON object."),
    max_steps: int = typer.Option(
        None, "--max-steps", min=1, help="Stop each training run after N steps (a pipeline check)."
    ),
    eval_epochs: int = typer.Option(
        None, "--eval-epochs", min=1, help="Epochs of every evaluation, run exactly (a pipeline check)."
    ),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Override run.batch_size."),
    image_size: int = typer.Option(
        None, "--image-size", min=8, help="Image size of training and evaluation (default: recipe / data)."
    ),
    workers: int = workers_option("Data-loading processes of each training run (default: chosen)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Run, evaluate and tabulate every run of Table 1 or Table 3 of the E2MC paper.

    Each base is one `sslboost study` (OUT/<base>/): its criteria trained with seeds 0..S-1 and
    probed as the paper did, plus the semi-supervised fine-tunings the table reports. Run the
    same command again to resume; the results, beside the paper's, go to OUT/table<N>.md and .json.

    Example:

        sslboost reproduce --table 1 --data ~/imagenet --dry-run

        sslboost reproduce --table 3 --data ~/imagenet --out runs/reproduce
    """
    from e2mc_cli.reproduce import ReproduceOptions, build_plan

    device = _device(device, dry_run)
    opts = ReproduceOptions(
        table=table, data=data, out=out, rows=rows, seeds=seeds, device=device, workers=workers,
        max_steps=max_steps, eval_epochs=eval_epochs, batch_size=batch_size, image_size=image_size,
    )  # fmt: skip
    plan = build_plan(opts)
    if dry_run:
        doc = plan.to_dict()
        print_json(doc) if as_json else _print_plan(doc)
        return
    _run(plan, as_json)


def _run(plan, as_json: bool) -> None:
    """Run ``plan`` (progress on stdout, or stderr when stdout carries the JSON) and print the
    table of results, or the results document as JSON."""
    from e2mc_cli.reproduce import run_reproduction

    progress = err_console if as_json else console

    def log(msg: str) -> None:
        progress.print(escape(msg), highlight=False, soft_wrap=True)

    result = run_reproduction(plan, log=log, command=_command_line())
    doc = result.document
    if as_json:
        print_json(doc)
    else:
        console.print(_results_table(doc))
        console.print(
            f"{len(result.trained)} run(s) trained now, {len(result.skipped)} already finished; wrote "
            f"{escape(str(plan.out))}/table{doc['table']}.json and table{doc['table']}.md",
            highlight=False,
            soft_wrap=True,
        )
    report_unfinished(result)
