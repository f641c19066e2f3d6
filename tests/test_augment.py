"""View pipelines: number and sizes of views, input modes, scaling with the image size."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from e2mc_cli.data.augment import (
    RandomGaussianBlur,
    gaussian_kernel_size,
    scaled_size,
)
from e2mc_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, SWAV_STD
from e2mc_cli.errors import UserError
from e2mc_cli.methods import view_transform


def gray28() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8), mode="L")


def rgb(h: int = 40, w: int = 50) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "method,sizes",
    [("vicreg", [28, 28]), ("swav", [28, 28] + [12] * 6), ("simsiam", [28, 28])],
)
def test_views_of_a_grayscale_28px_image(method, sizes):
    out = view_transform(method, image_size=28)(gray28())
    assert [tuple(v.shape) for v in out] == [(3, s, s) for s in sizes]
    assert all(type(v) is torch.Tensor and v.dtype == torch.float32 for v in out)
    assert all(torch.isfinite(v).all() for v in out)


@pytest.mark.parametrize("method,n", [("vicreg", 2), ("swav", 8), ("simsiam", 2)])
def test_views_at_full_size(method, n):
    t = view_transform(method)
    out = t(rgb(60, 80))
    assert len(t) == n == len(out)
    assert tuple(out[0].shape) == (3, 224, 224)
    if method == "swav":
        assert {tuple(v.shape) for v in out[2:]} == {(3, 96, 96)}


def test_scaled_sizes():
    assert scaled_size(224, 28) == 28 and scaled_size(96, 28) == 12
    assert scaled_size(96, 32) == 14 and scaled_size(96, 224) == 96 and scaled_size(256, 224) == 256
    out = view_transform("swav", image_size=64)(rgb())
    assert [v.shape[-1] for v in out] == [64, 64] + [27] * 6  # 96·64/224 = 27.4


def test_recipe_parameters_match_the_official_ones():
    vic = view_transform("vicreg").pipelines
    crop = vic[0].transforms[0]
    assert isinstance(crop, v2.RandomResizedCrop) and crop.scale == (0.08, 1.0)
    assert crop.interpolation == InterpolationMode.BICUBIC
    blur1, blur2 = vic[0].transforms[4], vic[1].transforms[4]
    assert (blur1.p, blur2.p) == (1.0, 0.1) and blur1.sigma == (0.1, 2.0)
    assert not any(isinstance(t, v2.RandomSolarize) for t in vic[0].transforms)
    sol = [t for t in vic[1].transforms if isinstance(t, v2.RandomSolarize)]
    assert len(sol) == 1 and sol[0].p == 0.2 and sol[0].threshold == 128
    jitter = vic[0].transforms[2]
    assert jitter.p == 0.8 and jitter.transforms[0].hue == (-0.1, 0.1)
    assert jitter.transforms[0].saturation == (0.8, 1.2)

    swav = view_transform("swav").pipelines
    assert swav[0].transforms[0].scale == (0.14, 1.0) and swav[2].transforms[0].scale == (0.05, 0.14)
    assert swav[0].transforms[2].transforms[0].brightness == pytest.approx((0.2, 1.8))  # strength 1: 0.8
    assert swav[0].transforms[4].p == 0.5
    assert tuple(swav[0].transforms[-2].std) == SWAV_STD

    sim = view_transform("simsiam").pipelines
    assert sim[0].transforms[0].scale == (0.2, 1.0)
    assert isinstance(sim[0].transforms[-5], v2.RandomHorizontalFlip)  # flip last, as official
    assert (
        tuple(sim[0].transforms[-2].mean) == IMAGENET_MEAN
        and tuple(sim[0].transforms[-2].std) == IMAGENET_STD
    )


def test_blur_scales_with_image_size():
    blur = view_transform("simsiam", image_size=112).pipelines[0].transforms[3]
    assert blur.sigma == pytest.approx((0.05, 1.0))
    assert gaussian_kernel_size(2.0) == 13 and gaussian_kernel_size(0.05) == 3


def test_blur_of_a_constant_image_is_the_image_and_tensor_path_works():
    flat = Image.new("RGB", (20, 20), (100, 150, 200))
    assert np.array_equal(np.asarray(RandomGaussianBlur(1.0)(flat)), np.asarray(flat))
    t = torch.full((3, 20, 20), 0.5)
    torch.testing.assert_close(RandomGaussianBlur(1.0)(t), t)
    img = rgb()
    assert RandomGaussianBlur(0.0)(img) is img


def test_inputs_of_other_modes_and_tensors():
    t = view_transform("vicreg", image_size=16)
    for img in (rgb().convert("RGBA"), rgb().convert("P"), rgb().convert("CMYK"), gray28().convert("I;16")):
        assert [tuple(v.shape) for v in t(img)] == [(3, 16, 16)] * 2
    for tensor in (torch.randint(0, 256, (1, 20, 20), dtype=torch.uint8), torch.rand(3, 20, 20)):
        assert [tuple(v.shape) for v in t(tensor)] == [(3, 16, 16)] * 2


def test_grayscale_views_have_equal_channels_before_colour_jitter():
    # A grayscale image converted to RGB stays gray through crop, flip, jitter of brightness/contrast
    # (saturation and hue leave gray untouched), grayscale and blur: the three channels agree up to
    # the per-channel normalisation.
    out = view_transform("simsiam", image_size=28)(gray28())[0]
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    raw = out * std + mean
    torch.testing.assert_close(raw[0], raw[1], atol=2 / 255, rtol=0)
    torch.testing.assert_close(raw[1], raw[2], atol=2 / 255, rtol=0)


def test_views_are_random_but_seeded():
    t = view_transform("swav", image_size=28)
    torch.manual_seed(5)
    a = t(rgb())
    torch.manual_seed(5)
    b = t(rgb())
    c = t(rgb())
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(b, c))


def test_transforms_pickle_for_worker_processes():
    for method in ("vicreg", "swav", "simsiam"):
        t = pickle.loads(pickle.dumps(view_transform(method, image_size=28)))
        assert len(t(gray28())) == len(view_transform(method))


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="unknown method"):
        view_transform("byol")
    with pytest.raises(UserError, match="unknown vicreg view option"):
        view_transform("vicreg", nmb_crops=[2])
    with pytest.raises(UserError, match="equal lengths"):
        view_transform("swav", nmb_crops=[2, 6], size_crops=[224])
    with pytest.raises(UserError, match="at least 8"):
        view_transform("simsiam", image_size=4)
    two = view_transform(
        "swav", image_size=28, nmb_crops=[2], size_crops=[224], min_scale_crops=[0.14], max_scale_crops=[1.0]
    )
    assert len(two(gray28())) == 2



def _blur_sigmas(method: str, image_size: int) -> set[tuple[float, float]]:
    tf = view_transform(method, image_size=image_size)
    return {
        (round(t.sigma[0], 6), round(t.sigma[1], 6))
        for pipeline in tf.pipelines
        for t in pipeline.transforms
        if isinstance(t, RandomGaussianBlur)
    }


def test_swav_blur_sigma_scales_with_image_size_not_crop_size():
    """Official SwAV blurs every crop, 224 px and 96 px alike, with radius 0.1-2."""
    assert _blur_sigmas("swav", 224) == {(0.1, 2.0)}
    assert _blur_sigmas("swav", 28) == {(0.0125, 0.25)}


def _official_code_pipelines(method: str) -> list[v2.Compose]:
    """The official training transforms written out as the authors' code lists them (at 224 px)."""

    def _finish(mean, std):  # ToTensor + Normalize of the official code
        return [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]

    bicubic = InterpolationMode.BICUBIC
    if method == "vicreg":  # facebookresearch/vicreg augmentations.py
        def view(blur_p, solarize_p):
            steps = [
                v2.RandomResizedCrop(224, scale=(0.08, 1.0), interpolation=bicubic, antialias=True),
                v2.RandomHorizontalFlip(p=0.5),
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),  # b, c, s, h
                v2.RandomGrayscale(p=0.2),
                RandomGaussianBlur(blur_p, (0.1, 2.0)),
            ]
            steps += [v2.RandomSolarize(threshold=128, p=solarize_p)] if solarize_p else []
            return v2.Compose(steps + _finish(IMAGENET_MEAN, IMAGENET_STD))

        return [view(1.0, 0.0), view(0.1, 0.2)]
    if method == "swav":  # facebookresearch/swav src/multicropdataset.py, 2x224 + 6x96
        def crop(size, scale):
            return v2.Compose([
                v2.RandomResizedCrop(size, scale=scale, antialias=True),
                v2.RandomHorizontalFlip(p=0.5),
                v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
                v2.RandomGrayscale(p=0.2),
                RandomGaussianBlur(0.5, (0.1, 2.0)),
                *_finish(IMAGENET_MEAN, SWAV_STD),
            ])

        return [crop(224, (0.14, 1.0))] * 2 + [crop(96, (0.05, 0.14))] * 6
    pipeline = v2.Compose([  # facebookresearch/simsiam main_simsiam.py
        v2.RandomResizedCrop(224, scale=(0.2, 1.0), antialias=True),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        RandomGaussianBlur(0.5, (0.1, 2.0)),
        v2.RandomHorizontalFlip(p=0.5),
        *_finish(IMAGENET_MEAN, IMAGENET_STD),
    ])
    return [pipeline, pipeline]


@pytest.mark.parametrize("method", ["vicreg", "swav", "simsiam"])
def test_views_built_from_recipes_are_the_official_pipelines(method):
    ours, official = view_transform(method), _official_code_pipelines(method)
    img = rgb(300, 400)
    for seed in range(3):
        torch.manual_seed(seed)
        a, next_a = ours(img), torch.rand(1)
        torch.manual_seed(seed)
        b, next_b = [t(img) for t in official], torch.rand(1)
        assert all(torch.equal(x, y) for x, y in zip(a, b)), (method, seed)
        assert torch.equal(next_a, next_b)  # the same number of random draws
