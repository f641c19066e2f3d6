"""The one evaluation preprocessing: its rules, its transform, and the same view for every consumer."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from e2mc_cli.data import fmnist
from e2mc_cli.data.transforms import (
    AUTHORS_EVAL_STD,
    IMAGENET_MEAN,
    NATIVE,
    PHOTOS,
    REFERENCE_SIZE,
    EvalPreprocessing,
    ToRGB,
    dataset_kind,
    default_image_size,
    eval_preprocessing,
    eval_transform,
    trained_image_size,
)
from e2mc_cli.diagnostics import inspection_preprocessing
from e2mc_cli.methods import method_names
from e2mc_cli.publish import config_json as TC
from e2mc_cli.training.recipe import resolve_recipe
from e2mc_cli.zoo import resolve_base

BUILTIN_BASES = ("fmnist-vicreg", "fmnist-swav", "fmnist-simsiam")


def gray28() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8), mode="L")


def rgb(h: int, w: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8))


def r50_metadata(method: str) -> dict[str, str]:
    """The metadata of a ResNet-50 continued at the shipped ImageNet recipe (224 px)."""
    recipe = resolve_recipe(method, "e2mc")
    return {"method": method, "arch": "resnet50", "recipe": json.dumps(recipe)}


def consumers(metadata: dict, kind: str) -> dict[str, tuple]:
    """(size, crop_pct, mean, std) as ``eval``, ``inspect`` and the exported timm config ask for them
    through their own entry points, for a run trained on data of ``kind``."""
    dataset = fmnist.FashionMNIST.__new__(fmnist.FashionMNIST) if kind == NATIVE else object()
    ev = eval_preprocessing(metadata, dataset_kind(dataset))  # evaluate.run._load_data's one line
    ins = inspection_preprocessing(metadata, dataset)
    run = SimpleNamespace(
        metadata=metadata,
        summary={"data": "fmnist" if kind == NATIVE else "/data/photos"},
        base="",
        method=metadata["method"],
        criterion="e2mc",
        timm_compatible=metadata.get("arch") == "resnet50",
    )
    timm_cfg = TC._pretrained_cfg(run, TC.run_preprocessing(run))

    def view(p: EvalPreprocessing) -> tuple:
        return p.image_size, p.crop_pct, tuple(p.mean), tuple(p.std)

    timm_view = (
        timm_cfg["input_size"][1],
        timm_cfg["crop_pct"],
        tuple(timm_cfg["mean"]),
        tuple(timm_cfg["std"]),
    )
    return {"eval": view(ev), "inspect": view(ins), "timm": timm_view}


def expected_eval_output(image: Image.Image, size: int, resized: int, mean, std) -> torch.Tensor:
    """What ``eval`` computes, step by step: RGB uint8 tensor, antialiased bilinear resize of the
    short side, centre crop, scale to [0, 1], normalise."""
    x = v2.functional.pil_to_tensor(image.convert("RGB"))
    if min(x.shape[-2:]) != resized:
        x = v2.functional.resize(x, resized, antialias=True)
    x = v2.functional.center_crop(x, size).float() / 255
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


@pytest.mark.parametrize("name", BUILTIN_BASES)
def test_builtin_bases_look_the_same_to_eval_inspect_and_timm(name):
    meta = resolve_base(name).metadata
    recipe_size = json.loads(meta["recipe"])["views"]["image_size"]
    kind = dataset_kind("fmnist")
    assert kind == NATIVE and trained_image_size(meta, kind) == recipe_size == default_image_size(NATIVE)
    views = consumers(meta, kind)
    std = AUTHORS_EVAL_STD  # every method: the authors' eval_linear.py normalises all bases alike
    assert views["eval"] == views["inspect"] == views["timm"] == (recipe_size, 1.0, IMAGENET_MEAN, std)
    prep = eval_preprocessing(meta, kind)
    assert prep.resize_size == recipe_size  # the whole image: nothing resized, nothing cropped away
    image = gray28()
    out = eval_transform(prep)(image)
    assert type(out) is torch.Tensor and out.dtype == torch.float32
    torch.testing.assert_close(out, expected_eval_output(image, recipe_size, recipe_size, IMAGENET_MEAN, std))


@pytest.mark.parametrize("method", method_names())
def test_r50_at_224_looks_the_same_to_eval_inspect_and_timm(method, tmp_path):
    meta = r50_metadata(method)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    kind = dataset_kind(str(tmp_path))
    assert kind == PHOTOS and trained_image_size(meta, kind) == REFERENCE_SIZE
    views = consumers(meta, kind)
    std = AUTHORS_EVAL_STD  # every method: the authors' eval_linear.py normalises all bases alike
    crop_pct = 224 / 256  # the official evaluations: short side to 256, centre crop 224
    assert (
        views["eval"] == views["inspect"] == views["timm"] == (REFERENCE_SIZE, crop_pct, IMAGENET_MEAN, std)
    )
    prep = eval_preprocessing(meta, kind)
    assert prep.resize_size == round(REFERENCE_SIZE / crop_pct)
    image = rgb(300, 400)
    out = eval_transform(prep)(image)
    assert tuple(out.shape) == (3, REFERENCE_SIZE, REFERENCE_SIZE)
    # float32 tolerance: one grey level off anywhere (1/255/std ≈ 0.017) would fail
    torch.testing.assert_close(
        out, expected_eval_output(image, REFERENCE_SIZE, prep.resize_size, IMAGENET_MEAN, std)
    )


def test_timm_reads_the_fields_back():
    timm_data = pytest.importorskip("timm.data")
    for meta, kind in ((resolve_base("fmnist-swav").metadata, NATIVE), (r50_metadata("vicreg"), PHOTOS)):
        fields = eval_preprocessing(meta, kind, trained_image_size(meta, kind)).timm_fields()
        resolved = timm_data.resolve_data_config({}, pretrained_cfg=fields)
        assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in resolved.items()} == fields


def test_image_size_asked_for_wins_and_keeps_the_crop_rule():
    prep = eval_preprocessing({"method": "vicreg"}, PHOTOS, 64)
    assert (prep.image_size, prep.resize_size) == (64, round(64 * 256 / 224))
    assert eval_preprocessing({"method": "vicreg"}, NATIVE, 12).resize_size == 12
    assert tuple(eval_transform(prep)(rgb(40, 80)).shape) == (3, 64, 64)


def test_trained_image_size_reads_the_recipe_else_the_kind():
    assert trained_image_size({"recipe": json.dumps({"views": {"image_size": 96}})}) == 96
    assert trained_image_size({"recipe": {"views": {"image_size": 64}}}, NATIVE) == 64
    for meta in (
        {},
        {"recipe": "{}"},
        {"recipe": "not json"},
        {"recipe": json.dumps({"views": {"image_size": True}})},
    ):
        assert trained_image_size(meta) == REFERENCE_SIZE
        assert trained_image_size(meta, NATIVE) == default_image_size(NATIVE)
    with pytest.raises(ValueError, match="dataset kind"):
        default_image_size("video")


def test_dataset_kind_of_specs_and_datasets(tmp_path):
    assert dataset_kind("fmnist") == dataset_kind("fmnist:/somewhere") == NATIVE
    assert dataset_kind(str(tmp_path / "missing")) == PHOTOS
    for pair in fmnist.FILES.values():  # a folder of the idx files is Fashion-MNIST too
        for stem in pair:
            (tmp_path / stem).touch()
    assert dataset_kind(str(tmp_path)) == NATIVE
    assert dataset_kind(object()) == PHOTOS


def test_to_rgb_accepts_every_image_mode_and_tensors():
    to_rgb = ToRGB()
    for img in (gray28(), gray28().convert("P"), rgb(5, 6).convert("RGBA"), rgb(5, 6).convert("CMYK")):
        assert to_rgb(img).mode == "RGB"
    assert to_rgb(torch.zeros(1, 4, 5, dtype=torch.uint8)).size == (5, 4)
    assert to_rgb(torch.zeros(4, 5, dtype=torch.uint8)).mode == "RGB"
    assert to_rgb(torch.zeros(4, 4, 5, dtype=torch.uint8)).mode == "RGB"
    with pytest.raises(TypeError):
        to_rgb(np.zeros((4, 4)))


def test_constant_image_maps_to_its_normalised_value():
    # A SimSiam checkpoint too is normalised with the std of the authors' evaluation scripts
    # (eval_linear.py / eval_semisup.py: 0.228, 0.224, 0.225), not with SimSiam's own 0.229: by hand,
    # red 255 → (1 − 0.485) / 0.228, green 0 → −0.456 / 0.224, blue 128 → (128/255 − 0.406) / 0.225.
    flat = Image.new("RGB", (300, 400), (255, 0, 128))
    out = eval_transform(eval_preprocessing({"method": "simsiam"}, PHOTOS))(flat)
    expected = torch.tensor([(1 - 0.485) / 0.228, -0.456 / 0.224, (128 / 255 - 0.406) / 0.225])
    torch.testing.assert_close(out[:, 100, 100], expected)


def test_every_method_is_evaluated_with_the_authors_std():
    assert AUTHORS_EVAL_STD == (0.228, 0.224, 0.225)
    for method in method_names():
        assert eval_preprocessing({"method": method}, PHOTOS).std == AUTHORS_EVAL_STD
        assert eval_preprocessing({"method": method}, NATIVE).timm_fields()["std"] == [0.228, 0.224, 0.225]


def test_eval_transform_pickles_for_worker_processes():
    tf = pickle.loads(pickle.dumps(eval_transform(eval_preprocessing({"method": "swav"}, NATIVE))))
    assert tuple(tf(gray28()).shape) == (3, 28, 28)
