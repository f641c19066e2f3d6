"""The split pipeline: the workers' uint8 crops and drawn parameters, the device stage, and how
both compare with the official per-image pipeline and torchvision's functional ops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from photo_fixtures import colour_image, photo_folder
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as F

from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.data.device_stage import PhotometricStage, colour_jitter_
from e2mc_cli.data.pipeline import AUGMENT_MODES, DEFAULT_AUGMENT, ViewPipeline
from e2mc_cli.data.split import SplitViews
from e2mc_cli.data.transforms import IMAGENET_MEAN, SWAV_STD
from e2mc_cli.data.views import PARAMS, P, ViewRecipe, gaussian_kernel_size
from e2mc_cli.errors import UserError
from e2mc_cli.methods import view_pipeline, view_recipes

METHODS = ("vicreg", "swav", "simsiam")
PX = 64  # views of 64 px (SwAV's small crops 27 px): the same code as 224 px, faster
PHOTOMETRIC = ("jitter", "grayscale", "blur", "solarize")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return resolve_dataset(str(photo_folder(tmp_path_factory.mktemp("photos"))), "train")


def both(method: str, base, seed: int = 3, px: int = PX):
    """The official and the split pipelines' datasets of ``base`` and the split pipeline."""
    cpu, split = view_pipeline(method, px, "cpu"), view_pipeline(method, px, "split")
    return cpu, cpu.dataset(base, seed), split, split.dataset(base, seed)


def raw(view: torch.Tensor, recipe: ViewRecipe) -> torch.Tensor:
    """A normalised view back in [0, 1]."""
    return view * torch.tensor(recipe.std).view(3, 1, 1) + torch.tensor(recipe.mean).view(3, 1, 1)


def pairs(method: str, base, items: int = 32):
    """``(official view, split view, params, recipe)`` of every view of the first ``items`` items."""
    cpu, dc, split, ds = both(method, base)
    for i in range(items):
        a = cpu.to_device(cpu.collate([dc[(0, i)]]), torch.device("cpu"))
        b_batch = split.collate([ds[(0, i)]])
        b = split.to_device(b_batch, torch.device("cpu"))
        for v, recipe in enumerate(split.recipes):
            yield a[v][0], b[v][0], b_batch.params[v][0], recipe


def test_split_is_the_default_and_the_modes_are_named():
    assert AUGMENT_MODES == ("cpu", "split") and DEFAULT_AUGMENT == "split"
    with pytest.raises(UserError, match="--augment"):
        view_pipeline("vicreg", 32, "gpu")
    with pytest.raises(UserError, match="--decode"):
        view_pipeline("vicreg", 32, "split", decode="nvjpeg")


def test_recipes_carry_the_official_facts():
    v1, v2 = view_recipes("vicreg")
    assert (v1.solarize_p, v2.solarize_p, v1.blur_p, v2.blur_p) == (0.0, 0.2, 1.0, 0.1)
    assert v1.interpolation == "bicubic" and v1.jitter == (0.4, 0.4, 0.2, 0.1)
    swav = view_recipes("swav")
    assert [r.size for r in swav] == [224] * 2 + [96] * 6
    assert swav[0].scale == (0.14, 1.0) and swav[2].scale == (0.05, 0.14) and swav[0].std == SWAV_STD
    assert swav[0].jitter_ranges[0] == pytest.approx((0.2, 1.8)) and swav[0].jitter_ranges[3] == (-0.2, 0.2)
    sim = view_recipes("simsiam")
    assert sim[0].flip_last and not v1.flip_last and sim[0].mean == IMAGENET_MEAN
    small = view_recipes("swav", image_size=112)
    assert [r.size for r in small] == [112] * 2 + [48] * 6
    assert small[2].blur_sigma == pytest.approx((0.05, 1.0))  # σ scales with the image size, not the crop


@pytest.mark.parametrize("method", METHODS)
def test_a_view_no_photometric_op_touches_is_the_official_view(method, photos):
    untouched = agreeing = 0
    for a, b, p, _ in pairs(method, photos):
        if all(p[P[name]] == 0 for name in PHOTOMETRIC):
            untouched += 1
            agreeing += torch.equal(a, b)
    assert untouched >= 2 and agreeing == untouched  # same crop, flip and draws, bit for bit


@pytest.mark.parametrize("method", METHODS)
def test_the_grayscale_flag_is_where_the_official_view_is_gray(method, photos):
    flags = []
    for a, _, p, recipe in pairs(method, photos):
        r = raw(a, recipe)
        gray = bool((r[0] - r[1]).abs().max() < 1e-3 and (r[1] - r[2]).abs().max() < 1e-3)
        flags.append((gray, bool(p[P["grayscale"]] > 0)))
    assert all(g == f for g, f in flags) and any(f for _, f in flags)


@pytest.mark.parametrize("method", METHODS)
def test_jittered_views_follow_the_official_factors_and_order(method, photos):
    """Where only colour jitter applies, the float ops on the device stay within PIL's uint8
    rounding of the official view (measured: 0.8–2.8/255 on average per view)."""
    means = []
    for a, b, p, recipe in pairs(method, photos):
        if p[P["jitter"]] == 1 and all(p[P[name]] == 0 for name in PHOTOMETRIC[1:]):
            means.append(((raw(a, recipe) - raw(b, recipe)).abs().mean() * 255).item())
    assert len(means) >= 3 and max(means) < 4.0


def random_params(n: int, seed: int = 0) -> torch.Tensor:
    """Jitter (SwAV's strengths, random order), grayscale and solarise drawn for ``n`` samples."""
    g = torch.Generator().manual_seed(seed)
    p = torch.full((n, len(PARAMS)), math.nan)
    p[:, P["jitter"]] = (torch.rand(n, generator=g) < 0.9).float()
    ranges = ((0.2, 1.8),) * 3 + ((-0.2, 0.2),)
    for name, (lo, hi) in zip(("brightness", "contrast", "saturation", "hue"), ranges):
        p[:, P[name]] = torch.empty(n).uniform_(lo, hi, generator=g)
    for i in range(n):
        p[i, P["order0"] : P["order3"] + 1] = torch.randperm(4, generator=g).float()
    p[:, P["grayscale"]] = (torch.rand(n, generator=g) < 0.3).float()
    p[:, P["solarize"]] = (torch.rand(n, generator=g) < 0.5).float()
    p[:, P["blur"]] = p[:, P["flip"]] = 0
    return p


def torchvision_reference(crop: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """torchvision's per-image float functional ops with the parameters ``p``, official order."""
    x = crop.permute(2, 0, 1).float() / 255
    ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
    if p[P["jitter"]] > 0:
        for k in range(4):
            j = int(p[P[f"order{k}"]])
            x = ops[j](x, p[P["brightness"] + j].item())
    if p[P["grayscale"]] > 0:
        x = F.rgb_to_grayscale(x, num_output_channels=3)
    if p[P["solarize"]] > 0:
        x = F.solarize(x, 128 / 255)
    return x


def test_the_batched_stage_matches_torchvision_per_image_within_2_of_255(photos):
    crops = torch.stack(
        [torch.from_numpy(np.array(photos[i][0].resize((48, 36)))) for i in range(len(photos))]
    )
    recipe = ViewRecipe(size=48, scale=(0.1, 1.0), blur_p=0.0, solarize_p=0.5)
    params = random_params(len(crops))
    out = PhotometricStage([recipe])([crops], [params])[0]
    for i in range(len(crops)):
        expected = torchvision_reference(crops[i], params[i])
        assert (raw(out[i], recipe) - expected).abs().max() <= 2 / 255, i


def test_the_stage_by_hand():
    x = torch.tensor([0.2, 0.4, 0.6])[None, :, None, None].expand(1, 3, 2, 2).contiguous()
    p = torch.full((1, len(PARAMS)), math.nan)
    p[0, P["jitter"]] = 1
    p[0, P["brightness"]], p[0, P["contrast"]] = 1.5, 0.5
    p[0, P["order0"] : P["order3"] + 1] = torch.tensor([1.0, 0.0, 2.0, 3.0])  # contrast, then brightness
    gray = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6  # the luma the contrast blends towards
    expected = ((0.5 * torch.tensor([0.2, 0.4, 0.6]) + 0.5 * gray) * 1.5).clamp(0, 1)
    torch.testing.assert_close(colour_jitter_(x.clone(), p)[0, :, 0, 0], expected, atol=1e-6, rtol=0)
    p[0, P["order0"] : P["order3"] + 1] = torch.tensor([0.0, 1.0, 2.0, 3.0])  # brightness first
    expected = 0.5 * torch.tensor([0.3, 0.6, 0.9]) + 0.5 * 1.5 * gray
    torch.testing.assert_close(colour_jitter_(x.clone(), p)[0, :, 0, 0], expected, atol=1e-6, rtol=0)


def test_solarise_and_grayscale_by_hand():
    recipe = ViewRecipe(size=2, scale=(1.0, 1.0), jitter_p=0.0, blur_p=0.0, solarize_p=1.0, mean=(0, 0, 0),
                        std=(1, 1, 1))
    crops = torch.tensor([[[[51, 153, 255]] * 2] * 2] * 2, dtype=torch.uint8)  # 2 × 2 × 2 × 3
    p = torch.full((2, len(PARAMS)), math.nan)
    p[:, P["jitter"]] = p[:, P["blur"]] = 0
    p[:, P["solarize"]], p[:, P["grayscale"]] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    out = PhotometricStage([recipe])([crops], [p])[0]
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.2, 0.4, 0.0]))  # 153, 255 ≥ 128: 1 − x
    luma = (0.299 * 51 + 0.587 * 153 + 0.114 * 255) / 255
    torch.testing.assert_close(out[1, :, 0, 0], torch.full((3,), luma))


def test_the_device_blur_against_pils_box_approximation(photos):
    """PIL's GaussianBlur (three box blurs on uint8) and the stage's true Gaussian, same σ: on
    average within 0.6/255, at most 4.1/255 away from the border (measured 0.39–0.52 and 4.1)."""
    for sigma in (0.5, 1.0, 2.0):
        recipe = ViewRecipe(size=96, scale=(1.0, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=1.0,
                            blur_sigma=(0.1, 2.0), mean=(0, 0, 0), std=(1, 1, 1))
        means, inner = [], []
        for i in range(0, len(photos), 3):
            crop = photos[i][0].resize((96, 96), Image.Resampling.BICUBIC)
            pil = torch.from_numpy(np.array(crop.filter(ImageFilter.GaussianBlur(sigma)))).permute(2, 0, 1)
            p = torch.full((1, len(PARAMS)), math.nan)
            p[0, P["jitter"]] = p[0, P["grayscale"]] = p[0, P["solarize"]] = 0
            p[0, P["blur"]], p[0, P["sigma"]] = 1, sigma
            ours = PhotometricStage([recipe])([torch.from_numpy(np.array(crop))[None]], [p])[0][0] * 255
            d = (ours - pil.float()).abs()
            means.append(d.mean().item())
            inner.append(d[:, 8:-8, 8:-8].max().item())
        assert np.mean(means) < 0.6 and max(inner) < 6.0, (sigma, np.mean(means), max(inner))
    assert gaussian_kernel_size(2.0) == 13


def test_the_stage_is_a_pure_function_of_crops_and_params(photos):
    split = view_pipeline("swav", PX, "split")
    data = split.dataset(photos, 0)
    batch = split.collate([data[(0, i)] for i in range(6)])
    before = [p.clone() for p in batch.params]
    torch.manual_seed(1)
    a = split.to_device(batch, torch.device("cpu"))
    torch.manual_seed(2)
    b = split.to_device(batch, torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for x, y in zip(before, batch.params):  # the parameters are left as they were (NaN: op off)
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
    assert all(v.dtype == torch.uint8 for v in batch.views) and batch.views[0].shape == (6, PX, PX, 3)


def test_split_batches_are_the_same_for_any_number_of_workers(photos):
    split = view_pipeline("vicreg", 32, "split")
    batches = [[(0, i) for i in range(k, k + 4)] for k in (0, 4, 8)]

    def load(workers):
        loader = DataLoader(
            split.dataset(photos, 7), batch_sampler=batches, num_workers=workers, collate_fn=split.collate
        )
        return [split.to_device(b, torch.device("cpu")) for b in loader]

    for x, y in zip(load(0), load(2)):
        assert all(torch.equal(a, b) for a, b in zip(x, y))


def test_split_views_of_any_image_mode():
    worker = SplitViews(view_recipes("simsiam", image_size=16))
    for img in (colour_image().convert("L"), colour_image().convert("RGBA"), colour_image().convert("P")):
        crops, params = worker(img)
        assert [c.shape for c in crops] == [(16, 16, 3)] * 2 and params.shape == (2, len(PARAMS))


def test_describe_names_where_the_views_are_made():
    assert "--augment cpu" in view_pipeline("vicreg", 32, "cpu").describe()
    line = view_pipeline("vicreg", 32, "split").describe()
    assert "uint8" in line and "batched on the device" in line and "note" not in line
    with pytest.raises(ValueError, match="recipes"):
        ViewPipeline(lambda img: [img], "split")
