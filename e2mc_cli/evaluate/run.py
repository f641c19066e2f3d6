"""One evaluation of a checkpoint: data, label subsets, protocol per seed, and its output files.

``DIR/eval.json`` holds the protocol, labels, mode, seeds, precision, per-seed top-1/top-5 of the
final epoch and their mean ± standard error, the best epoch's top-1 of each seed (the classifier
is scored on the evaluation split after its scored epochs, :mod:`e2mc_cli.evaluate.scoring`) and
their mean, the identity of the data (spec, split sizes, SHA-256 of the training and validation
sets) and of each label subset (SHA-256 of the chosen indices), the hyperparameters and the
checkpoint's metadata. ``DIR/predictions.npz`` holds the final epoch's ``pred`` (seeds ×
validation samples, predicted class), ``target`` (true class), ``index`` (position in the
validation set) and ``seeds``, for :mod:`e2mc_cli.evaluate.compare`. Both are written, and read
back, by :mod:`e2mc_cli.evaluate.records`.

The forward passes run in ``--precision`` (:mod:`e2mc_cli.precision`), by default the authors'
evaluation precision (:data:`e2mc_cli.evaluate.protocols.EVAL_PRECISION`: fp32).

With ``holdout = N`` the evaluation set is not the data's validation split but ``N`` images carved
from the training split (:func:`e2mc_cli.data.subsets.carve_validation`); label subsets are drawn
from the rest. That is the split to choose hyperparameters on: the test split is never read.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from e2mc_cli import __version__
from e2mc_cli.checkpoint import Checkpoint
from e2mc_cli.data.subsets import choose_subset, parse_labels
from e2mc_cli.data.transforms import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate import features as FX
from e2mc_cli.evaluate import knn as KNN
from e2mc_cli.evaluate import linear as LIN
from e2mc_cli.evaluate import semisup as SEMI
from e2mc_cli.evaluate.protocols import (
    MODES,
    PROTOCOL_VERSION,
    PROTOCOLS,
    ProtocolConfig,
    default_precision,
    for_subset,
    resolve_config,
    scored_epochs,
)
from e2mc_cli.evaluate.records import EVAL_FORMAT, write_eval
from e2mc_cli.evaluate.scoring import EpochScores, predict_images, top1_percent, topk_correct
from e2mc_cli.evaluate.splits import EvalData, dataset_record, describe, load_eval_data
from e2mc_cli.evaluate.stats import mean_se
from e2mc_cli.precision import check_precision, resolve_precision

MAX_SEEDS = 1000  # evaluations of one checkpoint in one invocation
MAX_WORKERS = 256  # data-loader processes


@dataclass
class EvalRequest:
    """What to evaluate and how (the ``sslboost eval`` options)."""

    data: str = "fmnist"
    protocol: str = "linear"
    labels: str = "1%"
    seeds: int = 1
    seed_list: list[int] | None = None  # explicit seeds (default: 0 … seeds−1)
    mode: str = "standard"
    image_size: int | None = None
    subset_file: str | None = None
    device: str | None = None
    workers: int | None = None
    overrides: dict = field(default_factory=dict)  # lr, epochs, batch_size, wd, head_lr, k, temperature
    holdout: int = 0  # > 0: evaluate on this many training images held out (the test split is not read)
    precision: str | None = None  # bf16, fp16 or fp32; None: the method's (EVAL_PRECISION) for the device


@dataclass
class EvalResult:
    """An evaluation's ``eval.json`` document and its per-sample predictions."""

    record: dict
    pred: np.ndarray  # [seeds, n_val]
    target: np.ndarray  # [n_val]

    def write(self, out_dir: str | Path) -> Path:
        """Write ``predictions.npz`` then ``eval.json`` (each atomically) into ``out_dir``."""
        return write_eval(out_dir, self.record, self.pred, self.target)


def checkpoint_record(ckpt: Checkpoint, source: str) -> dict:
    """The checkpoint's metadata with its JSON fields parsed, and where it came from."""
    meta = {}
    for key, value in ckpt.metadata.items():
        if key in ("recipe", "heads", "report"):
            with contextlib.suppress(TypeError, ValueError):
                value = json.loads(value)
        meta[key] = value
    n_params = sum(t.numel() for k, t in ckpt.state_dict.items() if k.startswith("backbone."))
    return {"source": source, "backbone_parameters": int(n_params), "metadata": meta}


def _check(req: EvalRequest) -> None:
    if req.protocol not in PROTOCOLS:
        raise UserError(f"--protocol {req.protocol}: expected one of: {', '.join(PROTOCOLS)}")
    if req.mode not in MODES:
        raise UserError(f"--mode {req.mode}: expected one of: {', '.join(MODES)}")
    if not 1 <= req.seeds <= MAX_SEEDS:
        raise UserError(f"--seeds must be from 1 to {MAX_SEEDS}, got {req.seeds}")
    if req.workers is not None and not 0 <= req.workers <= MAX_WORKERS:
        raise UserError(f"--workers must be from 0 to {MAX_WORKERS}, got {req.workers}")
    if req.seed_list is not None and (
        not req.seed_list or len(set(req.seed_list)) != len(req.seed_list) or min(req.seed_list) < 0
    ):
        raise UserError(f"seeds must be distinct non-negative integers, got {req.seed_list}")
    if req.image_size is not None and not MIN_IMAGE_SIZE <= req.image_size <= MAX_IMAGE_SIZE:
        raise UserError(
            f"--image-size must be from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} px, got {req.image_size}"
        )
    parse_labels(req.labels)
    if req.precision is not None:
        check_precision(req.precision)


@dataclass
class _Setup:
    """What every seed of one evaluation shares."""

    req: EvalRequest
    device: torch.device
    data: EvalData
    backbone: torch.nn.Module
    initial_state: dict | None  # semisup: the backbone's weights before each fine-tuning
    precision: str = "fp32"  # of every forward pass through the backbone

    @property
    def loader_kwargs(self) -> dict:
        return {"device": self.device, "workers": self.req.workers, "precision": self.precision}


def _frozen_features(setup: _Setup, ckpt: Checkpoint, subsets, cache: FX.FeatureCache, timings, log):
    """(validation features or None, bank of the labelled training images' features or {})."""
    req, data = setup.req, setup.data
    cache.bind(ckpt)
    # what the features depend on besides the images
    view = (data.image_size, data.crop_ratio, ckpt.method, setup.precision)

    def cached_features(split: str, dataset, indices):
        key = (split, dataset.identity(), *view)
        return cache.get(
            key, setup.backbone, dataset, indices, data.eval_tf, batch_size=256, **setup.loader_kwargs
        )

    val_feats = None
    if req.protocol in ("linear", "knn"):
        t = time.perf_counter()
        val_feats, _ = cached_features("val", data.val, np.arange(len(data.val)))
        timings["val_features_s"] = time.perf_counter() - t
    bank = {}
    if req.protocol == "knn" or (req.protocol == "linear" and req.mode == "cached"):
        union = np.unique(np.concatenate([s.indices for s in subsets]))
        t = time.perf_counter()
        feats, ys = cached_features("train", data.train, union)
        timings["train_features_s"] = time.perf_counter() - t
        bank = {"pos": {int(i): r for r, i in enumerate(union)}, "feats": feats, "labels": ys}
        log(f"features of {len(union)} training images in {timings['train_features_s']:.1f} s")
    return val_feats, bank


def _epoch_scores(setup: _Setup, cfg: ProtocolConfig, val_feats, target: torch.Tensor) -> EpochScores:
    """The scoring of a classifier on the evaluation split after its scored epochs: a linear head on
    the validation features (moved to the device once), a fine-tuned network on the images."""
    epochs = frozenset(scored_epochs(cfg))
    if setup.req.protocol == "linear":
        on_device = val_feats.to(setup.device)
        return EpochScores(lambda head: LIN.predict(head, on_device), target, epochs)
    data, kwargs = setup.data, setup.loader_kwargs
    return EpochScores(
        lambda model: predict_images(model, data.val, data.eval_tf, batch_size=256, **kwargs), target, epochs
    )


def _seed_scores(
    setup: _Setup, subset, cfg: ProtocolConfig, seed: int, val_feats, bank: dict, target: torch.Tensor
) -> tuple[torch.Tensor, EpochScores | None]:
    """Final validation scores of the classifier one seed trains on its labelled subset, and the
    top-1 of its scored epochs (``None`` for kNN, which has no epochs)."""
    req, data, kwargs = setup.req, setup.data, setup.loader_kwargs
    if bank:
        rows = torch.as_tensor([bank["pos"][int(i)] for i in subset.indices])
        xs, ys = bank["feats"][rows], bank["labels"][rows]
    if req.protocol == "knn":
        scores = KNN.knn_scores(xs, ys, val_feats, data.num_classes, k=cfg.k, temperature=cfg.temperature)
        return scores, None
    track = _epoch_scores(setup, cfg, val_feats, target)
    if req.protocol == "linear" and req.mode == "cached":
        LIN.train_on_features(
            xs, ys, data.num_classes, cfg, seed=seed, device=setup.device, after_epoch=track.after_epoch
        )
        return track.final_scores, track
    job = LIN.LabelledTraining(
        data.train, subset.indices, data.train_tf, data.num_classes, cfg, seed, **kwargs
    )
    if req.protocol == "linear":
        LIN.train_standard(setup.backbone, job, after_epoch=track.after_epoch)
    else:
        setup.backbone.load_state_dict(setup.initial_state)
        SEMI.finetune(setup.backbone, job, after_epoch=track.after_epoch)
    return track.final_scores, track


def _seed_row(seed: int, subset, cfg: ProtocolConfig, scores, target, track: EpochScores | None) -> dict:
    """One seed's results: the final epoch's top-1 / top-5 and, with epochs, the best epoch's."""
    row = {
        "seed": seed,
        "top1": top1_percent(scores, target),
        "top5": float(topk_correct(scores, target, 5).mean() * 100),
        "train_size": int(len(subset.indices)),
        "epochs": cfg.epochs,
        "subset_sha256": subset.sha256,
    }
    if track is not None:
        epoch, top1 = track.best
        row.update(best_top1=top1, best_epoch=epoch, epoch_top1=[list(pair) for pair in track.track])
    return row


def _record(setup: _Setup, labels: str, seeds, per_seed, subsets, cfg, ckpt, source, timings) -> dict:
    """The ``eval.json`` document (format :data:`~e2mc_cli.evaluate.records.EVAL_FORMAT`)."""
    req = setup.req
    m1, se1 = mean_se([r["top1"] for r in per_seed])
    m5, se5 = mean_se([r["top5"] for r in per_seed])
    best = None
    if req.protocol != "knn":
        mb, seb = mean_se([r["best_top1"] for r in per_seed])
        best = {"mean": mb, "se": seb, "selected_on": setup.data.evaluated_on}
    return {
        "format": EVAL_FORMAT,
        "protocol": req.protocol,
        "protocol_version": PROTOCOL_VERSION,
        "labels": labels,
        "mode": req.mode if req.protocol == "linear" else None,
        "seeds": seeds,
        "results": per_seed,
        "top1": {"mean": m1, "se": se1},
        "top5": {"mean": m5, "se": se5},
        "best_epoch_top1": best,
        "precision": setup.precision,
        "dataset": dataset_record(req.data, setup.data),
        "subsets": [s.describe() for s in subsets],
        "hyperparameters": cfg.to_dict(),
        "checkpoint": checkpoint_record(ckpt, source),
        "device": str(setup.device),
        "timings": timings,
        "sslboost": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_eval(
    ckpt: Checkpoint,
    req: EvalRequest,
    *,
    source: str = "",
    out_dir: str | Path | None = None,
    log: Callable[[str], None] = lambda msg: None,
    features: FX.FeatureCache | None = None,
) -> EvalResult:
    """Evaluate ``ckpt`` as ``req`` says; label subsets are saved under ``out_dir``.

    ``features`` shares frozen-backbone features between evaluations of the same checkpoint
    (``linear --mode cached`` and ``knn``; the features are the same whatever the labels).
    """
    _check(req)
    labels = parse_labels(req.labels)
    cfg: ProtocolConfig = resolve_config(req.protocol, ckpt.method, labels, **req.overrides)
    device = FX.pick_device(req.device)
    precision = resolve_precision(req.precision, default_precision(ckpt.method), device)
    t_start = time.perf_counter()
    backbone = ckpt.build_model().backbone.to(device)  # a checkpoint that does not fit fails first
    data = load_eval_data(req.data, ckpt.metadata, holdout=req.holdout, image_size=req.image_size)
    log(describe(req.data, data))

    initial_state = copy.deepcopy(backbone.state_dict()) if req.protocol == "semisup" else None
    setup = _Setup(req, device, data, backbone, initial_state, precision)
    seeds = list(req.seed_list) if req.seed_list is not None else list(range(req.seeds))
    subsets = [
        choose_subset(data.train, labels, s, subset_file=req.subset_file, out_dir=out_dir) for s in seeds
    ]
    configs = [for_subset(cfg, len(s.indices)) for s in subsets]  # epochs for each labelled set
    if configs and configs[0].epochs != cfg.epochs:
        log(f"{configs[0].epochs} epochs ({configs[0].notes[-1]})")
    timings = {"val_features_s": 0.0, "train_features_s": 0.0, "train_s": 0.0}
    cache = features if features is not None else FX.FeatureCache()
    val_feats, bank = _frozen_features(setup, ckpt, subsets, cache, timings, log)

    target = torch.as_tensor(np.asarray(data.val.targets, dtype=np.int64))
    per_seed, preds = [], []
    for seed, subset, run_cfg in zip(seeds, subsets, configs):
        t = time.perf_counter()
        scores, track = _seed_scores(setup, subset, run_cfg, seed, val_feats, bank, target)
        timings["train_s"] += time.perf_counter() - t
        row = _seed_row(seed, subset, run_cfg, scores, target, track)
        per_seed.append(row)
        preds.append(scores.argmax(dim=1).numpy())
        top = f"top-1 {row['top1']:.2f}  top-5 {row['top5']:.2f}"
        if track is not None:
            best = f"best epoch {row['best_epoch']}: top-1 {row['best_top1']:.2f}"
            top += f"; {best} (chosen on {data.evaluated_on})"
        log(f"seed {seed}: {top}  ({row['train_size']} labelled images)")

    timings["total_s"] = time.perf_counter() - t_start
    used = configs[0] if configs else cfg
    record = _record(setup, labels, seeds, per_seed, subsets, used, ckpt, source, timings)
    return EvalResult(record, np.stack(preds), target.numpy())
