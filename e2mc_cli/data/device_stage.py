"""The device part of the split pipeline: the views' photometric ops on the whole batch at once.

:class:`PhotometricStage` takes the workers' uint8 crops and each view's parameters
(:data:`~e2mc_cli.data.views.PARAMS`, drawn by :mod:`e2mc_cli.data.split`) and, in float32 on
the crops' device (CPU included: the tests and the built-in job run the same code), applies in
the official order: colour jitter (brightness, contrast, saturation, hue, each sample in its own
order), grayscale, Gaussian blur with each sample's σ, solarisation, then ``(x − mean) / std``.
The ops are kornia's (``kornia.enhance``, ``kornia.color``, ``kornia.filters``), which follow
torchvision's float functional ops (brightness ``x·b``; contrast blended with the grayscale
mean; saturation blended with the grayscale image; hue a rotation in HSV; tests bound the
difference to torchvision's per-image ops at 2/255). The per-sample order is applied position
by position: at each of the four positions, each op runs on the samples whose op there it is
(their indices read off the host copy of the parameters, so nothing waits for the device).
The stage draws nothing: it is a pure function of (crops, parameters), so a run is repeatable
for any number of workers and across a resume.

**Blur.** The official pipelines blur with PIL's ``ImageFilter.GaussianBlur(σ)``, which
approximates a Gaussian by three box blurs on uint8 pixels; the stage convolves with a true
Gaussian (sampled, truncated at ±3σ of the recipe's largest σ: 13 taps at 224 px), edges
replicated, as PIL's are. Measured on the 500 × 375 photographs of the tests (bicubic 224 px
crops, σ = 0.5 / 1 / 2): the two differ by 0.51 / 0.51 / 0.38 of 255 per pixel on average and
by at most 4.1/255 more than 8 px from the border; within 8 px of it PIL's box passes meet the
edge differently, by up to 25/255 at σ = 2 (``tests/test_split_views.py`` bounds the average and
the inside).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import torch

from e2mc_cli.data.views import JITTER_OPS, P, ViewRecipe, gaussian_kernel_size

_NEUTRAL = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation, hue: no change


def _hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_hue(x, h)`` (h a share of the colour circle) as kornia's angle."""
    return kornia.enhance.adjust_hue(x, factor * (2 * math.pi))


JITTER_FUNCTIONS = (
    kornia.enhance.adjust_brightness_accumulative,
    kornia.enhance.adjust_contrast_with_mean_subtraction,
    kornia.enhance.adjust_saturation_with_gray_subtraction,
    _hue,
)


def _rows(mask: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The indices of the true entries of a host ``mask`` on ``device`` (``None`` when none)."""
    rows = torch.nonzero(mask).flatten()
    return rows.to(device, non_blocking=True) if rows.numel() else None


def _apply_to(x: torch.Tensor, rows: torch.Tensor | None, fn) -> torch.Tensor:
    """``x`` with ``fn(x[rows], rows)`` written into the selected rows, in place."""
    if rows is None:
        return x
    return x.index_copy_(0, rows, fn(x.index_select(0, rows), rows))


def colour_jitter_(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Per-sample colour jitter of ``x`` (``N × 3 × H × W`` in [0, 1], changed in place and
    returned) as torchvision's ``ColorJitter`` with the factors and order of the host ``params``
    (``N × P``)."""
    jitter = params[:, P["jitter"]] > 0.5
    raw = params[:, [P[name] for name in JITTER_OPS]]
    on = jitter[:, None] & ~torch.isnan(raw)
    factors = torch.where(on, raw, torch.tensor(_NEUTRAL)).to(x.device, non_blocking=True)
    order = params[:, [P[f"order{k}"] for k in range(4)]]
    for k in range(4):
        for j, fn in enumerate(JITTER_FUNCTIONS):
            rows = _rows(on[:, j] & (order[:, k] == j), x.device)
            x = _apply_to(x, rows, lambda sub, r, fn=fn, j=j: fn(sub, factors[r, j]))
    return x


def grayscale_(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The samples whose grayscale flag is set, as three equal channels of their luma (in place)."""
    rows = _rows(params[:, P["grayscale"]] > 0.5, x.device)
    return _apply_to(x, rows, lambda sub, r: kornia.color.rgb_to_grayscale(sub).expand_as(sub))


def gaussian_blur_(x: torch.Tensor, params: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The samples whose blur flag is set, blurred with their own σ (a ``kernel_size`` Gaussian;
    in place)."""
    chosen = params[:, P["blur"]] > 0.5
    sigma = params[chosen][:, P["sigma"]]
    rows = _rows(chosen, x.device)

    def blur(sub, r):
        # σ stays on the host: kornia checks it there, without waiting for the device
        return kornia.filters.gaussian_blur2d(sub, kernel_size, sigma[:, None].expand(-1, 2), "replicate")

    return _apply_to(x, rows, blur)


def solarize_(x: torch.Tensor, params: torch.Tensor, threshold: float) -> torch.Tensor:
    """The samples whose solarise flag is set, pixels ≥ ``threshold`` inverted (``1 − x``; in place)."""
    rows = _rows(params[:, P["solarize"]] > 0.5, x.device)
    return _apply_to(x, rows, lambda sub, r: kornia.enhance.solarize(sub, threshold))


class _Group:
    """Views that go through the stage as one batch: same size, statistics and ops."""

    def __init__(self, recipes: Sequence[ViewRecipe], views: list[int]):
        first = recipes[views[0]]
        self.views = views
        self.mean, self.std = first.mean, first.std
        self.threshold = first.solarize_threshold / 255
        self.jitter = any(recipes[v].jitter_p > 0 for v in views)
        self.grayscale = any(recipes[v].grayscale_p > 0 for v in views)
        self.blur = any(recipes[v].blur_p > 0 for v in views)
        self.solarize = any(recipes[v].solarize_p > 0 for v in views)
        self.kernel_size = gaussian_kernel_size(max(recipes[v].blur_sigma[1] for v in views))
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._stats:
            as_tensor = lambda v: torch.tensor(v, dtype=torch.float32).view(-1, 1, 1).to(device)
            self._stats[device] = as_tensor(self.mean), as_tensor(self.std)
        return self._stats[device]

    def __call__(self, crops: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = crops.permute(0, 3, 1, 2).contiguous().to(torch.float32).mul_(1.0 / 255)
        if self.jitter:
            x = colour_jitter_(x, params)
        if self.grayscale:
            x = grayscale_(x, params)
        if self.blur:
            x = gaussian_blur_(x, params, self.kernel_size)
        if self.solarize:
            x = solarize_(x, params, self.threshold)
        mean, std = self.stats(x.device)
        return x.sub_(mean).div_(std)


class PhotometricStage:
    """``stage(crops, params)`` → the float views: ``crops`` one ``B × H × W × 3`` uint8 tensor per
    view (channels last, on the device), ``params`` one ``B × P`` float tensor per view (on the
    host: the batch's copy). Views of one size and normalisation run as one batch."""

    def __init__(self, recipes: Sequence[ViewRecipe]):
        self.recipes = list(recipes)
        keys: dict[tuple, list[int]] = {}
        for v, r in enumerate(self.recipes):
            keys.setdefault((r.size, r.mean, r.std, r.solarize_threshold), []).append(v)
        self.groups = [_Group(self.recipes, views) for views in keys.values()]

    def __call__(self, crops: Sequence[torch.Tensor], params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(crops) != len(self.recipes) or len(params) != len(self.recipes):
            raise ValueError(f"{len(self.recipes)} views, but {len(crops)} crops and {len(params)} params")
        out: list[torch.Tensor] = [crops[0]] * len(self.recipes)
        for group in self.groups:
            n = [crops[v].shape[0] for v in group.views]
            x = group(
                torch.cat([crops[v] for v in group.views]), torch.cat([params[v].cpu() for v in group.views])
            )
            for v, part in zip(group.views, x.split(n)):
                out[v] = part
        return out
