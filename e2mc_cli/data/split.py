"""The loader workers' part of the split pipeline (``--augment split``): decode and geometry only.

:class:`SplitViews` turns one image into each view's **uint8** crop (random resized crop and
horizontal flip, done with PIL exactly as the official pipeline does them) and each view's
photometric parameters (:data:`~e2mc_cli.data.views.PARAMS`: jitter factors and order,
grayscale, blur σ, solarisation), which :mod:`e2mc_cli.data.device_stage` applies to the whole
batch on the training device.

Every parameter is drawn from torch's generator in the sequence the official torchvision
pipeline of the view (:func:`~e2mc_cli.data.augment.official_pipeline`) draws it, through
torchvision's own ``RandomResizedCrop.get_params`` and ``ColorJitter.get_params`` and the blur's
:meth:`~e2mc_cli.data.augment.RandomGaussianBlur.draw`: within a seeded item
(:class:`~e2mc_cli.data.pipeline.SeededViews`) the split views have the official views' crops,
flips and parameters, and a view that no photometric op touches is the official view bit for
bit. The horizontal flip commutes with every pointwise op and with the (symmetric) blur, so the
workers apply it to the crop even where the official pipeline flips last (SimSiam).

The crop is PIL's ``crop`` then ``resize`` (what torchvision runs on PIL images): resizing with
``box=`` instead reads pixels outside the box for the filter's support and gives other pixels.
JPEG DCT-domain downscaling (``Image.draft``, by 1/2, 1/4 or 1/8 while decoding) is not used:
the image is decoded once for all its views, so it could only apply where every view's crop is
at least twice the view in both sides, which no 224 px view of a 500 × 375 image is (375 < 448),
and it would change the pixels the official antialiased resize sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from e2mc_cli.data.augment import RandomGaussianBlur
from e2mc_cli.data.decode import EncodedImage
from e2mc_cli.data.transforms import ToRGB
from e2mc_cli.data.views import PARAMS, P, ViewRecipe

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


class Box(NamedTuple):
    """A crop: ``top``, ``left``, ``height``, ``width`` in pixels of the image."""

    top: int
    left: int
    height: int
    width: int


class Crops(NamedTuple):
    """A worker's item: each view's ``H × W × 3`` uint8 crop and the ``V × P`` parameters."""

    views: list[np.ndarray]
    params: torch.Tensor


class Encoded(NamedTuple):
    """A worker's item when the device decodes: the file's bytes (or the decoded ``3 × H × W``
    image, for a file the device cannot decode), each view's crop box (``V × 4``) and parameters."""

    payload: torch.Tensor
    boxes: torch.Tensor
    params: torch.Tensor


def _happens(p: float) -> bool:
    """One draw, as torchvision's random transforms make it: skipped when ``rand(1) >= p``
    (compared in float32, as the tensor comparison does)."""
    return torch.rand(1).item() < float(np.float32(p))


def _size_only(height: int, width: int) -> torch.Tensor:
    """A stand-in image of that size for torchvision's ``get_params`` (no memory behind it)."""
    return torch.empty((1, 1, 1), dtype=torch.uint8).expand(3, height, width)


def draw_view(recipe: ViewRecipe, blur: RandomGaussianBlur, image) -> tuple[Box, list[float]]:
    """The crop box and the :data:`~e2mc_cli.data.views.PARAMS` of one view of ``image`` (a PIL
    image or a tensor of its size), drawn in the order of the view's official pipeline."""
    row = [math.nan] * len(PARAMS)
    box = Box(*T.RandomResizedCrop.get_params(image, list(recipe.scale), list(recipe.ratio)))
    flip = False if recipe.flip_last else _happens(recipe.flip_p)
    row[P["jitter"]] = float(_happens(recipe.jitter_p))
    order = (0, 1, 2, 3)
    if row[P["jitter"]]:
        perm, *factors = T.ColorJitter.get_params(*recipe.jitter_ranges)
        order = tuple(perm.tolist())
        for name, f in zip(("brightness", "contrast", "saturation", "hue"), factors):
            row[P[name]] = math.nan if f is None else f
    for k, op in enumerate(order):
        row[P[f"order{k}"]] = float(op)
    row[P["grayscale"]] = float(_happens(recipe.grayscale_p))
    sigma = blur.draw()
    row[P["blur"]], row[P["sigma"]] = (0.0, math.nan) if sigma is None else (1.0, sigma)
    row[P["solarize"]] = float(recipe.solarize_p > 0 and _happens(recipe.solarize_p))
    if recipe.flip_last:
        flip = _happens(recipe.flip_p)
    row[P["flip"]] = float(flip)
    return box, row


def crop_view(image: Image.Image, box: Box, recipe: ViewRecipe, flip: bool) -> np.ndarray:
    """The ``size × size × 3`` uint8 crop of an RGB PIL image, as torchvision crops PIL images."""
    crop = image.crop((box.left, box.top, box.left + box.width, box.top + box.height))
    crop = crop.resize((recipe.size, recipe.size), RESAMPLE[recipe.interpolation])
    if flip:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop)


class SplitViews:
    """``image -> Crops`` (an :class:`~e2mc_cli.data.decode.EncodedImage` ``-> Encoded``): the
    workers' part of the split pipeline for the views of ``recipes``. Picklable."""

    def __init__(self, recipes: Sequence[ViewRecipe]):
        self.recipes = list(recipes)
        self.blurs = [RandomGaussianBlur(r.blur_p, r.blur_sigma) for r in self.recipes]
        self.to_rgb = ToRGB()

    def __len__(self) -> int:
        return len(self.recipes)

    def draw(self, image) -> tuple[list[Box], torch.Tensor]:
        """Every view's crop box and its parameters (``V × P`` float32) for ``image`` (a PIL
        image, or a tensor of its size)."""
        drawn = [draw_view(r, b, image) for r, b in zip(self.recipes, self.blurs)]
        return [d[0] for d in drawn], torch.tensor([d[1] for d in drawn], dtype=torch.float32)

    def __call__(self, image) -> Crops | Encoded:
        if isinstance(image, EncodedImage):
            boxes, params = self.draw(_size_only(image.height, image.width))
            return Encoded(image.data, torch.tensor(boxes, dtype=torch.int64), params)
        image = self.to_rgb(image)
        boxes, params = self.draw(image)
        flips = params[:, P["flip"]].tolist()
        views = [crop_view(image, b, r, f > 0) for b, r, f in zip(boxes, self.recipes, flips)]
        return Crops(views, params)
