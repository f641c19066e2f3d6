"""The methods' official view pipelines with ``torchvision.transforms.v2``.

``vicreg_views``, ``swav_views`` and ``simsiam_views`` (``builder(image_size, **options)``, the
options being a method spec's ``view_options``) return one pipeline per view, full-resolution
views first; :func:`e2mc_cli.methods.view_transform` wraps them in a picklable :class:`MultiView`,
``image -> list[Tensor]``, reproducing each official training pipeline:

- **VICReg** (``augmentations.py``): 2 views, RandomResizedCrop(224, scale 0.08–1, bicubic),
  flip, ColorJitter(0.4, 0.4, 0.2, 0.1) p = 0.8, grayscale p = 0.2, Gaussian blur σ ∈ [0.1, 2]
  with p = 1.0 / 0.1, solarisation p = 0 / 0.2 (view 1 / view 2).
- **SwAV** (``src/multicropdataset.py`` and the multi-crop scripts): 2 × 224 (scale 0.14–1)
  + 6 × 96 (scale 0.05–0.14), flip, colour distortion of strength 1 (ColorJitter(0.8, 0.8, 0.8,
  0.2) p = 0.8, grayscale p = 0.2), Gaussian blur σ ∈ [0.1, 2] p = 0.5; normalised with the
  official std (0.228, 0.224, 0.225).
- **SimSiam** (``main_simsiam.py``): 2 views, RandomResizedCrop(224, scale 0.2–1),
  ColorJitter(0.4, 0.4, 0.4, 0.1) p = 0.8, grayscale p = 0.2, Gaussian blur σ ∈ [0.1, 2]
  p = 0.5, flip.

The pipelines work on PIL images as the official ones, and blur as they do: a PIL Gaussian blur
of standard deviation σ (an O(1)-per-pixel box-filter approximation, ~1.5 ms on a 224 px crop
where a 23-tap convolution on a tensor takes ~45 ms). ``image_size`` PX scales every length of
the recipe by PX / 224: crop sizes (224 → PX, 96 → round(PX·96/224)) and the blur σ range (so
the blur's extent, its effective kernel, scales too). Non-RGB images (grayscale, palette, RGBA,
CMYK) and tensors are converted to RGB PIL images first. All randomness comes from torch's
generator, so seeded data-loader workers give repeatable views.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode, v2

from e2mc_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, REFERENCE_SIZE, SWAV_STD, ToRGB
from e2mc_cli.errors import UserError

BLUR_SIGMA = (0.1, 2.0)

def scaled_size(size: int, image_size: int) -> int:
    """A length of the 224-px recipe at ``image_size`` px: round(size · image_size / 224), ≥ 1."""
    return max(1, round(size * image_size / REFERENCE_SIZE))


def crop_scale(scale, what: str = "views.scale") -> tuple[float, float]:
    """A crop's ``(low, high)`` share of the image area, ``0 < low ≤ high ≤ 1``; anything else is a
    :class:`UserError` naming the view option(s) ``what``."""
    pair = tuple(scale) if isinstance(scale, (list, tuple)) else ()
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
    if len(pair) != 2 or not numbers or not 0 < pair[0] <= pair[1] <= 1:
        got = list(pair) if pair else scale
        raise UserError(f"{what} must be two numbers 0 < low ≤ high ≤ 1, got {got!r}")
    return float(pair[0]), float(pair[1])


def gaussian_kernel_size(sigma: float) -> int:
    """Odd kernel covering ±3σ, at least 3 (for tensors; PIL images need no kernel size)."""
    return max(3, 2 * math.ceil(3 * sigma) + 1)


class RandomGaussianBlur:
    """With probability ``p``, blur with σ ~ U(``sigma``) — the official PIL ``GaussianBlur(σ)``.

    Tensors are blurred with :func:`torchvision.transforms.v2.functional.gaussian_blur` and an
    odd ±3σ kernel (:func:`gaussian_kernel_size`).
    """

    def __init__(self, p: float = 0.5, sigma: tuple[float, float] = BLUR_SIGMA):
        self.p, self.sigma = float(p), (float(sigma[0]), float(sigma[1]))

    def __call__(self, img):
        if self.p < 1.0 and torch.rand(()).item() >= self.p:
            return img
        s = self.sigma[0] + (self.sigma[1] - self.sigma[0]) * torch.rand(()).item()
        if isinstance(img, Image.Image):
            return img.filter(ImageFilter.GaussianBlur(radius=s))
        return v2.functional.gaussian_blur(img, [gaussian_kernel_size(s)] * 2, [s, s])

    def __repr__(self) -> str:
        return f"RandomGaussianBlur(p={self.p}, sigma={self.sigma})"


def _blur(p: float, image_size: int) -> RandomGaussianBlur:
    f = image_size / REFERENCE_SIZE
    return RandomGaussianBlur(p, (BLUR_SIGMA[0] * f, BLUR_SIGMA[1] * f))


class _Plain:
    """``tv_tensors.Image`` → plain tensor."""

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return t.as_subclass(torch.Tensor)


def _finish(mean: Sequence[float], std: Sequence[float]) -> list:
    return [
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        _Plain(),
    ]


class MultiView:
    """Apply each view pipeline to one image (converted to RGB once)."""

    def __init__(self, pipelines: Sequence[Callable]):
        self.pipelines = list(pipelines)
        self.to_rgb = ToRGB()

    def __len__(self) -> int:
        return len(self.pipelines)

    def __call__(self, img) -> list[torch.Tensor]:
        img = self.to_rgb(img)
        return [t(img) for t in self.pipelines]

    def __repr__(self) -> str:
        body = "\n".join(f"  {t}" for t in self.pipelines)
        return f"MultiView(\n{body}\n)"


def vicreg_views(px: int, scale: Sequence[float]) -> list[Callable]:
    """VICReg's two views (the second with less blur and some solarisation)."""
    def view(blur_p: float, solarize_p: float) -> v2.Compose:
        steps = [
            v2.RandomResizedCrop(
                px, scale=crop_scale(scale), interpolation=InterpolationMode.BICUBIC, antialias=True
            ),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            _blur(blur_p, px),
        ]
        if solarize_p > 0:
            steps.append(v2.RandomSolarize(threshold=128, p=solarize_p))
        return v2.Compose(steps + _finish(IMAGENET_MEAN, IMAGENET_STD))

    return [view(1.0, 0.0), view(0.1, 0.2)]


def swav_views(
    px: int,
    nmb_crops: Sequence[int],
    size_crops: Sequence[int],
    min_scale_crops: Sequence[float],
    max_scale_crops: Sequence[float],
) -> list[Callable]:
    """SwAV's multi-crop views: ``nmb_crops[i]`` crops of ``size_crops[i]`` px (at 224) each."""
    if not len(nmb_crops) == len(size_crops) == len(min_scale_crops) == len(max_scale_crops):
        raise UserError(
            "swav views: nmb_crops, size_crops, min_scale_crops and max_scale_crops need equal lengths"
        )
    out: list[Callable] = []
    for i, (n, size, lo, hi) in enumerate(zip(nmb_crops, size_crops, min_scale_crops, max_scale_crops)):
        crop_px = scaled_size(int(size), px)
        scale = crop_scale((lo, hi), f"views.min_scale_crops[{i}] and views.max_scale_crops[{i}]")
        pipeline = v2.Compose(
            [
                v2.RandomResizedCrop(crop_px, scale=scale, antialias=True),
                v2.RandomHorizontalFlip(p=0.5),
                v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
                v2.RandomGrayscale(p=0.2),
                _blur(0.5, px),  # official SwAV: radius 0.1-2 for every crop size
                *_finish(IMAGENET_MEAN, SWAV_STD),
            ]
        )
        out += [pipeline] * int(n)
    return out


def simsiam_views(px: int, scale: Sequence[float]) -> list[Callable]:
    """SimSiam's two views, one pipeline applied twice."""
    pipeline = v2.Compose(
        [
            v2.RandomResizedCrop(px, scale=crop_scale(scale), antialias=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            _blur(0.5, px),
            v2.RandomHorizontalFlip(p=0.5),
            *_finish(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return [pipeline, pipeline]


