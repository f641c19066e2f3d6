"""The data of one evaluation: the training split, the evaluation set, the transforms that read
them, and their identity as ``eval.json`` records it.

The evaluation set is the data's validation split or, with ``holdout = N``, ``N`` images carved
from the training split (:func:`e2mc_cli.data.subsets.carve_validation`), label subsets then being
drawn from the rest. Both splits are read with the checkpoint's evaluation preprocessing
(:func:`e2mc_cli.data.transforms.eval_preprocessing`): its transform for scoring and frozen
features, random crops at its size, normalised alike, for training the classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.data.subsets import carve_validation
from e2mc_cli.data.transforms import NATIVE, dataset_kind, eval_preprocessing, eval_transform
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate import features as FX


@dataclass
class EvalData:
    """The two splits of one evaluation and the transforms that read them."""

    train: object
    val: object
    evaluated_on: str  # "val", or the training images held out
    image_size: int
    crop_ratio: float
    crop_scale: tuple[float, float]
    eval_tf: Callable
    train_tf: Callable

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


def load_eval_data(spec: str, metadata: dict, *, holdout: int = 0, image_size: int | None = None) -> EvalData:
    """Training split and evaluation set of ``--data spec`` (the validation split, or ``holdout``
    images held out of training), with the evaluation preprocessing of the checkpoint
    (``metadata``) at ``image_size`` px (else the size it was trained at)."""
    train = resolve_dataset(spec, "train")
    present = sorted(set(train.targets))
    if len(present) < 2:
        names = ", ".join(str(train.classes[c]) for c in present) or "none"
        raise UserError(
            f"--data {spec}: {len(present)} class with images ({names}); an evaluation needs at least two"
        )
    if holdout:
        train, val = carve_validation(train, int(holdout))
    else:
        val = resolve_dataset(spec, "val")
    kind = dataset_kind(train)
    prep = eval_preprocessing(metadata, kind, image_size)
    crop_scale = FX.SMALL_IMAGE_CROP_SCALE if kind == NATIVE else FX.STANDARD_CROP_SCALE
    return EvalData(
        train=train,
        val=val,
        evaluated_on=f"{holdout} images held out from the training split" if holdout else "val",
        image_size=prep.image_size,
        crop_ratio=prep.crop_pct,
        crop_scale=crop_scale,
        eval_tf=eval_transform(prep),
        train_tf=FX.train_transform(prep, crop_scale),
    )


def describe(spec: str, data: EvalData) -> str:
    """One line on the data: images per split, classes, image size, files skipped."""
    skipped = data.train.skipped + data.val.skipped
    return (
        f"data {spec}: {len(data.train)} training / {len(data.val)} validation images, "
        f"{data.num_classes} classes, {data.image_size} px"
        + (f" ({skipped} unreadable files skipped)" if skipped else "")
    )


def dataset_record(spec: str, data: EvalData) -> dict:
    """The ``dataset`` object of ``eval.json``: spec, split evaluated on, sizes, checksums, view."""
    train, val = data.train, data.val
    return {
        "spec": str(spec),
        "evaluated_on": data.evaluated_on,
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
