"""Experiment trackers: the same records as ``metrics.jsonl``, in TensorBoard, Weights & Biases or CSV.

``--log tensorboard|wandb|csv`` (repeatable) on ``sslboost continue``, ``pretrain`` and ``eval``.
A command's :class:`Trackers` is started on its output folder with the resolved configuration (the
recipe of a training run, the protocol's hyperparameters of an evaluation) as hyperparameters,
fed every metrics record (a dict with its ``step``), then the final results (the run's summary and
its evaluations), and closed. Every tracker writes inside the output folder
(:data:`e2mc_cli.run_layout.TRACKER_OUTPUTS`):

- ``tensorboard``: ``tensorboard/`` (one scalar per record key, the configuration as HParams and
  as text); needs ``pip install 'sslboost[tensorboard]'``.
- ``wandb``: ``wandb/`` (a W&B run: history, config, summary; ``WANDB_MODE=offline`` keeps it
  local, ``WANDB_PROJECT`` names the project, default ``sslboost``); needs
  ``pip install 'sslboost[wandb]'``.
- ``csv``: ``metrics.csv`` (a row per record, a column per key) and ``results.csv`` (name, value).

A new run replaces a folder's tracker outputs; a resumed one (``resume_step``) continues them,
dropping what was logged after that step (TensorBoard's purge step, the CSV rows; W&B resumes the
same run id). Only the tracker packages are imported here, and only when a tracker starts.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from e2mc_cli.errors import UserError, unknown_choice
from e2mc_cli.run_layout import (
    CSV_METRICS_FILE,
    CSV_RESULTS_FILE,
    TENSORBOARD_DIR,
    TRACKER_OUTPUTS,
    WANDB_DIR,
)

EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "csv": None}  # tracker: the package it needs
WANDB_ID_FILE = "sslboost-run-id"


def extra_installed(package: str) -> bool:
    """Whether ``package`` can be imported (found without importing it)."""
    return importlib.util.find_spec(package) is not None


def check_trackers(names: Iterable[str]) -> list[str]:
    """``names`` without repeats, each a known tracker whose package is installed; else a
    :class:`UserError` naming the ``pip install`` command."""
    chosen: list[str] = []
    for name in names:
        if name not in EXTRAS:
            raise unknown_choice("tracker", name, EXTRAS)
        package = EXTRAS[name]
        if package is not None and not extra_installed(package):
            raise UserError(f"--log {name} needs the {package} package: pip install 'sslboost[{name}]'")
        if name not in chosen:
            chosen.append(name)
    return chosen


def flatten(config: dict, prefix: str = "") -> dict[str, str | int | float | bool]:
    """``{"optim": {"lr": 0.1}}`` → ``{"optim.lr": 0.1}``; lists as JSON text, ``None`` as ``"none"``."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = "none" if value is None else json.dumps(value)
    return flat


def scalars(record: dict) -> dict[str, float]:
    """The numeric values of a metrics record, ``step`` left out."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class CsvTracker:
    """``metrics.csv`` (a row per record; a key seen for the first time adds a column, rewriting the
    file once) and ``results.csv`` (``name,value``)."""

    def __init__(self, folder: Path, config: dict, resume_step: int | None):
        self.path, self.results = folder / CSV_METRICS_FILE, folder / CSV_RESULTS_FILE
        self.where = f"csv: {self.path} and {self.results}"
        self.rows: list[dict] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_step]
        self.columns = list(dict.fromkeys(k for r in self.rows for k in r)) or ["step"]
        self._rewrite()

    def _rewrite(self) -> None:
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)

    def log_metrics(self, record: dict) -> None:
        self.rows.append(record)
        new = [k for k in record if k not in self.columns]
        if new:
            self.columns += new
            self._rewrite()
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns, restval="").writerow(record)

    def log_results(self, results: dict[str, float]) -> None:
        with open(self.results, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "value"])
            writer.writerows(results.items())

    def close(self) -> None:
        pass


class TensorBoardTracker:
    """``tensorboard/``: a scalar per record key at its step; the configuration as text and as HParams
    (written with the results, whose keys are the HParams metrics)."""

    def __init__(self, folder: Path, config: dict, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(folder / TENSORBOARD_DIR), purge_step=purge, flush_secs=10)
        self.where = f"tensorboard: tensorboard --logdir {folder / TENSORBOARD_DIR}"
        self.hparams = flatten(config)
        self.last_step = resume_step or 0
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", self.last_step)

    def log_metrics(self, record: dict) -> None:
        self.last_step = int(record["step"])
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, self.last_step)

    def log_results(self, results: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        for key, value in results.items():
            self.writer.add_scalar(key, value, self.last_step)
        metrics = {k: v for k, v in results.items() if math.isfinite(v)}
        for summary in hparams(self.hparams, metrics):
            self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run in ``wandb/``: each record a history row at its step, the configuration as the
    run's config, the results in its summary. A resumed run continues the same run id."""

    def __init__(self, folder: Path, config: dict, resume_step: int | None):
        import wandb

        id_file = folder / WANDB_DIR / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if resume_step is not None and id_file.is_file() else ""
        run_id = run_id or uuid.uuid4().hex[:12]
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "sslboost"),
                name=folder.resolve().name,
                dir=str(folder),
                config=config,
                id=run_id,
                resume="allow",
                settings=wandb.Settings(console="off", silent=True),
            )
        except Exception as exc:  # no login, no network, bad settings: one line for the user
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"--log wandb: could not start a W&B run ({reason}); run `wandb login`, "
                "or set WANDB_MODE=offline"
            ) from None
        run_dir = Path(self.run.dir).parent
        self.where = (
            f"wandb: offline run {run_dir} (upload: wandb sync {run_dir})"
            if self.run.offline
            else (f"wandb: {self.run.url}")
        )

    def log_metrics(self, record: dict) -> None:
        self.run.log(scalars(record), step=int(record["step"]))

    def log_results(self, results: dict[str, float]) -> None:
        self.run.summary.update(results)

    def close(self) -> None:
        self.run.finish()


BACKENDS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "csv": CsvTracker}


def clear_tracker_outputs(folder: Path) -> None:
    """Remove what trackers wrote into ``folder`` earlier."""
    for name in TRACKER_OUTPUTS:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class Trackers:
    """The trackers of one command (names checked by :func:`check_trackers`); a context manager
    that closes them. Without names every call does nothing."""

    def __init__(self, names: Iterable[str] | None = ()):
        self.names = check_trackers(names or ())
        self.active: list = []
        self.results: dict[str, float] = {}

    def start(self, folder: str | Path, config: dict, *, resume_step: int | None = None) -> list[str]:
        """Open every tracker on ``folder`` with ``config`` as hyperparameters; ``resume_step``: a
        resumed run continues what was logged up to that step, else earlier outputs are replaced.
        Returns a line per tracker saying where to look."""
        if not self.names:
            return []
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            clear_tracker_outputs(folder)
        for name in self.names:
            self.active.append(BACKENDS[name](folder, config, resume_step))
        return [tracker.where for tracker in self.active]

    def log_metrics(self, record: dict) -> None:
        """One metrics record (a dict with its ``step``; the numeric values are logged)."""
        for tracker in self.active:
            tracker.log_metrics(record)

    def log_results(self, results: dict[str, float | None]) -> None:
        """Final figures (the run's summary, its evaluations); every tracker gets them all on close."""
        self.results.update({k: float(v) for k, v in results.items() if v is not None})

    def close(self) -> None:
        """Hand the results to every tracker and close it."""
        for tracker in self.active:
            if self.results:
                tracker.log_results(self.results)
            tracker.close()
        self.active = []

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tag(labels: str) -> str:
    return labels.replace("%", "pct")


def run_results(summary: dict) -> dict[str, float]:
    """The figures of a training run's ``summary.json`` kept as results (``run/steps``, …)."""
    keys = ("steps", "epochs_trained", "images_seen", "wall_time_s", "images_per_s", "skipped_files")
    return {f"run/{k}": summary[k] for k in keys if isinstance(summary.get(k), (int, float))}


def before_after_results(rows: list[dict], reference: dict | None = None) -> dict[str, float]:
    """The rows of ``continue --eval-after`` as results: ``eval/1pct/before_top1``, ``after_top1``,
    ``difference``, ``p_mcnemar``; with the recipe's study reference
    (:mod:`e2mc_cli.study.reference`), for each row it has: ``study_difference`` and
    ``study_difference_se`` (criterion − continued over its seeds, points), ``study_seeds``,
    ``study_above_zero`` and ``study_p_mcnemar`` (pooled)."""
    keys = {
        "before": "before_top1",
        "after": "after_top1",
        "difference": "difference",
        "p_mcnemar": "p_mcnemar",
    }
    out = {f"eval/{_tag(r['labels'])}/{name}": r[key] for r in rows for key, name in keys.items()}
    study = {
        "mean_difference": "study_difference",
        "se_difference": "study_difference_se",
        "n": "study_seeds",
        "above_zero": "study_above_zero",
        "p_mcnemar_pooled": "study_p_mcnemar",
    }
    from e2mc_cli.study.cells import column_name  # the reference's columns are the study's

    for r in rows:
        col = (reference or {}).get("columns", {}).get(column_name(r["labels"]))
        out.update({f"eval/{_tag(r['labels'])}/{name}": col[key] for key, name in study.items() if col})
    return out


def eval_config(record: dict) -> dict:
    """An ``eval.json`` document's description of the evaluation, as a tracker's configuration."""
    dataset = record.get("dataset", {})
    return {
        "protocol": record.get("protocol"),
        "protocol_version": record.get("protocol_version"),
        "labels": record.get("labels"),
        "mode": record.get("mode"),
        "seeds": record.get("seeds"),
        "data": dataset.get("spec"),
        "evaluated_on": dataset.get("evaluated_on"),
        "checkpoint": record.get("checkpoint", {}).get("source"),
        "hyperparameters": record.get("hyperparameters", {}),
    }


def eval_records(record: dict) -> list[dict]:
    """An ``eval.json`` document's per-seed results as metrics records (``step`` = position)."""
    return [{"step": i, **row} for i, row in enumerate(record.get("results", []))]


def eval_results(record: dict) -> dict[str, float]:
    """An ``eval.json`` document's means and standard errors: ``eval/top1``, ``eval/top1_se``, …"""
    out = {}
    for metric in ("top1", "top5"):
        figures = record.get(metric, {})
        out[f"eval/{metric}"], out[f"eval/{metric}_se"] = figures.get("mean"), figures.get("se")
    return out
