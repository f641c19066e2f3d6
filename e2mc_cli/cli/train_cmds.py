"""``sslboost continue``, ``sslboost recipes`` and ``sslboost bench train``."""

from __future__ import annotations

import sys

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from e2mc_cli.cli.app import app, bench_app, call_with_options, console, err_console
from e2mc_cli.cli.options import (
    ENVIRONMENT,
    allow_new_heads_option,
    augment_option,
    base_option,
    decode_option,
    device_option,
    epochs_option,
    json_option,
    log_option,
    precision_option,
    print_json,
    reads_environment,
    without_secrets,
    workers_option,
)
from e2mc_cli.run_layout import MODEL_FILE
from e2mc_cli.trackers import Trackers, before_after_results, run_results


@app.command("continue")
@reads_environment(*ENVIRONMENT)
def continue_(
    base: str = base_option(
        help="Base to start from: a registry name, hf://ORG/NAME, or a model.safetensors file."
    ),
    base_file: str = typer.Option(None, "--base-file", help="An official checkpoint file (with --method)."),
    method: str = typer.Option(None, "--method", help="Method of --base-file (see `sslboost bases`)."),
    allow_new_heads: bool = allow_new_heads_option(),
    criterion: str = typer.Option(
        None, "--criterion", help="Add-on criterion (default e2mc; see `sslboost criteria`)."
    ),
    data: str = typer.Option(None, "--data", help="ImageFolder root (train/<class>/*) or fmnist."),
    out: str = typer.Option(None, "--out", help="Run folder (default runs/<base>-<criterion>)."),
    recipe: str = typer.Option(None, "--recipe", help="A recipe TOML file instead of the shipped one."),
    epochs: float = epochs_option(),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Override run.batch_size (global)."),
    lr: float = typer.Option(
        None,
        "--lr",
        min=0.0,
        help="Override optim.lr (recipes with optim.lr_batch_scaling, VICReg's and SimSiam's, "
        "apply lr × batch size / 256 as the official code).",
    ),
    image_size: int = typer.Option(
        None, "--image-size", min=8, help="Scale every crop size by PX/224 (224 -> PX, 96 -> PX*96/224)."
    ),
    sets: list[str] = typer.Option(
        None, "--set", help="Override any recipe key: section.key=value (value read as TOML). Repeatable."
    ),
    max_steps: int = typer.Option(
        None, "--max-steps", min=1, help="Stop after N optimiser steps (all outputs written)."
    ),
    checkpoint_every: int = typer.Option(
        None, "--checkpoint-every", min=1, help="Override run.checkpoint_every."
    ),
    workers: int = workers_option(
        "Data-loading worker processes per training process (default: the usable CPU cores shared "
        "out over the node's training processes, one left to each)."
    ),
    augment: str = augment_option(),
    decode: str = decode_option(),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the backbone and heads."),
    precision: str = precision_option(),
    device: str = device_option(),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the outputs of an earlier run in --out."
    ),
    eval_after: bool = typer.Option(
        None,
        "--eval-after/--no-eval-after",
        help="Linear probe (1 % and 10 % labels, cached features) of base and result, as a table "
        "(default: on for the built-in fmnist-* bases).",
    ),
    log: list[str] = log_option(),
) -> None:
    """Continue the pre-training of a base with its own loss plus an add-on criterion.

    Writes the run folder --out: model.safetensors, recipe.toml, metrics.jsonl, summary.json,
    checkpoints/last.pt, and the exports (backbone.safetensors, config.json, README.md).

    Exit codes: 0 finished (or stopped by --max-steps, SIGINT or SIGTERM after saving);
    1 the loss became non-finite (the last good checkpoint is kept); 2 bad input; 3 a fault of
    the machine, such as a full disk (the last checkpoint is kept: --resume once it is cleared);
    130 interrupted.

    Example:

        sslboost continue --base fmnist-vicreg --criterion e2mc --epochs 0.5 --log tensorboard

        sslboost continue --base swav800 --data ~/imagenet --out runs/swav800-e2mc --resume
    """
    from e2mc_cli.training.plan import TrainOptions

    sets = list(sets or [])
    if checkpoint_every is not None:
        sets.append(f"run.checkpoint_every={checkpoint_every}")
    params = locals()
    opts = call_with_options(TrainOptions, params, recipe_file=recipe, compile=compile_, argv=_argv(params))
    with Trackers(log) as trackers:
        result = run_and_report(opts, trackers)
        if result is None:
            return
        if eval_after is None:
            from e2mc_cli.zoo import builtin_data

            eval_after = builtin_data(base) is not None
        if eval_after:
            trackers.log_results(before_after_results(*_before_after(result, base, base_file, method, data)))


def run_and_report(opts, trackers):
    """Train ``opts`` (logging to ``trackers``, a :class:`~e2mc_cli.trackers.Trackers`), export the
    run folder (backbone, config, model card) and print how it ended; ``None`` when it was
    interrupted (resume hint printed).

    A non-finite loss is one line and exit code 1 (the last good checkpoint is kept).
    """
    from e2mc_cli.errors import add_next_step
    from e2mc_cli.publish import export_run
    from e2mc_cli.training.loop import run
    from e2mc_cli.training.step import NonFiniteLoss

    try:
        result = run(opts, console, trackers)
    except NonFiniteLoss as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if result.is_main:
        try:
            export_run(result.out)
        except OSError as exc:  # a fault of the machine: the trained model is written already
            add_next_step(exc, f"write the exports with: sslboost export {result.out}")
            raise
    trackers.log_results(run_results(result.summary))
    s = result.summary
    if result.status == "interrupted":
        console.print(
            f"stopped at step {s['steps']} and saved {escape(str(result.out))}/checkpoints/last.pt; "
            f"continue with:\n  {escape(result.resume_command)}",
            highlight=False,
            soft_wrap=True,
        )
        return None
    done = "stopped at --max-steps" if result.status == "max_steps" else "finished"
    console.print(
        f"{done}: {s['steps']} steps, {s['images_seen']} images in {s['wall_time_s']:.1f} s "
        f"({s['images_per_s'] or 0:.1f} img/s), {s['skipped_files']} skipped files; "
        f"wrote {escape(str(result.out))}/model.safetensors (epoch {s['epoch']:g})",
        highlight=False,
        soft_wrap=True,
    )
    return result


def _before_after(result, base, base_file, method, data) -> tuple[list[dict], dict | None]:
    """Evaluate base and result (linear probe, 1 % and 10 % labels), print the table (and under it
    the seed spread of the recipe's study, where one ships for this recipe unchanged) and export
    the run folder again (its model card then holds the evaluations); the table's rows and the
    study reference (:mod:`e2mc_cli.study.reference`) or ``None``."""
    from e2mc_cli.cli.tables import before_after_table, study_reference_lines
    from e2mc_cli.evaluate.progress import EvalDisplay, showing
    from e2mc_cli.publish import export_run
    from e2mc_cli.study import before_after
    from e2mc_cli.study.reference import run_reference
    from e2mc_cli.zoo import builtin_data, resolve_base

    spec = data or builtin_data(base)
    if not spec or not (base or base_file):
        console.print("--eval-after: pass --base (and --data) to evaluate base and result", highlight=False)
        return [], None
    console.print("evaluating base and result (linear probe, cached features) …", highlight=False)
    with showing(EvalDisplay(console)):
        rows = before_after(
            resolve_base(base, base_file=base_file, method=method),
            result.out / MODEL_FILE,
            data=spec,
            out=result.out,
            base_source=base or str(base_file),
        )
    export_run(result.out)
    names = escape(base or str(base_file)), escape(str(result.out / MODEL_FILE))
    console.print(before_after_table(rows, *names))
    reference = run_reference(result.out, base, data=spec)
    for line in study_reference_lines(reference, [r["labels"] for r in rows]) if reference else []:
        console.print(escape(line), highlight=False, soft_wrap=True)
    console.print(
        f"evaluations in {escape(str(result.out))}/eval-before and eval-after "
        "(`sslboost compare` gives the other tests)",
        highlight=False,
        soft_wrap=True,
    )
    return rows, reference


_VALUE_OPTIONS = (
    "base", "base_file", "method", "criterion", "data", "out", "recipe", "epochs", "batch_size", "lr",
    "image_size", "max_steps", "checkpoint_every", "workers", "precision", "augment", "decode", "device",
)  # fmt: skip
_FLAGS = {name: "--" + name.replace("_", "-") for name in _VALUE_OPTIONS}


def _argv(params: dict) -> list[str]:
    """The command line as typed (``sys.argv``), or rebuilt from the options when called in-process."""
    if sys.argv[1:2] == ["continue"]:
        return without_secrets(sys.argv[1:])
    args = ["continue"]
    for name, flag in _FLAGS.items():
        value = params.get(name)
        if value is not None and not (name == "device" and value == "auto"):
            args += [flag, str(value)]
    for item in params.get("sets") or []:
        if not item.startswith("run.checkpoint_every=") or params.get("checkpoint_every") is None:
            args += ["--set", item]
    for item in params.get("log") or []:
        args += ["--log", item]
    for name, flag in (
        ("allow_new_heads", "--allow-new-heads"),
        ("compile_", "--compile"),
        ("resume", "--resume"),
        ("overwrite", "--overwrite"),
    ):
        if params.get(name):
            args.append(flag)
    return args


@app.command("recipes")
def recipes(json_: bool = json_option()) -> None:
    """List the shipped recipes (method, criterion, key coefficients, optimiser, source).

    `sslboost continue` picks the recipe of its base and criterion; --recipe takes another.

    Example:

        sslboost recipes --json
    """
    from e2mc_cli.training.recipe import list_recipes

    rows = list_recipes()
    if json_:
        print_json(rows)
        return
    for kind, title in (
        (
            "continue",
            "sslboost continue (other method/criterion pairs: <method>-continued + the criterion's defaults)",
        ),
        ("pretrain", "sslboost pretrain (from scratch)"),
    ):
        chosen = [r for r in rows if r["kind"] == kind]
        if not chosen:
            continue
        table = Table(title=title, box=box.SIMPLE, title_justify="left")
        table.add_column("name", no_wrap=True)
        table.add_column("criterion", no_wrap=True)
        table.add_column("coefficients", min_width=16)
        table.add_column("optimizer", no_wrap=True)
        table.add_column("lr", no_wrap=True)
        table.add_column("bs×ep", no_wrap=True)
        table.caption = "lr: as applied (optim.lr × batch/256 where the recipe scales it)"
        for r in chosen:
            coef = " ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["coefficients"].items()
            )
            table.add_row(
                r["name"],
                r["criterion"],
                coef or "-",
                str(r["optimizer"]),
                f"{r['effective_lr']:g}",
                f"{r['batch_size']}×{r['epochs']}",
            )
        console.print(table)


@bench_app.command("train")
def bench_train(
    method: str = typer.Option("all", "--method", help="A method of `sslboost bases`, or all."),
    arch: str = typer.Option("resnet-mini", "--arch", help="Backbone: resnet-mini, resnet18 or resnet50."),
    image_size: int = typer.Option(
        28, "--image-size", min=8, help="Full-resolution view size in px (default: the built-in recipes')."
    ),
    batch_size: int = typer.Option(
        256, "--batch-size", min=2, help="Images per step (default: the built-in recipes')."
    ),
    steps: int = typer.Option(10, "--steps", min=1, help="Timed steps per measurement (after warm-up)."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed steps before each measurement."),
    criterion: str = typer.Option("e2mc", "--criterion", help="Add-on criterion of the full step."),
    heads: str = typer.Option(
        "scaled", "--heads", help="scaled (official shapes × backbone width / 2048) or official."
    ),
    data: str = typer.Option(
        None,
        "--data",
        help="Images (an ImageFolder root, or fmnist): time the full step through the run's real loader "
        "against the same step on pre-loaded batches, and say which of the two bounds it.",
    ),
    workers: int = workers_option("Data-loading workers with --data (default: as `sslboost continue`)."),
    augment: str = augment_option("Where the views are made with --data: cpu or split (as a new run's)."),
    device: str = device_option(),
    json_: bool = json_option(),
) -> None:
    """Images/s of a full training step vs a bare backbone forward+backward on the same views.

    The difference is what the method's heads, its loss and the criterion cost. With --data, the
    full step through the real loader (its workers, the views finished on the device) vs the same
    step on batches already in memory: loader-bound or compute-bound.

    Example:

        sslboost bench train --method vicreg --arch resnet50 --image-size 224 --device cuda

        sslboost bench train --data ~/imagenet --method vicreg --arch resnet50 --image-size 224
    """
    if data is not None:
        from e2mc_cli.benchmarks.train_loader import bench_train_loader

        report = call_with_options(bench_train_loader, locals(), methods=method)
    else:
        from e2mc_cli.benchmarks.train import bench_train as run_bench

        report = call_with_options(run_bench, locals(), methods=method)
    if json_:
        print_json(report)
        return
    console.print(_loader_table(report) if data is not None else _step_table(report))
    console.print(escape(report["note"]), highlight=False, soft_wrap=True)


def _title(cfg: dict, what: str) -> str:
    amp = ", bf16 + channels_last" if cfg["amp"] else ""
    return escape(
        f"{what} ({cfg['arch']}, {cfg['image_size']} px, batch {cfg['batch_size']}, {cfg['device']}{amp}, "
        f"criterion {cfg['criterion']})"
    )


def _step_table(report: dict) -> Table:
    table = Table(title=_title(report["config"], "training step vs bare backbone"))
    for col in ("method", "views", "full step img/s", "bare backbone img/s", "full / bare", "overhead"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        table.add_row(
            r["method"],
            r["views"],
            f"{r['full_img_s']:.1f}",
            f"{r['bare_img_s']:.1f}",
            f"{r['ratio']:.3f}",
            f"{r['overhead_pct']:+.1f} %",
        )
    return table


def _loader_table(report: dict) -> Table:
    cfg = report["config"]
    table = Table(title=_title(cfg, f"training step through the loader vs pre-loaded, {cfg['data']}"))
    table.caption = escape(
        f"{cfg['workers']} workers, prefetch {cfg['prefetch_factor']}, "
        f"{'pinned memory' if cfg['pin_memory'] else 'no pinned memory'}; views: {cfg['pipeline']}"
    )
    columns = ("method", "views", "loader img/s", "pre-loaded img/s", "loader / pre-loaded", "waiting")
    for col in (*columns, "bound"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        table.add_row(
            r["method"],
            r["views"],
            f"{r['loader_img_s']:.1f}",
            f"{r['preloaded_img_s']:.1f}",
            f"{r['ratio']:.3f}",
            f"{r['wait_share']:.0%}",
            r["bound"],
        )
    return table
