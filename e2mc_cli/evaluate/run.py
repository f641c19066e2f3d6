"""One evaluation of a checkpoint: data, label subsets, protocol per seed, and its output files.

``DIR/eval.json`` holds the protocol, labels, mode, seeds, per-seed top-1/top-5, mean ± standard
error, the identity of the data (spec, split sizes, SHA-256 of the training and validation sets)
and of each label subset (SHA-256 of the chosen indices), the hyperparameters and the checkpoint's
metadata. ``DIR/predictions.npz`` holds ``pred`` (seeds × validation samples, predicted class),
``target`` (true class), ``index`` (position in the validation set) and ``seeds``, for
:mod:`e2mc_cli.evaluate.compare`.

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
from e2mc_cli.data.transforms import NATIVE, dataset_kind, eval_preprocessing, eval_transform
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
from e2mc_cli.evaluate.stats import mean_se
from e2mc_cli.io import atomic_path, write_json_atomic

EVAL_FORMAT = "sslboost-eval/1"


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
    record: dict
    pred: np.ndarray  # [seeds, n_val]
    target: np.ndarray  # [n_val]

    def write(self, out_dir: str | Path) -> Path:
        """Write ``predictions.npz`` then ``eval.json`` (each atomically) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "predictions.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                pred=self.pred.astype(np.int32),
                target=self.target.astype(np.int32),
                index=np.arange(len(self.target), dtype=np.int64),
                seeds=np.asarray(self.record["seeds"], dtype=np.int64),
            )
        write_json_atomic(out / "eval.json", self.record)
        return out / "eval.json"


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
    if req.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {req.seeds}")
    if req.seed_list is not None and (
        not req.seed_list or len(set(req.seed_list)) != len(req.seed_list) or min(req.seed_list) < 0
    ):
        raise UserError(f"seeds must be distinct non-negative integers, got {req.seed_list}")
    if req.image_size is not None and req.image_size < 8:
        raise UserError(f"--image-size must be at least 8 px, got {req.image_size}")
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

    train = resolve_dataset(req.data, "train")
    if req.holdout:
        train, val = carve_validation(train, int(req.holdout))
    else:
        val = resolve_dataset(req.data, "val")
    num_classes = len(train.classes)
    kind = dataset_kind(train)
    prep = eval_preprocessing(ckpt.metadata, kind, req.image_size)
    image_size, crop_ratio = prep.image_size, prep.crop_pct
    eval_tf = eval_transform(prep)
    crop_scale = FX.SMALL_IMAGE_CROP_SCALE if kind == NATIVE else FX.STANDARD_CROP_SCALE
    train_tf = FX.train_transform(image_size, ckpt.method, crop_scale)
    log(
        f"data {req.data}: {len(train)} training / {len(val)} validation images, {num_classes} classes, "
        f"{image_size} px"
        + (
            f" ({train.skipped + val.skipped} unreadable files skipped)"
            if train.skipped + val.skipped
            else ""
        )
    )

    model = ckpt.build_model()
    backbone = model.backbone.to(device)
    initial_state = copy.deepcopy(backbone.state_dict()) if req.protocol == "semisup" else None
    seeds = list(req.seed_list) if req.seed_list is not None else list(range(req.seeds))
    subsets = [choose_subset(train, labels, s, subset_file=req.subset_file, out_dir=out_dir) for s in seeds]
    configs = [for_subset(cfg, len(s.indices)) for s in subsets]  # epochs for each labelled set
    if configs and configs[0].epochs != cfg.epochs:
        log(f"{configs[0].epochs} epochs ({configs[0].notes[-1]})")
    timings = {"val_features_s": 0.0, "train_features_s": 0.0, "train_s": 0.0}
    kwargs = {"device": device, "workers": req.workers}

    cache = features if features is not None else FX.FeatureCache()
    cache.bind(ckpt)
    view = (image_size, crop_ratio, ckpt.method)  # what the features depend on besides the images

    def cached_features(split: str, dataset, indices):
        key = (split, dataset.identity(), *view)
        return cache.get(key, backbone, dataset, indices, eval_tf, batch_size=256, **kwargs)

    val_feats = None
    if req.protocol in ("linear", "knn"):
        t = time.perf_counter()
        val_feats, _ = cached_features("val", val, np.arange(len(val)))
        timings["val_features_s"] = time.perf_counter() - t
    bank = {}
    if req.protocol == "knn" or (req.protocol == "linear" and req.mode == "cached"):
        union = np.unique(np.concatenate([s.indices for s in subsets]))
        t = time.perf_counter()
        feats, ys = cached_features("train", train, union)
        timings["train_features_s"] = time.perf_counter() - t
        bank = {"pos": {int(i): r for r, i in enumerate(union)}, "feats": feats, "labels": ys}
        log(f"features of {len(union)} training images in {timings['train_features_s']:.1f} s")

    target = torch.as_tensor(np.asarray(val.targets, dtype=np.int64))
    per_seed, preds = [], []
    for seed, subset, run_cfg in zip(seeds, subsets, configs):
        t = time.perf_counter()
        if bank:
            rows = torch.as_tensor([bank["pos"][int(i)] for i in subset.indices])
            xs, ys = bank["feats"][rows], bank["labels"][rows]
        if req.protocol == "knn":
            scores = KNN.knn_scores(
                xs, ys, val_feats, num_classes, k=run_cfg.k, temperature=run_cfg.temperature
            )
        elif req.protocol == "linear" and req.mode == "cached":
            head = LIN.train_on_features(xs, ys, num_classes, run_cfg, seed=seed, device=device)
            scores = LIN.predict(head, val_feats)
        elif req.protocol == "linear":
            head = LIN.train_standard(
                backbone, train, subset.indices, train_tf, num_classes, run_cfg, seed=seed, **kwargs
            )
            scores = LIN.predict(head, val_feats)
        else:
            backbone.load_state_dict(initial_state)
            clf = SEMI.finetune(
                backbone, train, subset.indices, train_tf, num_classes, run_cfg, seed=seed, **kwargs
            )
            scores = predict_images(clf, val, eval_tf, batch_size=256, **kwargs)
        timings["train_s"] += time.perf_counter() - t
        top1 = float(LIN.topk_correct(scores, target, 1).mean() * 100)
        top5 = float(LIN.topk_correct(scores, target, 5).mean() * 100)
        preds.append(scores.argmax(dim=1).numpy())
        per_seed.append(
            {
                "seed": seed,
                "top1": top1,
                "top5": top5,
                "train_size": int(len(subset.indices)),
                "epochs": run_cfg.epochs,
                "subset_sha256": subset.sha256,
            }
        )
        log(f"seed {seed}: top-1 {top1:.2f}  top-5 {top5:.2f}  ({len(subset.indices)} labelled images)")

    m1, se1 = mean_se([r["top1"] for r in per_seed])
    m5, se5 = mean_se([r["top5"] for r in per_seed])
    timings["total_s"] = time.perf_counter() - t_start
    record = {
        "format": EVAL_FORMAT,
        "protocol": req.protocol,
        "protocol_version": PROTOCOL_VERSION,
        "labels": labels,
        "mode": req.mode if req.protocol == "linear" else None,
        "seeds": seeds,
        "results": per_seed,
        "top1": {"mean": m1, "se": se1},
        "top5": {"mean": m5, "se": se5},
        "dataset": {
            "spec": str(req.data),
            "evaluated_on": f"{req.holdout} images held out from the training split"
            if req.holdout
            else "val",
            "num_classes": num_classes,
            "train_size": len(train),
            "val_size": len(val),
            "train_sha256": train.identity(),
            "val_sha256": val.identity(),
            "skipped": {"train": int(train.skipped), "val": int(val.skipped)},
            "image_size": image_size,
            "crop_ratio": crop_ratio,
            "train_crop_scale": list(crop_scale),
        },
        "subsets": [s.describe() for s in subsets],
        "hyperparameters": (configs[0] if configs else cfg).to_dict(),
        "checkpoint": checkpoint_record(ckpt, source),
        "device": str(device),
        "timings": timings,
        "sslboost": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return EvalResult(record, np.stack(preds), target.numpy())
