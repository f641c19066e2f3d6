"""Rich tables of the library's results, for the commands to print.

Accuracies are the final epoch's; where a classifier was trained for epochs, the best epoch's
top-1 stands beside them, marked ``*`` and named as chosen on the evaluation split itself (the
figure the authors' evaluation scripts report, :mod:`e2mc_cli.evaluate.scoring`)."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table


def before_after_table(rows: list[dict], base: str, refined: str) -> Table:
    """The before/after rows of :func:`e2mc_cli.study.before_after`: the final epoch's top-1 (%),
    the difference in points and McNemar's p, then, marked ``*``, the best epoch's top-1 of each."""
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"linear probe top-1 (%), cached features, seed 0: {base} → {refined}",
        caption="top-1 of the final epoch; * of the best epoch, chosen on the evaluation split itself",
    )
    best = all(r.get("before_best") is not None and r.get("after_best") is not None for r in rows)
    columns = ["labels", "base", "refined", "Δ (points)", "McNemar p"]
    for col in columns + (["base *", "refined *"] if best else []):
        table.add_column(col, justify="right")
    for r in rows:
        cells = [r["labels"], f"{r['before']:.2f}", f"{r['after']:.2f}", f"{r['difference']:+.2f}"]
        extra = [f"{r['before_best']:.2f}", f"{r['after_best']:.2f}"] if best else []
        table.add_row(*cells, f"{r['p_mcnemar']:.2g}", *extra)
    return table


def study_reference_lines(reference: dict, labels: list[str]) -> list[str]:
    """One line per label fraction of the before/after table that the recipe's study reference
    (:mod:`e2mc_cli.study.reference`) has: the seed spread of criterion − continued in points
    (mean ± SE, each seed's, how many above zero), the study's pooled McNemar p and the base's
    top-1 (mean ± SE over the same seeds)."""
    from e2mc_cli.study import CONTROL, column_name

    lines = []
    for lab in labels:
        col = reference["columns"].get(column_name(lab))
        if col is None:
            continue
        spread = f"{col['mean_difference']:+.2f}" + (
            "" if col["se_difference"] is None else f" ± {col['se_difference']:.2f}"
        )
        seeds = ", ".join(f"{d:+.2f}" for d in col["differences"])
        n, base = col["n"], col["base"]
        lines.append(
            f"study of this recipe ({n} seeds, {reference['study']}): {reference['criterion']} − "
            f"{CONTROL} at {lab}: {spread} points (seeds {seeds}; {col['above_zero']} of {n} above 0), "
            f"pooled McNemar p = {col['p_mcnemar_pooled']:.2g}; base {base['mean']:.1f}"
            + ("" if base["se"] is None else f" ± {base['se']:.1f}")
        )
    return lines


def study_table(study: dict, base: str) -> Table:
    """The top-1 table of a study document (mean ± SE over seeds, p-value against the control on
    the first column)."""
    from e2mc_cli.study import CONTROL, fmt_mean_se, fmt_p

    table = Table(
        box=box.SIMPLE_HEAD, title=f"{escape(base)}: top-1 (%) of the final epoch, mean ± SE over seeds"
    )
    table.add_column("model", no_wrap=True)
    for col in study["columns"]:
        table.add_column(col, justify="right", no_wrap=True)
    first = study["columns"][0]
    table.add_column(f"p vs continued ({first})", justify="right")
    for row in study["rows"]:
        p = "" if row["name"] in ("base", CONTROL) else fmt_p(row[first])
        table.add_row(row["name"], *(fmt_mean_se(row[c]) for c in study["columns"]), p)
    return table


def _p(p: float) -> str:
    return "< 0.001" if p < 1e-3 else f"{p:.3f}"


def eval_table(rec, source: str) -> Table:
    """The per-seed table of one evaluation (an :class:`~e2mc_cli.evaluate.records.EvalRecord`):
    the final epoch's top-1 / top-5 and, marked ``*``, the best epoch's top-1 and its epoch."""
    from e2mc_cli.evaluate.stats import format_mean_se

    what = rec.protocol + (f" ({rec.mode})" if rec.mode else "")
    title = escape(f"{source}: {what}, {rec.labels} labels, {rec.dataset.spec}")
    table = Table(title=title, box=box.SIMPLE_HEAD)
    best = rec.best_top1 is not None
    columns = ["seed", "labelled images", "top-1 %", "top-5 %"]
    for col in columns + (["best-epoch top-1 % *", "epoch"] if best else []):
        table.add_column(col, justify="right")
    for r in rec.results:
        cells = [str(r.seed), str(r.train_size), f"{r.top1:.2f}", f"{r.top5:.2f}"]
        table.add_row(*cells, *((f"{r.best_top1:.2f}", str(r.best_epoch)) if best else ()))
    table.add_section()
    means = [format_mean_se(a.mean, a.se) for a in (rec.top1, rec.top5, *((rec.best_top1,) if best else ()))]
    table.add_row("mean ± s.e.", "", *means, *(("",) if best else ()))
    return table


def best_epoch_note(rec) -> str:
    """What the figures of :func:`eval_table` are: the final epoch's, and the marked best epoch's."""
    epochs = rec.document.get("hyperparameters", {}).get("epochs")
    return (
        f"top-1 and top-5: the final epoch's ({epochs}). * the best scored epoch's top-1, chosen on the "
        f"evaluation split itself ({rec.best_selected_on}): the figure the authors' evaluation scripts "
        "report, comparable with the papers' tables, but selected on the data it is measured on."
    )


def compare_tables(res: dict) -> list[Table]:
    """The tables of :func:`e2mc_cli.evaluate.compare.compare`: the tests of the final epoch's
    predictions (and the best-epoch figures, reported, not tested), then the per-seed table."""
    from e2mc_cli.evaluate.stats import format_mean_se

    sel = res["selected"]
    title = f"B − A on {escape(str(res['dataset']['spec']))}, {res['labels']} labels"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("")
    table.add_column("value", justify="right")
    mcnemar, perm = sel["mcnemar"], sel["permutation"]
    rows = [
        ("A top-1 % (final epoch)", format_mean_se(res["top1_a"]["mean"], res["top1_a"]["se"])),
        ("B top-1 % (final epoch)", format_mean_se(res["top1_b"]["mean"], res["top1_b"]["se"])),
        ("mean difference (points)", f"{res['mean_difference']:+.2f}"),
        ("runs tested (seed A / seed B)", f"{sel['seed_a']} / {sel['seed_b']}"),
        ("McNemar n01 / n10", f"{mcnemar['n01']} / {mcnemar['n10']}"),
        ("McNemar χ² = (n01−n10)²/(n01+n10)", f"{mcnemar['chi2']:.2f}"),
        ("McNemar p (χ², exact binomial)", f"{_p(mcnemar['p_chi2'])}, {_p(mcnemar['p_exact'])}"),
        (f"permutation test p ({perm['n_resamples']} sign flips)", _p(perm["p"])),
        ("Cohen's d (per sample)", "–" if sel["cohens_d"] is None else f"{sel['cohens_d']:.3f}"),
    ]
    if res["cohens_d_seeds"] is not None:
        rows.append(("Cohen's d (across seeds)", f"{res['cohens_d_seeds']:.3f}"))
    best_a, best_b = res["a"]["best_epoch_top1"], res["b"]["best_epoch_top1"]
    if best_a and best_b:  # reported, not tested: chosen on the evaluation split itself
        where = escape(str(res["a"]["best_epoch_selected_on"]))
        figures = " / ".join(format_mean_se(b["mean"], b["se"]) for b in (best_a, best_b))
        rows.append((f"A / B best-epoch top-1 % (chosen on {where}; not tested)", figures))
    for name, value in rows:
        table.add_row(name, value)
    if len(res["per_seed"]) < 2:
        return [table]
    per = Table(title="per seed", box=box.SIMPLE_HEAD)
    for col in ("seed", "A %", "B %", "Δ", "χ²", "McNemar p", "perm. p"):
        per.add_column(col, justify="right")
    for r in res["per_seed"]:
        per.add_row(
            str(r["seed"]), f"{r['top1_a']:.2f}", f"{r['top1_b']:.2f}", f"{r['mean_difference']:+.2f}",
            f"{r['mcnemar']['chi2']:.2f}", _p(r["mcnemar"]["p_chi2"]), _p(r["permutation"]["p"]),
        )  # fmt: skip
    return [table, per]


def bench_eval_table(res: dict) -> Table:
    """The table of :func:`e2mc_cli.benchmarks.eval.bench_eval`: time and top-1 of both modes."""
    ck = res["checkpoint"]
    title = escape(
        f"linear probe, {ck['arch']} ({ck['base']}), {res['data']} {res['labels']} labels "
        f"({res['train_size']} images), {res['epochs']} epochs, {res['device']}, {res['precision']}"
    )
    table = Table(title=title, box=box.SIMPLE_HEAD)
    columns = (
        "mode",
        "wall s",
        "val features s",
        "train features s",
        "training s",
        "top-1 %",
        "best-epoch *",
    )
    for col in columns:
        table.add_column(col, justify="right")
    for name in ("cached", "standard"):
        r = res[name]
        table.add_row(
            name, f"{r['wall_s']:.1f}", f"{r['val_features_s']:.1f}", f"{r['train_features_s']:.1f}",
            f"{r['train_s']:.1f}", f"{r['top1']:.2f}", f"{r['best_top1']:.2f} (epoch {r['best_epoch']})",
        )  # fmt: skip
    return table
