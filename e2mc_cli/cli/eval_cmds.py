"""`sslboost eval`, `sslboost compare`, `sslboost bench eval`: the paper's evaluations and their
significance."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.markup import escape

from e2mc_cli.cli.app import app, bench_app, call_with_options, console, err_console
from e2mc_cli.cli.options import (
    BASE_ENV,
    DATA_ENV,
    ENVIRONMENT,
    base_option,
    device_option,
    json_option,
    log_option,
    precision_option,
    print_json,
    reads_environment,
    workers_option,
)
from e2mc_cli.errors import UserError
from e2mc_cli.io import write_json_atomic
from e2mc_cli.trackers import Trackers, eval_config, eval_records, eval_results

DEFAULT_BENCH_BASE = "fmnist-vicreg"
EVAL_PRECISION_HELP = (
    "bf16, fp16 or fp32: the arithmetic of the backbone's forward passes (default: the authors' "
    "evaluations', fp32)."
)


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
    precision: str | None = precision_option(EVAL_PRECISION_HELP),
    workers: int | None = workers_option(
        "Data-loading worker processes (default: none for in-memory data or under 1,024 images, "
        "else up to 8)."
    ),
    as_json: bool = json_option("Print eval.json to stdout instead of the table."),
    log: list[str] = log_option(),
) -> None:
    """Evaluate a checkpoint with the paper's protocols: linear probe, semi-supervised fine-tuning or kNN.

    Writes DIR/eval.json (per-seed top-1/top-5 of the final epoch, mean ± standard error, the best
    epoch's top-1 chosen on the evaluation split as the authors' scripts report it, data and subset
    identity, checkpoint metadata) and DIR/predictions.npz (the final epoch's per-sample predictions
    for `sslboost compare`). Feature extraction and classifier epochs show their progress on stderr.

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
    """The per-seed table of one evaluation (an :class:`~e2mc_cli.evaluate.records.EvalRecord`), its
    notes and where it was written."""
    from e2mc_cli.cli.tables import best_epoch_note, eval_table

    console.print(eval_table(rec, source))
    if rec.best_top1 is not None:
        console.print(escape(best_epoch_note(rec)), highlight=False, soft_wrap=True)
    for note in rec.document["hyperparameters"]["notes"]:
        console.print(f"note: {escape(note)}")
    total = rec.document["timings"]["total_s"]
    precision = f", {rec.precision}" if rec.precision else ""
    console.print(f"wrote {escape(str(rec.path))} and predictions.npz ({total:.1f} s{precision})")


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
    from e2mc_cli.cli.tables import compare_tables
    from e2mc_cli.evaluate.compare import compare

    res = compare(a, b, permutations=permutations, seed=seed)
    if out is not None:
        write_json_atomic(out, res)
    if as_json:
        print_json(res)
        return
    for table in compare_tables(res):
        console.print(table)
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
    precision: str | None = precision_option(EVAL_PRECISION_HELP),
    as_json: bool = json_option(),
) -> None:
    """Linear probe: wall time and top-1 of --mode cached against --mode standard (same everything else).

    Both modes train the same classifier for --epochs on the same labelled subset.

    Example:

        sslboost bench eval --epochs 20 --labels 10%
    """
    from e2mc_cli.benchmarks.eval import bench_eval
    from e2mc_cli.cli.tables import bench_eval_table
    from e2mc_cli.data.subsets import parse_labels
    from e2mc_cli.precision import check_precision

    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    if precision is not None:
        check_precision(precision)
    labels = parse_labels(labels)
    from e2mc_cli.zoo import resolve_base

    if base is not None:
        ckpt = resolve_base(base)
    else:
        try:  # the built-in base when the package ships it, else a fresh network
            ckpt = resolve_base(DEFAULT_BENCH_BASE)
        except UserError:
            ckpt = None
    res = bench_eval(
        ckpt,
        data=data,
        labels=labels,
        epochs=epochs,
        device=device,
        precision=precision,
        progress=_say(as_json),
    )
    if as_json:
        print_json(res)
        return
    console.print(bench_eval_table(res))
    console.print(
        f"cached is {res['speedup_total']:.1f}× faster end to end, {res['speedup_training']:.1f}× faster "
        f"in the part that differs (training inputs + classifier); top-1 difference "
        f"{res['top1_difference']:+.2f} points (final epoch). * the best scored epoch's top-1, chosen on the "
        "validation split itself, as the authors' evaluation scripts report it."
    )
