"""``run_curve``: pre-train from scratch at each epoch budget, evaluate each model on held-out
training images, and write ``curve.json``, ``curve.md`` and ``curve.png``.

Each budget ``E`` is its own ``sslboost pretrain`` (:func:`e2mc_cli.pretrain.pretrain_options`):
``run.epochs = E`` with the recipe's schedule (warm-up and decay over the ``E`` epochs), so every
point is a finished model, as a base pre-trained for ``E`` epochs would be; every budget starts
from the same initial weights (the recipe and ``--seed``). Layout: ``DIR/epochs-<E>/train/`` (the
run folder, resumed from its last checkpoint by a later invocation, and by ``sslboost pretrain
--resume --out`` too), ``DIR/epochs-<E>/eval/`` (kNN and the cached linear probe,
:func:`e2mc_cli.study.cells.evaluate_checkpoint`) and ``DIR/epochs-<E>/result.json``, written
last: a budget with one (under today's evaluation protocol) is skipped, and so is a budget that
an earlier curve (``--earlier``, :mod:`e2mc_cli.curve.document`) finished. A run folder of another
recipe, length or seed under a budget's name is an error, whichever way the budget is settled.

Every evaluation reads ``--holdout N`` class-balanced images held out of the training split
(:func:`e2mc_cli.data.subsets.carve_validation`, the same for every budget); the test split is
never read. The linear probe's labelled images are drawn (with ``--seed``) from the rest. The
pre-training itself, which uses no labels, sees the whole training split, as the built-in bases
did; the held-out labels are used only to score.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from e2mc_cli.checkpoint import load_checkpoint
from e2mc_cli.curve.document import CURVE_FORMAT, earlier_results
from e2mc_cli.curve.render import render_curve_markdown, render_curve_png
from e2mc_cli.curve.verdict import PLATEAU_GAIN, doubling_gain, plateau_verdict
from e2mc_cli.data.datasets import check_validation_holdout
from e2mc_cli.data.subsets import parse_labels
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION
from e2mc_cli.io import write_json_atomic, write_text_atomic
from e2mc_cli.pretrain import pretrain_options, recipe_path
from e2mc_cli.run_layout import CHECKPOINT_FILE, RECIPE_FILE, STATE_FILE, SUMMARY_FILE
from e2mc_cli.study.cells import (
    EVAL_DIR,
    KNN,
    RESULT_FILE,
    TRAIN_KEYS,
    Log,
    StudyInterrupted,
    column_name,
    config_record,
    evaluate_checkpoint,
    quiet,
    read_current_result,
    run_training,
    train_done,
)
from e2mc_cli.training import recipe as R
from e2mc_cli.training.outputs import epoch_text
from e2mc_cli.training.snapshots import parse_points


@dataclass
class CurveConfig:
    """Everything ``sslboost curve`` needs (``None``: the recipe's or the protocol's default)."""

    recipe: str
    out: str | Path
    epochs: list[float] | str  # the budgets, e.g. "2,4,8,16,32"
    holdout: int = 10000  # training images held out for the evaluations (the test split is never read)
    seed: int = 0  # initial weights, data order, augmentations and the probe's label subset
    data: str = "fmnist"
    labels: str = "1%"
    eval_epochs: int | None = None
    batch_size: int | None = None
    sets: list[str] = field(default_factory=list)
    workers: int | None = None
    precision: str | None = None
    augment: str | None = None
    decode: str | None = None
    device: str = "auto"
    earlier: list[str] = field(default_factory=list)  # curve.json files whose finished budgets count here


def check_curve(cfg: CurveConfig) -> CurveConfig:
    """Validate the budgets, the split, the labels, every budget's recipe and the runs already in
    the budgets' folders up front."""
    cfg.epochs = parse_points(cfg.epochs, "--epochs")
    cfg.labels = parse_labels(cfg.labels)
    check_validation_holdout(cfg.holdout, cfg.data, "the curve")
    opts, path, spec = pretrain_options(cfg.recipe, cfg.out, seed=cfg.seed, sets=cfg.sets)
    criterion = R.load_toml(path).get("criterion", {}).get("name", "continued")
    try:
        R.resolve_recipe(
            spec.method, criterion, recipe_file=path, epochs=cfg.epochs[-1], batch_size=cfg.batch_size,
            sets=opts.sets,
        )  # fmt: skip
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    for e in cfg.epochs:
        check_run(cfg, e, budget_folder(cfg, e) / "train")
    return cfg


def budget_folder(cfg: CurveConfig, epochs: float) -> Path:
    """``DIR/epochs-<E>/``: one budget's run, evaluations and result."""
    return Path(cfg.out) / f"epochs-{epoch_text(epochs)}"


def recipe_name(recipe: str | Path) -> str:
    """The ``[recipe] name`` of a recipe (a shipped name or a file), as its runs record it."""
    path = recipe_path(recipe)
    return R.load_toml(path).get("recipe", {}).get("name", path.stem)


def check_run(cfg: CurveConfig, epochs: float, run_dir: Path) -> None:
    """A run already in ``run_dir`` is the one this budget asks for (recipe name, epochs, seed);
    else one :class:`UserError`, so that no other run is resumed or reported under its name."""
    path = run_dir / RECIPE_FILE
    if not path.is_file():
        return
    theirs = R.loads(path.read_text())
    asked = (recipe_name(cfg.recipe), float(epochs), cfg.seed)
    found = (theirs["recipe"].get("name"), float(theirs["run"]["epochs"]), theirs["run"]["seed"])
    if asked != found:
        raise UserError(
            f"{run_dir}: a run of {found[0]} for {found[1]:g} epochs with seed {found[2]}, not of {asked[0]} "
            f"for {asked[1]:g} epochs with seed {asked[2]}; remove it or choose another --out"
        )


def train_budget(cfg: CurveConfig, epochs: float, run_dir: Path) -> dict:
    """``sslboost pretrain --recipe R --epochs E`` into ``run_dir`` (resumed when it has a state)."""
    resume = (run_dir / STATE_FILE).is_file()
    argv = ["pretrain", "--recipe", str(cfg.recipe), "--data", str(cfg.data), "--epochs", f"{epochs:g}"]
    argv += ["--out", str(run_dir), *(a for s in [*cfg.sets, f"run.seed={cfg.seed}"] for a in ("--set", s))]
    new = {"seed": cfg.seed, "sets": cfg.sets, "epochs": epochs, "batch_size": cfg.batch_size}
    new = {} if resume else new
    opts, _, _ = pretrain_options(
        cfg.recipe, run_dir, resume=resume, data=cfg.data, workers=cfg.workers, precision=cfg.precision,
        augment=cfg.augment, decode=cfg.decode, overwrite=not resume, device=cfg.device, argv=argv, **new,
    )  # fmt: skip  (a resumed run keeps the recipe it started with)
    return run_training(opts, run_dir)


def run_budget(
    cfg: CurveConfig, epochs: float, log: Log = quiet, earlier: dict | None = None
) -> tuple[dict, bool]:
    """Pre-train (unless finished) and evaluate one budget of ``cfg`` as :func:`check_curve` returns
    it (which has checked the run in every budget's folder); ``(result, trained now)``. A result of
    the curve folder wins over ``earlier`` (the budget's point in an ``--earlier`` curve), and that
    over training it."""
    folder = budget_folder(cfg, epochs)
    run_dir = folder / "train"
    done = read_current_result(folder / RESULT_FILE)
    if done is not None:
        return done, False
    if earlier is not None:
        log(f"{epochs:g} epochs: finished in {earlier['from']}")
        return earlier, False
    trained = not train_done(run_dir)
    if trained:
        log(f"{epochs:g} epochs: pre-training")
        train_budget(cfg, epochs, run_dir)
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    log(f"{epochs:g} epochs: evaluating")
    model = run_dir / CHECKPOINT_FILE
    evals = evaluate_checkpoint(
        load_checkpoint(model), folder / EVAL_DIR, data=cfg.data, labels=[cfg.labels], knn=True,
        seeds=[cfg.seed], source=str(model), eval_epochs=cfg.eval_epochs, device=cfg.device,
        holdout=cfg.holdout, log=log,
    )  # fmt: skip
    result = {
        "epochs": epochs,
        "protocol_version": PROTOCOL_VERSION,
        "columns": {k: v["top1"][0] for k, v in evals.items()},
        "eval": evals,
        "train": {k: summary.get(k) for k in TRAIN_KEYS},
        "model": str(model),
    }
    write_json_atomic(folder / RESULT_FILE, result)
    return result, trained


def summarise_curve(cfg: CurveConfig, results: dict[float, dict], meta: dict) -> dict:
    """The ``curve.json`` document: per budget kNN and linear top-1, the gains over the previous
    doubling and the training time; the plateau verdict."""
    col = column_name(cfg.labels)
    knn = {e: r["columns"][KNN] for e, r in results.items()}
    linear = {e: r["columns"][col] for e, r in results.items()}
    points = []
    for e in cfg.epochs:
        r = results.get(e)
        if r is None:
            points.append({"epochs": e, "done": False})
            continue
        points.append(
            {
                "epochs": e,
                "done": True,
                "knn": knn[e],
                "linear": linear[e],
                "knn_gain": doubling_gain(knn, e),
                "linear_gain": doubling_gain(linear, e),
                "train_wall_time_s": r["train"].get("wall_time_s"),
                "steps": r["train"].get("steps"),
                "model": r["model"],
                **({"from": r["from"]} if "from" in r else {}),
            }
        )
    return {
        "format": CURVE_FORMAT,
        "config": config_record(cfg),
        "recipe": recipe_name(cfg.recipe),
        "linear_column": col,
        "protocol_version": PROTOCOL_VERSION,
        "evaluated_on": f"{cfg.holdout} images held out from the training split (not the test split)",
        "points": points,
        "plateau_gain": PLATEAU_GAIN,
        "verdict": asdict(plateau_verdict(knn)),
        "complete": all(p["done"] for p in points),
        **meta,
    }


def write_curve(cfg: CurveConfig, results: dict[float, dict], meta: dict) -> dict:
    """Write ``curve.json``, ``curve.md`` and ``curve.png``; the document."""
    doc = summarise_curve(cfg, results, meta)
    out = Path(cfg.out)
    write_json_atomic(out / "curve.json", doc)
    write_text_atomic(out / "curve.md", render_curve_markdown(doc))
    render_curve_png(doc, out / "curve.png")
    return doc


@dataclass
class CurveRun:
    """What one invocation did: the document it wrote last, the budgets trained and skipped."""

    curve: dict
    trained: list[float]
    skipped: list[float]
    status: str  # "complete" or "interrupted"


def run_curve(cfg: CurveConfig, *, log: Log = quiet, command: str = "") -> CurveRun:
    """Every missing budget, smallest first, then the outputs (see the module docstring)."""
    cfg = check_curve(cfg)
    earlier = earlier_results(
        cfg.earlier, recipe_name(cfg.recipe), config_record(cfg), column_name(cfg.labels)
    )
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results, trained, skipped, status = {}, [], [], "complete"
    try:
        for e in cfg.epochs:
            results[e], now = run_budget(cfg, e, log, earlier.get(e))
            (trained if now else skipped).append(e)
    except StudyInterrupted as exc:
        log(f"{exc}; run the same command again to resume")
        status = "interrupted"
    meta = {
        "command": command or "sslboost curve",
        "wall_time_s_this_run": round(time.perf_counter() - started, 1),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return CurveRun(write_curve(cfg, results, meta), trained, skipped, status)
