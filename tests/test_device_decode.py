"""JPEG decoding in the device stage (``decode="device"``), run on the CPU with torchvision's CPU
decoder, and its fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from photo_fixtures import photo_folder
from PIL import Image

from e2mc_cli.data import decode
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.data.split import Crops, Encoded
from e2mc_cli.errors import UserError
from e2mc_cli.methods import view_pipeline

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("jpegs"), per_photo=2)


@pytest.fixture(scope="module")
def photos(folder):
    return resolve_dataset(str(folder), "train")


def batches(method: str, base, n: int = 8, px: int = 64, seed: int = 1):
    """The split pipeline's batch and the device-decoding pipeline's batch of the same items."""
    split = view_pipeline(method, px, "split")
    dec = view_pipeline(method, px, "split", decode="device")  # no device: decoded where sent
    a, b = split.dataset(base, seed), dec.dataset(base, seed)
    items = range(n)
    return split, split.collate([a[(0, i)] for i in items]), dec, dec.collate([b[(0, i)] for i in items])


@pytest.mark.parametrize("method", ["vicreg", "swav"])
def test_the_device_decodes_the_workers_crops(method, photos):
    split, sb, dec, db = batches(method, photos)
    assert not db.views and all(p.ndim == 1 and p.dtype == torch.uint8 for p in db.encoded)
    assert db.boxes.shape == (8, len(dec.recipes), 4)
    for x, y in zip(sb.params, db.params):  # the same draws from the image size in the header
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
    crops = decode.decode_views(db.encoded, db.boxes, db.params, dec.recipes, CPU)
    for ours, workers in zip(crops, sb.views):  # torchvision's tensor resize against PIL's
        d = (ours.float() - workers.float()).abs()
        assert ours.shape == workers.shape and d.mean() < 0.1 and d.max() <= 4
    views, expected = dec.to_device(db, CPU), split.to_device(sb, CPU)
    assert [v.shape for v in views] == [v.shape for v in expected]
    assert all((v - e).abs().mean() < 0.05 for v, e in zip(views, expected))


def test_the_decoder_is_libjpegs_on_the_cpu(photos):
    path = photos.samples[0][0]
    image = decode.decode_images([decode.read_encoded(path).data], CPU)[0]
    with Image.open(path) as im:
        assert torch.equal(image, torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))


def test_files_the_device_cannot_decode_are_decoded_by_their_worker(tmp_path, photos):
    root = photo_folder(tmp_path / "odd", per_photo=1)
    files = sorted(root.rglob("*.JPEG"))
    with Image.open(files[0]) as im:
        im.convert("CMYK").save(files[0], quality=90)  # a CMYK JPEG
    with Image.open(files[1]) as im:
        im.save(files[1], format="PNG")  # a PNG named .JPEG
    base = resolve_dataset(str(root), "train")
    encoded = [decode.read_encoded(p) for p, _ in base.samples[:3]]
    assert [e.data.ndim for e in encoded] == [3, 3, 1]
    assert encoded[0].data.shape == (3, encoded[0].height, encoded[0].width)
    _, sb, dec, db = batches("simsiam", base, n=3)
    views = dec.to_device(db, CPU)
    assert [tuple(v.shape) for v in views] == [(3, 3, 64, 64)] * 2
    assert all(torch.isfinite(v).all() for v in views)


def test_a_batch_the_decoder_refuses_is_decoded_image_by_image(photos):
    good = decode.read_encoded(photos.samples[0][0]).data
    images = decode.decode_images([good, good], CPU)
    assert len(images) == 2 and torch.equal(images[0], images[1])
    with pytest.raises(UserError, match="image 1 of the batch cannot be decoded"):
        decode.decode_images([good, torch.tensor([0xFF, 0xD8, 1, 2, 3], dtype=torch.uint8)], CPU)


def test_a_cpu_training_device_falls_back_with_one_note(photos):
    dec = view_pipeline("vicreg", 32, "split", decode="device", device="cpu")
    item = dec.dataset(photos, 0)[(0, 0)][0]
    assert isinstance(item, Crops)
    assert dec.describe().endswith("note: --decode device needs a CUDA training device, not cpu")
    off = view_pipeline("vicreg", 32, "cpu", decode="device")
    assert "note: --decode device needs --augment split" in off.describe()


def test_the_built_in_dataset_and_other_files_fall_back(tmp_path, photos):
    fmnist = resolve_dataset("fmnist", "train")
    dec = view_pipeline("vicreg", 28, "split", decode="device")
    assert isinstance(dec.dataset(fmnist, 0)[(0, 5)][0], Crops)
    assert "note: FashionMNIST has no JPEG files" in dec.describe()

    root = photo_folder(tmp_path / "png", per_photo=1)
    first = sorted(root.rglob("*.JPEG"))[0]
    Image.open(first).save(first.with_suffix(".png"))
    first.unlink()
    dec = view_pipeline("vicreg", 32, "split", decode="device")
    dec.dataset(resolve_dataset(str(root), "train"), 0)
    assert dec.note.startswith("1 of the ") and "are not JPEG" in dec.note

    jpegs = view_pipeline("vicreg", 32, "split", decode="device")
    assert isinstance(jpegs.dataset(photos, 0)[(0, 0)][0], Encoded) and jpegs.note == ""
    assert "JPEG decode" in jpegs.describe() and "note" not in jpegs.describe()


def test_a_torchvision_without_the_device_decoder_falls_back(monkeypatch):
    def refuse(data, device):
        raise RuntimeError("Not compiled with GPU support\nmore")

    monkeypatch.setattr(decode, "_decode_jpeg", refuse)
    monkeypatch.setattr(decode, "_PROBED", {})
    reason = decode.device_unsupported("cuda:0")
    assert reason == "this torchvision cannot decode JPEG on cuda:0 (Not compiled with GPU support)"
    dec = view_pipeline("swav", 32, "split", decode="device", device="cuda:0")
    assert dec.describe().endswith(f"note: {reason}")
