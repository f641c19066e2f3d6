"""Rich tables of the library's results, for the commands to print."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table


def before_after_table(rows: list[dict], base: str, refined: str) -> Table:
    """The before/after rows of :func:`e2mc_cli.study.before_after` (top-1 %, difference in
    points, McNemar p)."""
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"linear probe top-1 (%), cached features, seed 0: {base} → {refined}",
    )
    for col in ("labels", "base", "refined", "Δ (points)", "McNemar p"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["labels"],
            f"{r['before']:.2f}",
            f"{r['after']:.2f}",
            f"{r['difference']:+.2f}",
            f"{r['p_mcnemar']:.2g}",
        )
    return table


def study_table(study: dict, base: str) -> Table:
    """The top-1 table of a study document (mean ± SE over seeds, p-value against the control on
    the first column)."""
    from e2mc_cli.study import CONTROL, fmt_mean_se, fmt_p

    table = Table(box=box.SIMPLE_HEAD, title=f"{escape(base)}: top-1 (%), mean ± SE over seeds")
    table.add_column("model", no_wrap=True)
    for col in study["columns"]:
        table.add_column(col, justify="right", no_wrap=True)
    first = study["columns"][0]
    table.add_column(f"p vs continued ({first})", justify="right")
    for row in study["rows"]:
        p = "" if row["name"] in ("base", CONTROL) else fmt_p(row[first])
        table.add_row(row["name"], *(fmt_mean_se(row[c]) for c in study["columns"]), p)
    return table
