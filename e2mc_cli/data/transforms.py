"""The one evaluation preprocessing: what a checkpoint's images go through before its backbone.

Every consumer asks :func:`eval_preprocessing` for an :class:`EvalPreprocessing` record and builds
the transform with :func:`eval_transform` (``sslboost eval``, ``inspect``) or renders timm's
``pretrained_cfg`` fields with :meth:`EvalPreprocessing.timm_fields` (the exported
``config.json``), so the three see the same image size, crop, interpolation, mean and std.

The rules (those of ``sslboost eval``, whose results the README reports):

- **Dataset kind.** :data:`NATIVE` is a small-image dataset used at its native size (the built-in
  Fashion-MNIST, 28 px): the whole image is kept (``crop_pct`` 1). :data:`PHOTOS` is any other
  (ImageFolder) data: resize the short side to ``round(PX / crop_pct)``, centre-crop ``PX``,
  ``crop_pct`` = 224/256 as in the official evaluation code.
- **Image size** PX: the one asked for (``--image-size``), else :func:`trained_image_size`, the
  size the checkpoint was trained at (its recipe's ``[views] image_size``), else the dataset
  kind's size (:func:`default_image_size`: 28 for :data:`NATIVE`, 224 for :data:`PHOTOS`).
- **Normalisation**: ImageNet's mean and the authors' evaluation std (0.228, 0.224, 0.225)
  (:data:`AUTHORS_EVAL_STD`) for every method: the E2MC authors' ``eval_linear.py`` and
  ``eval_semisup.py``, taken from SwAV's, evaluate every base with it (the official VICReg and
  SimSiam probes use ImageNet's 0.229; Table 1's figures came from the authors' scripts). The
  training views keep each method's own normalisation (:mod:`e2mc_cli.data.augment`).
- **Interpolation**: bilinear, antialiased.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from e2mc_cli.data import fmnist
from e2mc_cli.data.datasets import is_fmnist_spec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SWAV_STD = (0.228, 0.224, 0.225)  # the official SwAV code's training views (data/augment.py)
# The std of the E2MC authors' evaluation scripts (eval_linear.py, eval_semisup.py), for every method.
AUTHORS_EVAL_STD = (0.228, 0.224, 0.225)

REFERENCE_SIZE = 224  # the official recipes' full-resolution crop
NATIVE_IMAGE_SIZE = 28  # Fashion-MNIST's images
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 4096  # the image sizes (px) training and evaluation accept
STANDARD_CROP_PCT = 224 / 256  # the official evaluations: resize to 256, centre-crop 224
INTERPOLATION = "bilinear"

NATIVE = "native"
PHOTOS = "photos"
DATASET_KINDS = (NATIVE, PHOTOS)


class ToRGB:
    """PIL image of any mode, or a ``C × H × W`` / ``H × W`` tensor, → RGB PIL image.

    Grayscale is repeated over the three channels; a fourth (alpha) channel is dropped.
    """

    def __call__(self, img) -> Image.Image:
        if isinstance(img, Image.Image):
            return img if img.mode == "RGB" else img.convert("RGB")
        if isinstance(img, torch.Tensor):
            if img.ndim == 2:
                img = img.unsqueeze(0)
            if img.shape[-3] == 1:
                img = img.expand(3, *img.shape[-2:])
            elif img.shape[-3] == 4:
                img = img[..., :3, :, :]
            return v2.functional.to_pil_image(img)
        raise TypeError(f"expected a PIL image or a tensor, got {type(img).__name__}")


def normalised_tensor(mean, std) -> list:
    """The closing steps of an image pipeline: uint8 image → float in [0, 1] → ``(x − mean) / std``
    → plain tensor."""
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]


def dataset_kind(data) -> str:
    """:data:`NATIVE` for Fashion-MNIST (a dataset, a part of one, or a ``--data`` spec naming it),
    else :data:`PHOTOS`."""
    if isinstance(data, str):
        return NATIVE if is_fmnist_spec(data) else PHOTOS
    return NATIVE if isinstance(getattr(data, "parent", data), fmnist.FashionMNIST) else PHOTOS


def default_image_size(kind: str) -> int:
    """The image size of a dataset kind: 28 px for :data:`NATIVE`, 224 px for :data:`PHOTOS`."""
    if kind not in DATASET_KINDS:
        raise ValueError(f"dataset kind {kind!r}: expected one of {', '.join(DATASET_KINDS)}")
    return NATIVE_IMAGE_SIZE if kind == NATIVE else REFERENCE_SIZE


def trained_image_size(metadata: Mapping, kind: str = PHOTOS) -> int:
    """The image size a checkpoint was trained at: its recipe's ``[views] image_size`` (the
    metadata's ``recipe``, JSON text or a dict), else :func:`default_image_size` of ``kind``."""
    recipe = metadata.get("recipe") or {}
    if isinstance(recipe, str):
        try:
            recipe = json.loads(recipe)
        except json.JSONDecodeError:
            recipe = {}
    views = recipe.get("views") if isinstance(recipe, dict) else None
    size = views.get("image_size") if isinstance(views, dict) else None
    if isinstance(size, int) and not isinstance(size, bool) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        return size
    return default_image_size(kind)


@dataclass(frozen=True)
class EvalPreprocessing:
    """Resize the short side to :attr:`resize_size`, centre-crop :attr:`image_size`, normalise."""

    image_size: int  # the centre crop fed to the network, PX
    crop_pct: float  # PX / resized short side; 1 keeps the whole image
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize_size(self) -> int:
        """The short side before the crop: ``round(PX / crop_pct)``, at least PX."""
        return max(self.image_size, round(self.image_size / self.crop_pct))

    def timm_fields(self) -> dict:
        """The preprocessing fields of timm's ``pretrained_cfg`` (what ``resolve_data_config`` reads)."""
        return {
            "input_size": [3, self.image_size, self.image_size],
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": "center",
            "mean": list(self.mean),
            "std": list(self.std),
        }


def eval_preprocessing(metadata: Mapping, kind: str, image_size: int | None = None) -> EvalPreprocessing:
    """The evaluation preprocessing of a checkpoint (its ``metadata``: the recipe's image size) on
    data of ``kind``, at ``image_size`` px or the size it was trained at (see the module docstring)."""
    size = int(image_size) if image_size else trained_image_size(metadata, kind)
    return EvalPreprocessing(
        image_size=size,
        crop_pct=1.0 if kind == NATIVE else STANDARD_CROP_PCT,
        interpolation=INTERPOLATION,
        mean=IMAGENET_MEAN,
        std=AUTHORS_EVAL_STD,
    )


def eval_transform(prep: EvalPreprocessing) -> v2.Compose:
    """The transform of ``prep``: RGB, resize (antialiased), centre crop, normalise → float tensor."""
    return v2.Compose(
        [
            ToRGB(),
            v2.ToImage(),
            v2.Resize(prep.resize_size, interpolation=InterpolationMode(prep.interpolation), antialias=True),
            v2.CenterCrop(prep.image_size),
            *normalised_tensor(prep.mean, prep.std),
        ]
    )
