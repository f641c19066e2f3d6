"""`sslboost criteria` and `sslboost bench criteria`."""

from __future__ import annotations

import typer
from rich.table import Table

from e2mc_cli.cli.app import app, bench_app, console, err_console
from e2mc_cli.cli.options import device_option, json_option, print_json, resolve_device
from e2mc_cli.errors import UserError


def _fmt_value(key: str, value: object, choices: dict[str, list[str]]) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{key}={text} ({'|'.join(choices[key])})" if key in choices else f"{key}={text}"


def _fmt_defaults(defaults: dict[str, object], choices: dict[str, list[str]]) -> str:
    return ", ".join(_fmt_value(k, v, choices) for k, v in defaults.items()) or "—"


@app.command("criteria")
def criteria_cmd(
    as_json: bool = json_option(),
) -> None:
    """List the add-on criteria: name, formula, paper, views, how they are combined, defaults.

    Each is added to the base method's own loss by `sslboost continue --criterion NAME`.
    "views" names the crops a criterion reads (global: the two full-resolution views; all: every
    crop); "over views" how it combines them at its defaults. E2MC and uniformity take
    view_reduction = mean (the authors' training scripts) or sum (the paper's pseudocode and
    Eq. B.3), e.g. `--set criterion.view_reduction=sum`.

    Example:

        sslboost criteria --json
    """
    from e2mc_cli.criteria import criterion_info

    rows = criterion_info()
    if as_json:
        print_json(rows)
        return
    table = Table(title="Add-on criteria (loss as added to the base loss)")
    for col in ("name", "formula", "paper", "views", "over views", "defaults"):
        table.add_column(col, overflow="fold")
    for r in rows:
        defaults = _fmt_defaults(r["defaults"], r["choices"])
        table.add_row(r["name"], r["formula"], r["paper"], r["views"], r["over_views"], defaults)
    console.print(table)


def _parse_dims(dims: str) -> list[int]:
    try:
        out = [int(x) for x in dims.split(",") if x.strip()]
    except ValueError:
        raise UserError(
            f"--dims must be comma-separated integers, e.g. 128,2048,8192; got {dims!r}"
        ) from None
    if not out:
        raise UserError("--dims needs at least one dimension")
    return out


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


@bench_app.command("criteria")
def bench_criteria_cmd(
    n: int = typer.Option(512, "--n", help="Batch size (samples per view)."),
    dims: str = typer.Option("128,2048,8192", "--dims", help="Comma-separated embedding dimensions."),
    repeats: int = typer.Option(5, "--repeats", help="Timed repetitions per cell (median reported)."),
    warmup: int = typer.Option(1, "--warmup", help="Untimed warm-up calls per cell."),
    device: str = device_option(),
    space: str = typer.Option("hypercube", "--space", help="E2MC space: hypercube or hypersphere."),
    entropy_errors: bool = typer.Option(
        True,
        "--entropy-errors/--no-entropy-errors",
        help="Also measure the m-spacings entropy error of bf16/fp16/fp32 inputs against fp64 on "
        "the shipped E2MC recipes' shapes.",
    ),
    as_json: bool = json_option(),
) -> None:
    """Forward + backward milliseconds of every criterion; E2MC against the paper's literal pseudocode.

    Each cell is the median of --repeats timed calls on random embeddings of n × d. A second
    table gives, for each shipped E2MC recipe's shape (whole batch n, embedding d, its Ψ), how far
    the m-spacings entropy and its gradient move when the embedding arrives rounded to bf16, fp16
    or fp32 instead of fp64 (mean and max over dimensions; --no-entropy-errors skips it).

    Example:

        sslboost bench criteria --n 512 --dims 2048,8192 --device cuda
    """
    import torch

    from e2mc_cli.benchmarks.criteria import bench_criteria, device_description, rows_as_json
    from e2mc_cli.benchmarks.entropy_precision import entropy_precision

    if space not in ("hypercube", "hypersphere"):
        raise UserError(f"--space must be hypercube or hypersphere, got {space!r}")
    dim_list = _parse_dims(dims)
    dev = torch.device(resolve_device(device))
    desc = device_description(dev)
    progress = None if as_json else (lambda msg: err_console.print(f"[dim]… {msg}[/]", highlight=False))
    rows = bench_criteria(
        n=n, dims=dim_list, repeats=repeats, warmup=warmup, device=dev, space=space, progress=progress
    )
    precision = entropy_precision(device=dev, progress=progress) if entropy_errors else []
    if as_json:
        print_json(rows_as_json(rows, n=n, device=desc, repeats=repeats, precision=precision))
        return
    table = Table(title=f"Criteria forward+backward, n={n}, median of {repeats}, {desc}")
    for col in ("criterion", "d", "ms", "paper pseudocode ms", "speed-up", "max rel. diff", "note"):
        table.add_column(col, justify="left" if col in ("criterion", "note") else "right")
    for r in rows:
        table.add_row(
            r.criterion,
            str(r.d),
            _ms(r.ms),
            _ms(r.paper_ms),
            "" if r.speedup is None else f"{r.speedup:.2f}×",
            "" if r.max_rel_diff is None else f"{r.max_rel_diff:.1e}",
            r.note,
        )
    console.print(table)
    if precision:
        console.print(_precision_table(precision, desc))


def _precision_table(rows, desc: str) -> Table:
    title = f"m-spacings entropy of rounded inputs against fp64 (mean / max over dimensions), {desc}"
    table = Table(title=title)
    cols = ("recipe", "n", "d", "Ψ", "input", "spacing ulps", "spacing err", "exp(H) err", "∂H/∂z err")
    for col in cols:
        table.add_column(col, justify="left" if col in ("recipe", "Ψ", "input") else "right")
    for r in rows:
        table.add_row(
            r.recipe,
            str(r.n),
            str(r.d),
            "sigmoid" if r.space == "hypercube" else "CDF",
            r.dtype,
            f"{r.spacing_ulps:.3g}",
            f"{r.spacing_rel_err:.1e}",
            f"{r.entropy_rel_err_mean:.1e} / {r.entropy_rel_err_max:.1e}",
            f"{r.grad_rel_err_mean:.1e} / {r.grad_rel_err_max:.1e}",
        )
    return table
