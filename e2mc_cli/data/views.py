"""The methods' training views as data: one frozen :class:`ViewRecipe` per view.

Both ways of making the views are built from the same recipes: the official per-image PIL
pipeline (:func:`e2mc_cli.data.augment.official_pipeline`, ``--augment cpu``) and the split
pipeline (:mod:`e2mc_cli.data.split` on the loader's workers, :mod:`e2mc_cli.data.device_stage`
on the training device, ``--augment split``). The recipes of the official code:

- **VICReg** (``augmentations.py`` of facebookresearch/vicreg): 2 views, RandomResizedCrop(224,
  scale 0.08–1, bicubic), flip, ColorJitter(0.4, 0.4, 0.2, 0.1) p = 0.8, grayscale p = 0.2,
  Gaussian blur σ ∈ [0.1, 2] with p = 1.0 / 0.1, solarisation p = 0 / 0.2 (view 1 / view 2).
- **SwAV** (``src/multicropdataset.py`` of facebookresearch/swav and its multi-crop scripts):
  2 × 224 (scale 0.14–1) + 6 × 96 (scale 0.05–0.14), bilinear, flip, colour distortion of
  strength 1 (ColorJitter(0.8, 0.8, 0.8, 0.2) p = 0.8, grayscale p = 0.2), Gaussian blur
  σ ∈ [0.1, 2] p = 0.5 for every crop size; normalised with the official std (0.228, 0.224, 0.225).
- **SimSiam** (``main_simsiam.py`` of facebookresearch/simsiam): 2 views, RandomResizedCrop(224,
  scale 0.2–1, bilinear), ColorJitter(0.4, 0.4, 0.4, 0.1) p = 0.8, grayscale p = 0.2, Gaussian
  blur σ ∈ [0.1, 2] p = 0.5, and the flip last.

``image_size`` PX scales every length of a recipe by PX / 224: the crop sizes (224 → PX,
96 → round(PX·96/224)) and the blur's σ range (so the blur's extent scales with the crop).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from e2mc_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, REFERENCE_SIZE, SWAV_STD
from e2mc_cli.errors import UserError

BLUR_SIGMA = (0.1, 2.0)
INTERPOLATIONS = ("bilinear", "bicubic")

# The photometric parameters of one view, as the loader's workers hand them over (one float
# each): whether colour jitter applies, its four factors (NaN: that op is off), the op at each of
# the four positions (0 brightness, 1 contrast, 2 saturation, 3 hue), grayscale, blur and its σ,
# solarisation, and the horizontal flip (applied by whoever makes the crop).
PARAMS = (
    "jitter", "brightness", "contrast", "saturation", "hue",
    "order0", "order1", "order2", "order3",
    "grayscale", "blur", "sigma", "solarize", "flip",
)  # fmt: skip
P = {name: i for i, name in enumerate(PARAMS)}
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


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


def jitter_range(strength: float, hue: bool = False) -> tuple[float, float] | None:
    """torchvision's ``ColorJitter`` range of one strength: ``(max(0, 1 − s), 1 + s)``, or
    ``(−s, s)`` for hue; ``None`` (the op is off) for strength 0."""
    if strength == 0:
        return None
    return (-strength, strength) if hue else (max(0.0, 1.0 - strength), 1.0 + strength)


@dataclass(frozen=True)
class ViewRecipe:
    """One training view, in the order the official pipelines apply its steps:

    random resized crop (``size`` px, area share ``scale``, aspect ``ratio``, ``interpolation``),
    horizontal flip (``flip_p``; after the colour steps when ``flip_last``, as SimSiam), colour
    jitter (``jitter_p``; strengths of brightness, contrast, saturation, hue in ``jitter``, applied
    in a random order), grayscale (``grayscale_p``), Gaussian blur (``blur_p``, σ ~ U(``blur_sigma``)),
    solarisation (``solarize_p``, pixels ≥ ``solarize_threshold`` of 255 inverted; absent at 0),
    then float conversion and normalisation with ``mean`` and ``std``.
    """

    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bilinear"
    flip_p: float = 0.5
    flip_last: bool = False
    jitter_p: float = 0.8
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = BLUR_SIGMA
    solarize_p: float = 0.0
    solarize_threshold: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r}: expected one of {INTERPOLATIONS}")

    @property
    def jitter_ranges(self) -> tuple[tuple[float, float] | None, ...]:
        """The ranges torchvision's ``ColorJitter`` draws the four factors from (``None``: off)."""
        b, c, s, h = self.jitter
        return jitter_range(b), jitter_range(c), jitter_range(s), jitter_range(h, hue=True)


def _blur_sigma(image_size: int) -> tuple[float, float]:
    f = image_size / REFERENCE_SIZE
    return BLUR_SIGMA[0] * f, BLUR_SIGMA[1] * f


def vicreg_recipes(px: int, scale: Sequence[float]) -> list[ViewRecipe]:
    """VICReg's two views (the second with less blur and some solarisation)."""
    common = dict(
        size=px,
        scale=crop_scale(scale),
        interpolation="bicubic",
        jitter=(0.4, 0.4, 0.2, 0.1),
        blur_sigma=_blur_sigma(px),
    )
    return [ViewRecipe(**common, blur_p=1.0), ViewRecipe(**common, blur_p=0.1, solarize_p=0.2)]


def swav_recipes(
    px: int,
    nmb_crops: Sequence[int],
    size_crops: Sequence[int],
    min_scale_crops: Sequence[float],
    max_scale_crops: Sequence[float],
) -> list[ViewRecipe]:
    """SwAV's multi-crop views: ``nmb_crops[i]`` crops of ``size_crops[i]`` px (at 224) each."""
    if not len(nmb_crops) == len(size_crops) == len(min_scale_crops) == len(max_scale_crops):
        raise UserError(
            "swav views: nmb_crops, size_crops, min_scale_crops and max_scale_crops need equal lengths"
        )
    out: list[ViewRecipe] = []
    for i, (n, size, lo, hi) in enumerate(zip(nmb_crops, size_crops, min_scale_crops, max_scale_crops)):
        recipe = ViewRecipe(
            size=scaled_size(int(size), px),
            scale=crop_scale((lo, hi), f"views.min_scale_crops[{i}] and views.max_scale_crops[{i}]"),
            jitter=(0.8, 0.8, 0.8, 0.2),
            blur_sigma=_blur_sigma(px),  # official SwAV: radius 0.1-2 for every crop size
            std=SWAV_STD,
        )
        out += [recipe] * int(n)
    return out


def simsiam_recipes(px: int, scale: Sequence[float]) -> list[ViewRecipe]:
    """SimSiam's two views, one recipe applied twice (flip last)."""
    recipe = ViewRecipe(size=px, scale=crop_scale(scale), flip_last=True, blur_sigma=_blur_sigma(px))
    return [recipe, recipe]
