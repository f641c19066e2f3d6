"""The cells of a study: train and evaluate one ``(criterion, seed)`` (resumable), and evaluate the
base once.

Evaluations (``eval.json``) are read through :mod:`e2mc_cli.evaluate.records`; a study's own
``result.json`` files by :func:`read_current_result` (made under today's protocol, else ``None``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console

from e2mc_cli.checkpoint import load_checkpoint
from e2mc_cli.data.subsets import labels_tag
from e2mc_cli.evaluate import records
from e2mc_cli.evaluate.features import FeatureCache
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION, protocol_version_of
from e2mc_cli.evaluate.records import EvalRecord
from e2mc_cli.evaluate.run import EvalRequest, run_eval
from e2mc_cli.io import write_json_atomic
from e2mc_cli.publish import export_run
from e2mc_cli.run_layout import MODEL_FILE, STATE_FILE, SUMMARY_FILE
from e2mc_cli.study.config import StudyConfig, epoch_sets, sets_for
from e2mc_cli.training.loop import run
from e2mc_cli.training.plan import TrainOptions
from e2mc_cli.zoo import resolve_base

RESULT_FILE = "result.json"
EVAL_DIR = "eval"  # beside a result.json: its evaluations, one folder per column
KNN = "knn"
TRAIN_KEYS = ("status", "steps", "epochs_trained", "images_seen", "wall_time_s", "images_per_s")

Log = Callable[[str], None]


def quiet(_: str) -> None:
    """The default log: says nothing."""


# -- reading stored evaluations ------------------------------------------------------------------


def config_record(cfg) -> dict:
    """A study's, tune's or curve's configuration (a dataclass with an ``out`` folder) as its
    document records it, and as a later run that takes its results over compares it."""
    return {**asdict(cfg), "out": str(cfg.out)}


def read_current_result(path: Path) -> dict | None:
    """The study's ``result.json`` at ``path`` if it exists and was made under today's evaluation
    protocol, else ``None``. Its evaluations are named where they are now, ``eval/<column>/``
    beside it, whatever path they were written from: a study folder can be moved or read from
    another working directory."""
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if protocol_version_of(result) != PROTOCOL_VERSION:
        return None
    for evaluation in result.get("eval", {}).values():
        evaluation["path"] = str(path.parent / EVAL_DIR / Path(evaluation["path"]).name)
    return result


def read_correctness(path: str | Path) -> tuple[EvalRecord, dict, dict[int, np.ndarray]]:
    """``(eval record, arrays, {seed: per-sample correctness})`` of one evaluation folder."""
    record = records.read_record(path)
    arrays = records.read_predictions(record.folder)
    return record, arrays, records.correct_by_seed(arrays)


# -- evaluation ----------------------------------------------------------------------------------


def column_name(labels: str | None, protocol: str = "linear") -> str:
    """Table column of a protocol: ``linear 1%``, ``semisup 1%`` … or ``knn``."""
    return KNN if labels is None else f"{protocol} {labels}"


def _eval_folder(folder: Path, labels: str | None, protocol: str = "linear") -> Path:
    return folder / (KNN if labels is None else f"{protocol}-{labels_tag(labels)}")


def evaluate_checkpoint(
    ckpt,
    folder: str | Path,
    *,
    data: str,
    labels: list[str],
    knn: bool,
    seeds: list[int],
    source: str = "",
    eval_epochs: int | None = None,
    image_size: int | None = None,
    device: str = "auto",
    holdout: int = 0,
    mode: str = "cached",
    semisup: list[str] | tuple[str, ...] = (),
    log: Log = quiet,
) -> dict[str, dict]:
    """Linear probe at each label fraction (``mode`` ``cached``: features once; ``standard``: the
    paper's augmented crops every epoch), fine-tuning at each of ``semisup``, kNN (all labels).

    Each evaluation goes to ``folder/linear-<labels>/``, ``folder/semisup-<labels>/`` or
    ``folder/knn/`` (``eval.json`` + ``predictions.npz``); one already there (under today's
    protocol) is read back. The frozen features are extracted once and shared by every
    evaluation. Returns ``{column: {"top1": [...per seed], "seeds": [...], "path": folder}}``.
    """
    folder = Path(folder)
    cache = FeatureCache()
    out: dict[str, dict] = {}
    plan = [("linear", lab) for lab in labels] + [("semisup", lab) for lab in semisup]
    for protocol, lab in plan + ([("knn", None)] if knn else []):
        target = _eval_folder(folder, lab, protocol)
        record = records.read_current(target)
        if record is not None and protocol == "linear" and record.mode != mode:
            record = None  # a probe of the other mode: not this study's evaluation
        if record is None:
            overrides = {"epochs": eval_epochs} if (eval_epochs and lab is not None) else {}
            req = EvalRequest(
                data=data,
                protocol=protocol,
                labels=lab or "100%",
                seeds=len(seeds),
                seed_list=list(seeds),
                mode=mode,
                image_size=image_size,
                device=None if device == "auto" else device,
                workers=0 if protocol == "knn" or (protocol, mode) == ("linear", "cached") else None,
                overrides=overrides,
                holdout=holdout,
            )
            t = time.perf_counter()
            result = run_eval(ckpt, req, source=source, out_dir=target, features=cache)
            record = records.parse_record(result.record, result.write(target))
            log(f"  {column_name(lab, protocol)}: {time.perf_counter() - t:.1f} s")
        out[column_name(lab, protocol)] = {
            "seeds": [r.seed for r in record.results],
            "top1": [r.top1 for r in record.results],
            "path": str(target),
        }
    return out


def _evaluate(cfg: StudyConfig, ckpt, folder: Path, data: str, seeds: list[int], source: str, log: Log):
    """:func:`evaluate_checkpoint` into ``folder/eval`` with the study's evaluation settings."""
    return evaluate_checkpoint(
        ckpt,
        folder / EVAL_DIR,
        data=data,
        labels=cfg.labels,
        knn=cfg.knn,
        seeds=seeds,
        source=source,
        eval_epochs=cfg.eval_epochs,
        image_size=cfg.image_size,
        device=cfg.device,
        holdout=cfg.holdout,
        mode=cfg.probe_mode,
        log=log,
    )


# -- the cells -----------------------------------------------------------------------------------


def cell_name(criterion: str, seed: int) -> str:
    """``<criterion>-seed<k>``: the cell's folder under ``DIR/cells/`` and its name in reports."""
    return f"{criterion}-seed{seed}"


def cell_folder(cfg: StudyConfig, criterion: str, seed: int) -> Path:
    """``DIR/cells/<criterion>-seed<k>/``."""
    return Path(cfg.out) / "cells" / cell_name(criterion, seed)


def train_done(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` has finished (or stopped at its ``--max-steps``) and been
    exported."""
    summary = run_dir / SUMMARY_FILE
    if not (summary.is_file() and (run_dir / MODEL_FILE).is_file()):
        return False
    try:
        status = json.loads(summary.read_text()).get("status")
    except ValueError:
        return False
    return status in ("finished", "max_steps")


class StudyInterrupted(Exception):
    """A training run stopped on SIGINT/SIGTERM; the study (or curve) resumes when run again."""


def run_training(opts: TrainOptions, run_dir: Path) -> dict:
    """Train ``opts`` into ``run_dir`` (its progress appended to ``run_dir/../train.log``) and export
    the run folder; the run's summary. A run stopped by a signal raises :class:`StudyInterrupted`
    (the run resumes from its last checkpoint when trained again)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / "train.log", "a") as logf:
        result = run(opts, Console(file=logf, width=160, force_terminal=False))
    if result.is_main:
        export_run(run_dir)
    if result.status == "interrupted":
        raise StudyInterrupted(f"training of {run_dir.parent.name} interrupted")
    return result.summary


def train_cell(
    cfg: StudyConfig, data: str, criterion: str, seed: int, run_dir: Path, *, stop_at_snapshot: bool = False
) -> dict:
    """Continued pre-training of the base with ``criterion`` and ``run.seed = seed`` (the recipe is
    the one ``sslboost continue`` picks for this base and criterion); with ``stop_at_snapshot``
    only up to the run's next snapshot point (a later call resumes it from there)."""
    resume = (run_dir / STATE_FILE).is_file()
    sets = [*sets_for(cfg.sets, criterion), f"run.seed={seed}", *epoch_sets(cfg)]
    opts = TrainOptions(
        base=cfg.base,
        criterion=None if resume else criterion,
        data=data,
        out=str(run_dir),
        batch_size=None if resume else cfg.batch_size,
        image_size=None if resume else cfg.image_size,
        sets=[] if resume else sets,
        max_steps=cfg.max_steps,
        stop_at_snapshot=stop_at_snapshot,
        workers=cfg.workers,
        augment=cfg.augment,
        resume=resume,
        overwrite=not resume,
        device=cfg.device,
        argv=["study-cell", "--base", cfg.base, "--criterion", criterion, "--seed", str(seed)],
    )
    return run_training(opts, run_dir)


def train_if_needed(
    cfg: StudyConfig, data: str, criterion: str, seed: int, run_dir: Path, log: Log = quiet
) -> bool:
    """Train the cell's run unless it has finished (:func:`train_cell`); whether it trained now."""
    if train_done(run_dir):
        return False
    log(f"{cell_name(criterion, seed)}: training")
    train_cell(cfg, data, criterion, seed, run_dir)
    return True


def evaluate_cell(
    cfg: StudyConfig,
    data: str,
    key: tuple[str, int],
    model_path: Path,
    folder: Path,
    *,
    summary: dict,
    train_s: float,
    log: Log = quiet,
    what: str = "",
    extra: dict | None = None,
) -> dict:
    """Evaluate the model of cell ``key = (criterion, seed)`` at ``model_path`` into ``folder/eval``
    and write ``folder/result.json`` (``extra`` added to it); the result. ``summary``: the
    training run's; ``train_s``: the seconds this invocation trained it; ``what``: said after the
    cell's name in the log."""
    criterion, seed = key
    result_file = folder / RESULT_FILE
    t1 = time.perf_counter()
    stale = " (made under an older evaluation protocol)" if result_file.is_file() else ""
    log(f"{cell_name(criterion, seed)}{what}: evaluating{stale}")
    evals = _evaluate(cfg, load_checkpoint(model_path), folder, data, [seed], str(model_path), log)
    result = {
        "criterion": criterion,
        "seed": seed,
        "protocol_version": PROTOCOL_VERSION,
        "columns": {k: v["top1"][0] for k, v in evals.items()},
        "eval": evals,
        "train": {k: summary.get(k) for k in TRAIN_KEYS},
        "eval_wall_time_s": round(time.perf_counter() - t1, 3),
        "train_wall_time_s_this_run": round(train_s, 3),
        "model": str(model_path),
        **(extra or {}),
    }
    write_json_atomic(result_file, result)
    return result


def run_cell(cfg: StudyConfig, data: str, criterion: str, seed: int, log: Log = quiet) -> tuple[dict, bool]:
    """Train (unless already trained) and evaluate one cell; ``(result, trained now)``."""
    folder = cell_folder(cfg, criterion, seed)
    done = read_current_result(folder / RESULT_FILE)
    if done is not None:
        return done, False
    run_dir = folder / "train"
    t0 = time.perf_counter()
    trained = train_if_needed(cfg, data, criterion, seed, run_dir, log)
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    train_s = time.perf_counter() - t0
    result = evaluate_cell(
        cfg, data, (criterion, seed), run_dir / MODEL_FILE, folder, summary=summary, train_s=train_s, log=log
    )
    return result, trained


def run_base(cfg: StudyConfig, data: str, log: Log = quiet) -> dict:
    """Evaluate the base itself with seeds ``0 … S−1`` (``DIR/base/result.json``)."""
    folder = Path(cfg.out) / "base"
    result_file = folder / RESULT_FILE
    done = read_current_result(result_file)
    if done is not None:
        return done
    log("base: evaluating")
    evals = _evaluate(cfg, resolve_base(cfg.base), folder, data, list(range(cfg.seeds)), cfg.base, log)
    result = {
        "base": cfg.base,
        "protocol_version": PROTOCOL_VERSION,
        "columns": {k: v["top1"] for k, v in evals.items()},
        "eval": evals,
    }
    write_json_atomic(result_file, result)
    return result


def collect(cfg: StudyConfig) -> dict[tuple[str, int], dict]:
    """Results of the finished cells on disk (made under today's evaluation protocol)."""
    cells = {}
    for crit in cfg.criteria:
        for s in range(cfg.seeds):
            record = read_current_result(cell_folder(cfg, crit, s) / RESULT_FILE)
            if record is not None:
                cells[(crit, s)] = record
    return cells
