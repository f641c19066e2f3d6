"""The evaluation record: the one writer and reader of ``eval.json`` (and its ``predictions.npz``).

``sslboost eval`` writes, into its output folder, ``eval.json`` (format ``sslboost-eval/2``): the
protocol and its version, labels, mode (linear only), seeds, the precision of the forward passes,
per-seed top-1 / top-5 **of the final epoch** (``top1``, ``top5``) and their mean ± standard error,
the identity of the data and label subsets, the hyperparameters and the checkpoint's metadata;
and ``predictions.npz``: the final epoch's ``pred`` (seeds × validation samples), ``target``,
``index`` and ``seeds``. A classifier trained for epochs (linear, semisup) also has, per seed, the
top-1 of every scored epoch (``epoch_top1``: ``[epoch, top1]`` pairs) and the best of them
(``best_top1`` at ``best_epoch``), and their mean ± standard error (``best_epoch_top1``, with
``selected_on``, the split the epoch was chosen on: the evaluation split itself). The best is the
figure the authors' evaluation scripts report (:mod:`e2mc_cli.evaluate.scoring`); the final one
is sslboost's headline, the one ``compare`` and ``study`` test.

Format ``sslboost-eval/1`` (no precision, no best epoch) is read too; its best-epoch fields are
``None``. Reading checks the format and the fields the readers use, and gives a typed
:class:`EvalRecord`; a file of another format is one :class:`~e2mc_cli.errors.UserError` naming
it. A record made under an older evaluation protocol than today's (:data:`PROTOCOL_VERSION`) is
read as well, and says so (:attr:`EvalRecord.outdated`, :attr:`EvalRecord.is_current`): its
numbers are not those today's protocol gives.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION, best_epoch, protocol_version_of
from e2mc_cli.io import atomic_path, write_json_atomic

EVAL_FORMAT = "sslboost-eval/2"
FORMAT_1 = "sslboost-eval/1"  # before the precision and the best epoch were recorded
READABLE_FORMATS = (EVAL_FORMAT, FORMAT_1)
EVAL_FILE = "eval.json"
PREDICTIONS_FILE = "predictions.npz"
PREDICTION_ARRAYS = ("pred", "target", "index", "seeds")


@dataclass(frozen=True)
class Accuracy:
    """Mean over seeds and its standard error (``None`` for one seed), in percent."""

    mean: float
    se: float | None


@dataclass(frozen=True)
class SeedResult:
    """One seed's run: its final-epoch accuracies, the labelled subset it trained on and, for a
    classifier trained for epochs (format 2), the top-1 of its scored epochs and the best of them
    (chosen on the evaluation split itself)."""

    seed: int
    top1: float
    top5: float
    train_size: int
    subset_sha256: str
    best_top1: float | None = None
    best_epoch: int | None = None
    epoch_top1: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class DatasetIdentity:
    """What the evaluation read: the data spec, the split evaluated on, sizes and checksums."""

    spec: str
    evaluated_on: str  # "val", or the training images held out (``--holdout``)
    num_classes: int
    train_size: int
    val_size: int
    train_sha256: str
    val_sha256: str
    image_size: int | None = None  # the evaluation preprocessing: centre crop (px) …
    crop_ratio: float | None = None  # … and crop / resized short side

    def differences(self, other: DatasetIdentity) -> list[str]:
        """The fields (sizes, checksums) in which ``other`` is other data than this."""
        keys = ("num_classes", "train_size", "val_size", "train_sha256", "val_sha256")
        return [k for k in keys if getattr(self, k) != getattr(other, k)]


@dataclass(frozen=True)
class EvalRecord:
    """A read ``eval.json``: typed fields, and ``document``, the whole JSON object as written."""

    path: Path
    protocol: str
    protocol_version: int
    labels: str
    mode: str | None
    seeds: list[int]
    results: list[SeedResult]
    top1: Accuracy  # of the final epoch
    top5: Accuracy  # of the final epoch
    dataset: DatasetIdentity
    checkpoint_source: str | None
    checkpoint_metadata: dict
    document: dict
    best_top1: Accuracy | None = None  # of each seed's best epoch; None: kNN, or format 1
    best_selected_on: str | None = None  # the split the best epochs were chosen on
    precision: str | None = None  # of the forward passes; None: format 1

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def is_current(self) -> bool:
        """Made under today's evaluation protocol."""
        return self.protocol_version == PROTOCOL_VERSION

    @property
    def outdated(self) -> bool:
        """Made under an older evaluation protocol than today's (evaluate it again)."""
        return self.protocol_version < PROTOCOL_VERSION


def record_path(path: str | Path) -> Path:
    """The ``eval.json`` of an evaluation folder, or ``path`` itself when it names the file."""
    p = Path(path)
    return p / EVAL_FILE if p.is_dir() else p


def _incomplete(where: Path, key: str) -> UserError:
    return UserError(f"{where}: an incomplete sslboost evaluation (no valid '{key}')")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _get(doc: dict, key: str, kind, where: Path, *, optional: bool = False, prefix: str = ""):
    """``doc[key]`` if it is a ``kind`` (or absent, when ``optional``); else a UserError."""
    value = doc.get(key)
    if value is None and optional:
        return None
    bad_number = isinstance(value, float) and not math.isfinite(value)  # JSON allows NaN, Infinity
    if isinstance(value, bool) or not isinstance(value, kind) or bad_number:  # true/false are no numbers
        raise _incomplete(where, prefix + key)
    return value


def _accuracy(doc: dict, key: str, where: Path) -> Accuracy:
    acc = _get(doc, key, dict, where)
    mean = _get(acc, "mean", (int, float), where, prefix=f"{key}.")
    se = _get(acc, "se", (int, float), where, optional=True, prefix=f"{key}.")
    return Accuracy(float(mean), None if se is None else float(se))


def _epoch_track(row: dict, where: Path) -> tuple[tuple[int, float], ...]:
    """``results.epoch_top1``: ``[epoch, top1]`` pairs, epochs increasing from 1."""
    pairs = _get(row, "epoch_top1", list, where, prefix="results.")
    track = []
    for pair in pairs:
        ok = isinstance(pair, list) and len(pair) == 2
        ok = ok and _is_int(pair[0]) and _is_number(pair[1]) and pair[0] > (track[-1][0] if track else 0)
        if not ok:
            raise _incomplete(where, "results.epoch_top1")
        track.append((int(pair[0]), float(pair[1])))
    if not track:
        raise _incomplete(where, "results.epoch_top1")
    return tuple(track)


def _seed_result(row, where: Path, with_epochs: bool) -> SeedResult:
    """One ``results`` row; ``with_epochs``: its scored epochs and their best must be there (and agree)."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: an incomplete sslboost evaluation (a result that is not an object)")
    result = SeedResult(
        seed=_get(row, "seed", int, where, prefix="results."),
        top1=float(_get(row, "top1", (int, float), where, prefix="results.")),
        top5=float(_get(row, "top5", (int, float), where, prefix="results.")),
        train_size=_get(row, "train_size", int, where, prefix="results."),
        subset_sha256=_get(row, "subset_sha256", str, where, prefix="results."),
    )
    if not with_epochs:
        return result
    track = _epoch_track(row, where)
    epoch = _get(row, "best_epoch", int, where, prefix="results.")
    top1 = float(_get(row, "best_top1", (int, float), where, prefix="results."))
    if (epoch, top1) != best_epoch(track):
        raise _incomplete(where, "results.best_top1")  # not the best of its own scored epochs
    return replace(result, best_top1=top1, best_epoch=epoch, epoch_top1=track)


def _dataset(doc: dict, where: Path) -> DatasetIdentity:
    data = _get(doc, "dataset", dict, where)

    def get(key: str, kind):
        return _get(data, key, kind, where, prefix="dataset.")

    return DatasetIdentity(
        spec=get("spec", str),
        # Records written before --holdout existed were all evaluated on the validation split.
        evaluated_on=_get(data, "evaluated_on", str, where, optional=True, prefix="dataset.") or "val",
        num_classes=get("num_classes", int),
        train_size=get("train_size", int),
        val_size=get("val_size", int),
        train_sha256=get("train_sha256", str),
        val_sha256=get("val_sha256", str),
        image_size=_get(data, "image_size", int, where, optional=True, prefix="dataset."),
        crop_ratio=_get(data, "crop_ratio", (int, float), where, optional=True, prefix="dataset."),
    )


def _seeds(doc: dict, where: Path) -> list[int]:
    seeds = _get(doc, "seeds", list, where)
    if not all(_is_int(s) for s in seeds):
        raise _incomplete(where, "seeds")
    return seeds


def _best(doc: dict, where: Path, with_epochs: bool) -> dict:
    """The best-epoch fields of :class:`EvalRecord` (``best_epoch_top1``; required ``with_epochs``)."""
    if not with_epochs:
        return {}
    best = _get(doc, "best_epoch_top1", dict, where)
    return {
        "best_top1": _accuracy(doc, "best_epoch_top1", where),
        "best_selected_on": _get(best, "selected_on", str, where, prefix="best_epoch_top1."),
    }


def parse_record(doc, path: str | Path) -> EvalRecord:
    """The :class:`EvalRecord` of a decoded ``eval.json`` document; a UserError naming ``path``
    unless it is an sslboost evaluation with every field the readers use."""
    where = Path(path)
    if not isinstance(doc, dict) or doc.get("format") not in READABLE_FORMATS:
        raise UserError(f"{where}: not an sslboost evaluation (format {EVAL_FORMAT!r} expected)")
    _get(doc, "protocol_version", int, where, optional=True)  # absent: made before versions (1)
    protocol = _get(doc, "protocol", str, where)
    current_format = doc["format"] == EVAL_FORMAT
    with_epochs = current_format and protocol != "knn"  # a classifier trained for epochs
    checkpoint = _get(doc, "checkpoint", dict, where)
    seeds = _seeds(doc, where)
    results = [_seed_result(r, where, with_epochs) for r in _get(doc, "results", list, where)]
    if len(set(seeds)) != len(seeds) or sorted(r.seed for r in results) != sorted(seeds):
        raise UserError(f"{where}: an incomplete sslboost evaluation (not one of 'results' per seed)")
    return EvalRecord(
        path=where,
        protocol=protocol,
        protocol_version=protocol_version_of(doc),
        labels=_get(doc, "labels", str, where),
        mode=_get(doc, "mode", str, where, optional=True),
        seeds=seeds,
        results=results,
        top1=_accuracy(doc, "top1", where),
        top5=_accuracy(doc, "top5", where),
        dataset=_dataset(doc, where),
        checkpoint_source=_get(checkpoint, "source", str, where, optional=True, prefix="checkpoint."),
        checkpoint_metadata=_get(checkpoint, "metadata", dict, where, prefix="checkpoint."),
        document=doc,
        precision=_get(doc, "precision", str, where) if current_format else None,
        **_best(doc, where, with_epochs),
    )


def read_record(path: str | Path) -> EvalRecord:
    """The record of an evaluation folder or its ``eval.json``; a UserError naming the file if
    there is none or it is not an sslboost evaluation."""
    file = record_path(path)
    if not file.is_file():
        raise UserError(
            f"{path}: no {EVAL_FILE} (expected an `sslboost eval` output folder or its {EVAL_FILE})"
        )
    try:
        doc = json.loads(file.read_text())
    except ValueError as exc:
        raise UserError(f"{file}: not valid JSON ({exc})") from None
    return parse_record(doc, file)


def read_current(path: str | Path) -> EvalRecord | None:
    """The record at ``path`` if there is one made under today's protocol, else ``None``."""
    if not record_path(path).is_file():
        return None
    record = read_record(path)
    return record if record.is_current else None


def read_predictions(folder: str | Path) -> dict[str, np.ndarray]:
    """``pred`` [seeds, n], ``target`` [n], ``index`` [n] and ``seeds`` of an evaluation folder."""
    npz = Path(folder) / PREDICTIONS_FILE
    if not npz.is_file():
        raise UserError(f"{folder}: no {PREDICTIONS_FILE} next to {EVAL_FILE}")
    try:
        with np.load(npz) as z:
            arrays = {k: z[k] for k in PREDICTION_ARRAYS}
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{npz}: unreadable predictions ({exc})") from None
    if arrays["pred"].ndim != 2 or arrays["pred"].shape[1] != len(arrays["target"]):
        raise UserError(f"{npz}: predictions and targets disagree in length")
    if arrays["seeds"].ndim != 1 or len(arrays["seeds"]) != arrays["pred"].shape[0]:
        raise UserError(f"{npz}: not one row of predictions per seed")
    return arrays


def correct_by_seed(predictions: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """``{seed: per-sample correctness}`` of :func:`read_predictions`' arrays."""
    target = predictions["target"]
    return {int(s): predictions["pred"][i] == target for i, s in enumerate(predictions["seeds"])}


def write_eval(out_dir: str | Path, document: dict, pred: np.ndarray, target: np.ndarray) -> Path:
    """Write ``predictions.npz`` then ``eval.json`` (each atomically) into ``out_dir``; return the
    path of ``eval.json``. ``document`` must be a record :func:`parse_record` reads."""
    out = Path(out_dir)
    parse_record(document, out / EVAL_FILE)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / PREDICTIONS_FILE) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            pred=pred.astype(np.int32),
            target=target.astype(np.int32),
            index=np.arange(len(target), dtype=np.int64),
            seeds=np.asarray(document["seeds"], dtype=np.int64),
        )
    write_json_atomic(out / EVAL_FILE, document)
    return out / EVAL_FILE
