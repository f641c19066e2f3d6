"""One evaluation of a checkpoint: data, label subsets, protocol per seed, and its output files.

``DIR/eval.json`` holds the protocol, labels, mode, seeds, per-seed top-1/top-5, mean ± standard
error, the identity of the data (spec, split sizes, SHA-256 of the training and validation sets)
and of each label subset (SHA-256 of the chosen indices), the hyperparameters and the checkpoint's
metadata. ``DIR/predictions.npz`` holds ``pred`` (seeds × validation samples, predicted class),
``target`` (true class), ``index`` (position in the validation set) and ``seeds``, for
:mod:`e2mc_cli.evaluate.compare`. Both are written, and read back, by :mod:`e2mc_cli.evaluate.records`.

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
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.data.subsets import carve_validation, choose_subset, parse_labels
from e2mc_cli.data.transforms import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    NATIVE,
    dataset_kind,
    eval_preprocessing,
    eval_transform,
)
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
    for_subset,
    resolve_config,
)
from e2mc_cli.evaluate.records import EVAL_FORMAT, write_eval
from e2mc_cli.evaluate.stats import mean_se

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


@torch.inference_mode()
def predict_images(
    model: torch.nn.Module, dataset, transform, *, batch_size, device, workers
) -> torch.Tensor:
    """Logits of an image classifier over the whole of ``dataset`` (eval mode)."""
    model.eval()
    out = []
    for x, _ in FX.loader(dataset, np.arange(len(dataset)), transform, batch_size, workers=workers):
        with FX.autocast(device):
            out.append(model(x.to(device, non_blocking=True)).float().cpu())
    return torch.cat(out)


@dataclass
class _Data:
    """The two splits of one evaluation and the transforms that read them."""

    train: object
    val: object
    image_size: int
    crop_ratio: float
    crop_scale: tuple[float, float]
    eval_tf: Callable
    train_tf: Callable

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


def _load_data(req: EvalRequest, metadata: dict) -> _Data:
    """Training split and evaluation set (the validation split, or images held out of training),
    with the evaluation preprocessing of the checkpoint (``metadata``) on them."""
    train = resolve_dataset(req.data, "train")
    present = sorted(set(train.targets))
    if len(present) < 2:
        names = ", ".join(str(train.classes[c]) for c in present) or "none"
        raise UserError(
            f"--data {req.data}: {len(present)} class with images ({names}); an evaluation needs at least two"
        )
    if req.holdout:
        train, val = carve_validation(train, int(req.holdout))
    else:
        val = resolve_dataset(req.data, "val")
    kind = dataset_kind(train)
    prep = eval_preprocessing(metadata, kind, req.image_size)
    crop_scale = FX.SMALL_IMAGE_CROP_SCALE if kind == NATIVE else FX.STANDARD_CROP_SCALE
    return _Data(
        train=train,
        val=val,
        image_size=prep.image_size,
        crop_ratio=prep.crop_pct,
        crop_scale=crop_scale,
        eval_tf=eval_transform(prep),
        train_tf=FX.train_transform(prep.image_size, metadata.get("method"), crop_scale),
    )


def _describe(req: EvalRequest, data: _Data) -> str:
    skipped = data.train.skipped + data.val.skipped
    return (
        f"data {req.data}: {len(data.train)} training / {len(data.val)} validation images, "
        f"{data.num_classes} classes, {data.image_size} px"
        + (f" ({skipped} unreadable files skipped)" if skipped else "")
    )


@dataclass
class _Setup:
    """What every seed of one evaluation shares."""

    req: EvalRequest
    device: torch.device
    data: _Data
    backbone: torch.nn.Module
    initial_state: dict | None  # semisup: the backbone's weights before each fine-tuning

    @property
    def loader_kwargs(self) -> dict:
        return {"device": self.device, "workers": self.req.workers}


def _frozen_features(setup: _Setup, ckpt: Checkpoint, subsets, cache: FX.FeatureCache, timings, log):
    """(validation features or None, bank of the labelled training images' features or {})."""
    req, data = setup.req, setup.data
    cache.bind(ckpt)
    view = (data.image_size, data.crop_ratio, ckpt.method)  # what the features depend on besides the images

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


def _seed_scores(
    setup: _Setup, subset, cfg: ProtocolConfig, seed: int, val_feats, bank: dict
) -> torch.Tensor:
    """Validation scores of the classifier one seed trains on its labelled subset."""
    req, data, kwargs = setup.req, setup.data, setup.loader_kwargs
    if bank:
        rows = torch.as_tensor([bank["pos"][int(i)] for i in subset.indices])
        xs, ys = bank["feats"][rows], bank["labels"][rows]
    if req.protocol == "knn":
        return KNN.knn_scores(xs, ys, val_feats, data.num_classes, k=cfg.k, temperature=cfg.temperature)
    if req.protocol == "linear" and req.mode == "cached":
        head = LIN.train_on_features(xs, ys, data.num_classes, cfg, seed=seed, device=setup.device)
        return LIN.predict(head, val_feats)
    job = LIN.LabelledTraining(
        data.train, subset.indices, data.train_tf, data.num_classes, cfg, seed, **kwargs
    )
    if req.protocol == "linear":
        return LIN.predict(LIN.train_standard(setup.backbone, job), val_feats)
    setup.backbone.load_state_dict(setup.initial_state)
    clf = SEMI.finetune(setup.backbone, job)
    return predict_images(clf, data.val, data.eval_tf, batch_size=256, **kwargs)


def _seed_row(seed: int, subset, cfg: ProtocolConfig, scores: torch.Tensor, target: torch.Tensor) -> dict:
    return {
        "seed": seed,
        "top1": float(LIN.topk_correct(scores, target, 1).mean() * 100),
        "top5": float(LIN.topk_correct(scores, target, 5).mean() * 100),
        "train_size": int(len(subset.indices)),
        "epochs": cfg.epochs,
        "subset_sha256": subset.sha256,
    }


def _dataset_record(req: EvalRequest, data: _Data) -> dict:
    train, val = data.train, data.val
    return {
        "spec": str(req.data),
        "evaluated_on": f"{req.holdout} images held out from the training split" if req.holdout else "val",
        "num_classes": data.num_classes,
        "train_size": len(train),
        "val_size": len(val),
        "train_sha256": train.identity(),
        "val_sha256": val.identity(),
        "skipped": {"train": int(train.skipped), "val": int(val.skipped)},
        "image_size": data.image_size,
        "crop_ratio": data.crop_ratio,
        "train_crop_scale": list(data.crop_scale),
    }


def _record(setup: _Setup, labels: str, seeds, per_seed, subsets, cfg, ckpt, source, timings) -> dict:
    """The ``eval.json`` document (format :data:`~e2mc_cli.evaluate.records.EVAL_FORMAT`)."""
    req = setup.req
    m1, se1 = mean_se([r["top1"] for r in per_seed])
    m5, se5 = mean_se([r["top5"] for r in per_seed])
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
        "dataset": _dataset_record(req, setup.data),
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
    t_start = time.perf_counter()
    backbone = ckpt.build_model().backbone.to(device)  # a checkpoint that does not fit fails first
    data = _load_data(req, ckpt.metadata)
    log(_describe(req, data))

    initial_state = copy.deepcopy(backbone.state_dict()) if req.protocol == "semisup" else None
    setup = _Setup(req, device, data, backbone, initial_state)
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
        scores = _seed_scores(setup, subset, run_cfg, seed, val_feats, bank)
        timings["train_s"] += time.perf_counter() - t
        row = _seed_row(seed, subset, run_cfg, scores, target)
        per_seed.append(row)
        preds.append(scores.argmax(dim=1).numpy())
        top = f"top-1 {row['top1']:.2f}  top-5 {row['top5']:.2f}"
        log(f"seed {seed}: {top}  ({row['train_size']} labelled images)")

    timings["total_s"] = time.perf_counter() - t_start
    used = configs[0] if configs else cfg
    record = _record(setup, labels, seeds, per_seed, subsets, used, ckpt, source, timings)
    return EvalResult(record, np.stack(preds), target.numpy())
