"""`sslboost eval`, `sslboost compare`, `sslboost bench eval`: the paper's evaluations and their
significance."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from e2mc_cli.cli.app import app, bench_app, call_with_options, console, err_console
from e2mc_cli.cli.options import (
    BASE_ENV,
    DATA_ENV,
    ENVIRONMENT,
    base_option,
    device_option,
    json_option,
    log_option,
    print_json,
    reads_environment,
    workers_option,
)
from e2mc_cli.errors import UserError
from e2mc_cli.io import write_json_atomic
from e2mc_cli.trackers import Trackers, eval_config, eval_records, eval_results

DEFAULT_BENCH_BASE = "fmnist-vicreg"


def _p(p: float) -> str:
    return "< 0.001" if p < 1e-3 else f"{p:.3f}"


def _progress_console(as_json: bool):
    """Where ``eval`` reports its progress: stdout, or stderr when stdout carries the JSON record
    (a failure is then still the last line on stderr)."""
    return err_console if as_json else console


def _say(quiet: bool):
    if quiet:
        return lambda msg: None
    return lambda msg: console.print(f"[dim]… {escape(msg)}[/]", highlight=False)


def _default_out(
    weights: Path | None, base: str | None, protocol: str, mode: str, labels: str, holdout: int = 0
) -> Path:
    from e2mc_cli.data.subsets import labels_tag

    name = f"eval-{protocol}" + (f"-{mode}" if protocol == "linear" else "") + f"-{labels_tag(labels)}"
    name += f"-holdout{holdout}" if holdout else ""
    if weights is not None:
        return weights.parent / name
    return Path("runs") / re.sub(r"[^A-Za-z0-9._-]+", "_", str(base)).strip("_") / name


@app.command("eval")
@reads_environment(*ENVIRONMENT)
def eval_cmd(
    weights: Path | None = typer.Option(None, "--weights", help="A canonical model.safetensors to evaluate."),
    base: str | None = base_option(help="Or a base: registry name, hf://ORG/NAME or path."),
    data: str = typer.Option(
        "fmnist",
        "--data",
        help="ImageFolder root with train/ and val/ class folders, or the built-in fmnist.",
    ),
    protocol: str = typer.Option("linear", "--protocol", help="linear, semisup or knn."),
    labels: str = typer.Option(
        "1%", "--labels", help="Labelled fraction of the training set: 1%, 10%, 100%."
    ),
    seeds: int = typer.Option(1, "--seeds", help="Runs with seeds 0..N-1 (the paper uses 3)."),
    mode: str = typer.Option(
        "standard",
        "--mode",
        help="linear only: standard (augmented crops every epoch) or cached (features once).",
    ),
    image_size: int | None = typer.Option(None, "--image-size", help="Pixels (default 224; fmnist 28)."),
    subset_file: Path | None = typer.Option(
        None, "--subset-file", help="Label subset: SimCLR's 1percent.txt-style list or a saved subset-*.json."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (semisup: the backbone's)."),
    head_lr: float | None = typer.Option(None, "--head-lr", help="semisup: the classifier's learning rate."),
    epochs: int | None = typer.Option(
        None,
        "--epochs",
        help="Epochs, run exactly (default: linear 100, semisup 20, raised on a labelled set smaller "
        "than ImageNet's 1 % to make the paper's 5,100 / 1,020 steps).",
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size."),
    wd: float | None = typer.Option(None, "--wd", help="Weight decay."),
    k: int | None = typer.Option(None, "--k", help="knn: neighbours (20)."),
    temperature: float | None = typer.Option(None, "--temperature", help="knn: vote temperature (0.07)."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Output folder (default: eval-<protocol>-<labels> next to --weights, or runs/<base>/…).",
    ),
    holdout: int = typer.Option(
        0,
        "--holdout",
        min=0,
        help="Evaluate on N class-balanced training images held out (a validation split for tuning; "
        "the test split is not read).",
    ),
    device: str = device_option(),
    workers: int | None = workers_option(
        "Data-loading worker processes (default: none for in-memory data or under 1,024 images, "
        "else up to 8)."
    ),
    as_json: bool = json_option("Print eval.json to stdout instead of the table."),
    log: list[str] = log_option(),
) -> None:
    """Evaluate a checkpoint with the paper's protocols: linear probe, semi-supervised fine-tuning or kNN.

    Writes DIR/eval.json (per-seed top-1/top-5, mean ± standard error, data and subset identity,
    checkpoint metadata) and DIR/predictions.npz (per-sample predictions for `sslboost compare`).
    Feature extraction and classifier epochs show their progress on stderr.

    Example:

        sslboost eval --weights runs/fmnist-vicreg-e2mc/model.safetensors --labels 10% --mode cached

        sslboost eval --base swav800 --data ~/imagenet --labels 1% --seeds 3 --log wandb
    """
    from e2mc_cli.checkpoint import load_checkpoint
    from e2mc_cli.data.subsets import parse_labels
    from e2mc_cli.evaluate.progress import EvalDisplay, showing
    from e2mc_cli.evaluate.records import parse_record
    from e2mc_cli.evaluate.run import EvalRequest, run_eval

    if (weights is None) == (base is None):
        raise UserError("give exactly one of --weights model.safetensors or --base NAME")
    labels = parse_labels(labels)
    if weights is not None:
        ckpt, source = load_checkpoint(weights), str(weights)
    else:
        from e2mc_cli.zoo import resolve_base

        ckpt, source = resolve_base(base), str(base)
    out_dir = out or _default_out(weights, base, protocol, mode, labels, holdout)
    req = call_with_options(
        EvalRequest,
        locals(),
        subset_file=str(subset_file) if subset_file is not None else None,
        overrides={
            "lr": lr,
            "head_lr": head_lr,
            "epochs": epochs,
            "batch_size": batch_size,
            "wd": wd,
            "k": k,
            "temperature": temperature,
        },
    )
    with showing(EvalDisplay(_progress_console(as_json))):
        result = run_eval(ckpt, req, source=source, out_dir=out_dir, log=_say(as_json))
    path = result.write(out_dir)
    with Trackers(log) as trackers:
        for where in trackers.start(out_dir, eval_config(result.record)):
            _progress_console(as_json).print(escape(where), highlight=False, soft_wrap=True)
        for record in eval_records(result.record):
            trackers.log_metrics(record)
        trackers.log_results(eval_results(result.record))
    if as_json:
        print_json(result.record)
        return
    _print_eval(parse_record(result.record, path), source)


def _print_eval(rec, source: str) -> None:
    """The per-seed table of one evaluation (an :class:`~e2mc_cli.evaluate.records.EvalRecord`)."""
    from e2mc_cli.evaluate.stats import format_mean_se

    what = rec.protocol + (f" ({rec.mode})" if rec.mode else "")
    table = Table(
        title=escape(f"{source}: {what}, {rec.labels} labels, {rec.dataset.spec}"), box=box.SIMPLE_HEAD
    )
    for col in ("seed", "labelled images", "top-1 %", "top-5 %"):
        table.add_column(col, justify="right")
    for r in rec.results:
        table.add_row(str(r.seed), str(r.train_size), f"{r.top1:.2f}", f"{r.top5:.2f}")
    table.add_section()
    top1, top5 = format_mean_se(rec.top1.mean, rec.top1.se), format_mean_se(rec.top5.mean, rec.top5.se)
    table.add_row("mean ± s.e.", "", top1, top5)
    console.print(table)
    for note in rec.document["hyperparameters"]["notes"]:
        console.print(f"note: {escape(note)}")
    total = rec.document["timings"]["total_s"]
    console.print(f"wrote {escape(str(rec.path))} and predictions.npz ({total:.1f} s)")


@app.command("compare")
def compare_cmd(
    a: Path = typer.Argument(..., help="Evaluation folder (or its eval.json) of model A, the reference."),
    b: Path = typer.Argument(..., help="Evaluation folder (or its eval.json) of model B."),
    as_json: bool = json_option("Print every figure as JSON to stdout instead of the tables."),
    out: Path | None = typer.Option(None, "--out", help="Also write every figure to this JSON file."),
    permutations: int = typer.Option(
        10_000, "--permutations", help="Sign-flip resamples of the permutation test."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the permutation test."),
) -> None:
    """Is B better than A? Mean top-1 difference, McNemar's test, paired permutation test, Cohen's d.

    A and B must be evaluations of the same data, labels and seeds (`sslboost eval` folders).

    Example:

        sslboost compare runs/x/eval-before/linear-1pct runs/x/eval-after/linear-1pct --out cmp.json
    """
    from e2mc_cli.evaluate.compare import compare
    from e2mc_cli.evaluate.stats import format_mean_se

    res = compare(a, b, permutations=permutations, seed=seed)
    if out is not None:
        write_json_atomic(out, res)
    if as_json:
        print_json(res)
        return
    sel = res["selected"]
    table = Table(
        title=f"B − A on {escape(str(res['dataset']['spec']))}, {res['labels']} labels", box=box.SIMPLE_HEAD
    )
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [
        ("A top-1 %", format_mean_se(res["top1_a"]["mean"], res["top1_a"]["se"])),
        ("B top-1 %", format_mean_se(res["top1_b"]["mean"], res["top1_b"]["se"])),
        ("mean difference (points)", f"{res['mean_difference']:+.2f}"),
        ("runs tested (seed A / seed B)", f"{sel['seed_a']} / {sel['seed_b']}"),
        ("McNemar n01 / n10", f"{sel['mcnemar']['n01']} / {sel['mcnemar']['n10']}"),
        ("McNemar χ² = (n01−n10)²/(n01+n10)", f"{sel['mcnemar']['chi2']:.2f}"),
        (
            "McNemar p (χ², exact binomial)",
            f"{_p(sel['mcnemar']['p_chi2'])}, {_p(sel['mcnemar']['p_exact'])}",
        ),
        (f"permutation test p ({sel['permutation']['n_resamples']} sign flips)", _p(sel["permutation"]["p"])),
        ("Cohen's d (per sample)", "–" if sel["cohens_d"] is None else f"{sel['cohens_d']:.3f}"),
    ]
    if res["cohens_d_seeds"] is not None:
        rows.append(("Cohen's d (across seeds)", f"{res['cohens_d_seeds']:.3f}"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if len(res["per_seed"]) > 1:
        per = Table(title="per seed", box=box.SIMPLE_HEAD)
        for col in ("seed", "A %", "B %", "Δ", "χ²", "McNemar p", "perm. p"):
            per.add_column(col, justify="right")
        for r in res["per_seed"]:
            per.add_row(
                str(r["seed"]),
                f"{r['top1_a']:.2f}",
                f"{r['top1_b']:.2f}",
                f"{r['mean_difference']:+.2f}",
                f"{r['mcnemar']['chi2']:.2f}",
                _p(r["mcnemar"]["p_chi2"]),
                _p(r["permutation"]["p"]),
            )
        console.print(per)
    if out is not None:
        console.print(f"wrote {escape(str(out))}")


@bench_app.command("eval")
@reads_environment(*BASE_ENV, *DATA_ENV)
def bench_eval_cmd(
    epochs: int = typer.Option(100, "--epochs", help="Epochs of both modes."),
    labels: str = typer.Option("10%", "--labels", help="Labelled fraction of the training set."),
    data: str = typer.Option("fmnist", "--data", help="Dataset (default: the built-in fmnist)."),
    base: str | None = base_option(
        help="Checkpoint to probe (default: fmnist-vicreg if installed, else a fresh resnet-mini)."
    ),
    device: str = device_option(),
    as_json: bool = json_option(),
) -> None:
    """Linear probe: wall time and top-1 of --mode cached against --mode standard (same everything else).

    Both modes train the same classifier for --epochs on the same labelled subset.

    Example:

        sslboost bench eval --epochs 20 --labels 10%
    """
    from e2mc_cli.benchmarks.eval import bench_eval
    from e2mc_cli.data.subsets import parse_labels

    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    labels = parse_labels(labels)
    from e2mc_cli.zoo import resolve_base

    if base is not None:
        ckpt = resolve_base(base)
    else:
        try:  # the built-in base when the package ships it, else a fresh network
            ckpt = resolve_base(DEFAULT_BENCH_BASE)
        except UserError:
            ckpt = None
    res = bench_eval(ckpt, data=data, labels=labels, epochs=epochs, device=device, progress=_say(as_json))
    if as_json:
        print_json(res)
        return
    c, s = res["cached"], res["standard"]
    table = Table(
        title=escape(
            f"linear probe, {res['checkpoint']['arch']} ({res['checkpoint']['base']}), {res['data']} "
            f"{res['labels']} labels ({res['train_size']} images), {res['epochs']} epochs, {res['device']}"
        ),
        box=box.SIMPLE_HEAD,
    )
    for col in ("mode", "wall s", "val features s", "train features s", "training s", "top-1 %"):
        table.add_column(col, justify="right")
    for name, r in (("cached", c), ("standard", s)):
        table.add_row(
            name,
            f"{r['wall_s']:.1f}",
            f"{r['val_features_s']:.1f}",
            f"{r['train_features_s']:.1f}",
            f"{r['train_s']:.1f}",
            f"{r['top1']:.2f}",
        )
    console.print(table)
    console.print(
        f"cached is {res['speedup_total']:.1f}× faster end to end, {res['speedup_training']:.1f}× faster "
        f"in the part that differs (training inputs + classifier); top-1 difference "
        f"{res['top1_difference']:+.2f} points."
    )
