"""The methods' official view pipelines with ``torchvision.transforms.v2`` (``--augment cpu``).

:func:`official_pipeline` builds the official per-image pipeline of one
:class:`~e2mc_cli.data.views.ViewRecipe` (:mod:`e2mc_cli.data.views` lists the recipes and where
each fact comes from): the same transforms in the same order as the official training code, so
the same random draws. ``vicreg_views``, ``swav_views`` and ``simsiam_views``
(``builder(image_size, **options)``, the options being a method spec's ``view_options``) return
one pipeline per view, full-resolution views first; :func:`e2mc_cli.methods.view_transform` wraps
them in a picklable :class:`MultiView`, ``image -> list[Tensor]``.

The pipelines work on PIL images as the official ones, and blur as they do: a PIL Gaussian blur
of standard deviation σ (``ImageFilter.GaussianBlur``, an O(1)-per-pixel approximation by three
box blurs, ~1.5 ms on a 224 px crop where a 23-tap convolution on a tensor takes ~45 ms).
Non-RGB images (grayscale, palette, RGBA, CMYK) and tensors are converted to RGB PIL images
first. All randomness comes from torch's generator, so seeded data-loader workers give
repeatable views.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode, v2

from e2mc_cli.data.transforms import ToRGB
from e2mc_cli.data.views import (
    BLUR_SIGMA,
    ViewRecipe,
    crop_scale,
    gaussian_kernel_size,
    scaled_size,
    simsiam_recipes,
    swav_recipes,
    vicreg_recipes,
)

__all__ = [
    "BLUR_SIGMA",
    "MultiView",
    "OfficialView",
    "RandomGaussianBlur",
    "crop_scale",
    "gaussian_kernel_size",
    "official_pipeline",
    "official_views",
    "scaled_size",
    "simsiam_views",
    "swav_views",
    "vicreg_views",
]

class RandomGaussianBlur:
    """With probability ``p``, blur with σ ~ U(``sigma``) — the official PIL ``GaussianBlur(σ)``.

    Tensors are blurred with :func:`torchvision.transforms.v2.functional.gaussian_blur` and an
    odd ±3σ kernel (:func:`gaussian_kernel_size`).
    """

    def __init__(self, p: float = 0.5, sigma: tuple[float, float] = BLUR_SIGMA):
        self.p, self.sigma = float(p), (float(sigma[0]), float(sigma[1]))

    def draw(self) -> float | None:
        """σ of this call, or ``None`` for no blur: one draw for p < 1, then one for σ (the
        split pipeline's workers draw through this too)."""
        if self.p < 1.0 and torch.rand(()).item() >= self.p:
            return None
        return self.sigma[0] + (self.sigma[1] - self.sigma[0]) * torch.rand(()).item()

    def __call__(self, img):
        s = self.draw()
        if s is None:
            return img
        if isinstance(img, Image.Image):
            return img.filter(ImageFilter.GaussianBlur(radius=s))
        return v2.functional.gaussian_blur(img, [gaussian_kernel_size(s)] * 2, [s, s])

    def __repr__(self) -> str:
        return f"RandomGaussianBlur(p={self.p}, sigma={self.sigma})"


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


class OfficialView(v2.Compose):
    """The official pipeline of one view: a ``v2.Compose`` that also names its :attr:`recipe`."""

    def __init__(self, transforms: Sequence[Callable], recipe: ViewRecipe):
        super().__init__(list(transforms))
        self.recipe = recipe


def official_pipeline(recipe: ViewRecipe) -> OfficialView:
    """The official per-image pipeline of ``recipe``: crop, flip (or after the colour steps),
    ColorJitter with probability, grayscale, blur, solarisation (when its p > 0), then uint8 →
    float → normalised plain tensor."""
    flip = v2.RandomHorizontalFlip(p=recipe.flip_p)
    steps = [
        v2.RandomResizedCrop(
            recipe.size,
            scale=recipe.scale,
            ratio=recipe.ratio,
            interpolation=InterpolationMode(recipe.interpolation),
            antialias=True,
        ),
        *([] if recipe.flip_last else [flip]),
        v2.RandomApply([v2.ColorJitter(*recipe.jitter)], p=recipe.jitter_p),
        v2.RandomGrayscale(p=recipe.grayscale_p),
        RandomGaussianBlur(recipe.blur_p, recipe.blur_sigma),
        *([v2.RandomSolarize(recipe.solarize_threshold, p=recipe.solarize_p)] if recipe.solarize_p else []),
        *([flip] if recipe.flip_last else []),
    ]
    return OfficialView(steps + _finish(recipe.mean, recipe.std), recipe)


def official_views(recipes: Sequence[ViewRecipe]) -> list[OfficialView]:
    """One official pipeline per recipe; equal recipes share one pipeline."""
    built: dict[ViewRecipe, OfficialView] = {}
    for r in recipes:
        if r not in built:
            built[r] = official_pipeline(r)
    return [built[r] for r in recipes]


class MultiView:
    """Apply each view pipeline to one image (converted to RGB once)."""

    def __init__(self, pipelines: Sequence[Callable]):
        self.pipelines = list(pipelines)
        self.to_rgb = ToRGB()

    @property
    def recipes(self) -> list[ViewRecipe] | None:
        """The recipe of each view, or ``None`` where a pipeline was not built from one."""
        recipes = [getattr(t, "recipe", None) for t in self.pipelines]
        return None if any(r is None for r in recipes) else recipes

    def __len__(self) -> int:
        return len(self.pipelines)

    def __call__(self, img) -> list[torch.Tensor]:
        img = self.to_rgb(img)
        return [t(img) for t in self.pipelines]

    def __repr__(self) -> str:
        body = "\n".join(f"  {t}" for t in self.pipelines)
        return f"MultiView(\n{body}\n)"




def vicreg_views(px: int, scale: Sequence[float]) -> list[OfficialView]:
    """VICReg's two official views (:func:`~e2mc_cli.data.views.vicreg_recipes`)."""
    return official_views(vicreg_recipes(px, scale))


def swav_views(
    px: int,
    nmb_crops: Sequence[int],
    size_crops: Sequence[int],
    min_scale_crops: Sequence[float],
    max_scale_crops: Sequence[float],
) -> list[OfficialView]:
    """SwAV's official multi-crop views (:func:`~e2mc_cli.data.views.swav_recipes`)."""
    return official_views(swav_recipes(px, nmb_crops, size_crops, min_scale_crops, max_scale_crops))


def simsiam_views(px: int, scale: Sequence[float]) -> list[OfficialView]:
    """SimSiam's two official views (:func:`~e2mc_cli.data.views.simsiam_recipes`)."""
    return official_views(simsiam_recipes(px, scale))
