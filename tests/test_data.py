"""Datasets (ImageFolder, built-in Fashion-MNIST) and label subsets."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e2mc_cli.data import fmnist
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.data.subsets import (
    balanced_indices,
    choose_subset,
    indices_from_names,
    labels_tag,
    load_subset_file,
    parse_labels,
    simclr_list,
)
from e2mc_cli.errors import UserError

HAVE_DEBIAN_FMNIST = fmnist.has_files(fmnist.SYSTEM_DIR)
needs_debian_fmnist = pytest.mark.skipif(
    not HAVE_DEBIAN_FMNIST,
    reason=f"Debian's dataset-fashion-mnist is not installed ({fmnist.SYSTEM_DIR} absent)",
)


# --- Fashion-MNIST -------------------------------------------------------------------------


def _only_the_shipped_copy(tmp_path, monkeypatch) -> None:
    """Every source but the copy inside the package absent (the cache is a fresh folder already)."""

    def no_download(root):
        raise AssertionError("the shipped copy must be used before any download")

    monkeypatch.setattr(fmnist, "SYSTEM_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fmnist, "_torchvision_download", no_download)
    monkeypatch.delenv("SSLBOOST_DATA", raising=False)


def _gunzip(path: Path) -> bytes:
    with gzip.open(path, "rb") as f:
        return f.read()


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_fmnist_shipped_copy_is_used_when_nothing_else_is_there(tmp_path, monkeypatch):
    _only_the_shipped_copy(tmp_path, monkeypatch)
    assert fmnist.locate(None) == fmnist.EMBEDDED_DIR
    train, test = fmnist.FashionMNIST("train"), fmnist.FashionMNIST("test")
    assert train.folder == test.folder == fmnist.EMBEDDED_DIR
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.images.shape == (60_000, 28, 28) and train.images.dtype == np.uint8
    # The decoded arrays are the idx files' bodies: their digests follow from the pinned file digests.
    header = {3: 16, 1: 8}
    for split, ds in (("train", train), ("test", test)):
        images_stem, labels_stem = fmnist.FILES[split]
        raw = _gunzip(fmnist.EMBEDDED_DIR / f"{images_stem}.gz")
        assert hashlib.sha256(raw).hexdigest() == fmnist.IDX_SHA256[images_stem]
        assert _sha256(ds.images) == hashlib.sha256(raw[header[3] :]).hexdigest()
        raw = _gunzip(fmnist.EMBEDDED_DIR / f"{labels_stem}.gz")
        assert hashlib.sha256(raw).hexdigest() == fmnist.IDX_SHA256[labels_stem]
        assert ds.targets == list(raw[header[1] :])


@needs_debian_fmnist
def test_fmnist_shipped_copy_equals_the_debian_copy(tmp_path, monkeypatch):
    for split in ("train", "test"):
        debian = fmnist.FashionMNIST(split, fmnist.SYSTEM_DIR)
        shipped = fmnist.FashionMNIST(split, fmnist.EMBEDDED_DIR)
        assert debian.folder == fmnist.SYSTEM_DIR and shipped.folder == fmnist.EMBEDDED_DIR
        assert _sha256(debian.images) == _sha256(shipped.images)
        assert debian.targets == shipped.targets
        assert debian.identity() == shipped.identity()


def test_fmnist_shipped_copy_is_checked_against_its_pinned_digest(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    _write_idx(tmp_path / "x.gz", arr)
    with pytest.raises(UserError, match="pinned sha256") as err:
        fmnist.read_idx(tmp_path / "x.gz", 3, sha256="0" * 64)
    assert "\n" not in str(err.value)
    good = hashlib.sha256(_gunzip(tmp_path / "x.gz")).hexdigest()
    np.testing.assert_array_equal(fmnist.read_idx(tmp_path / "x.gz", 3, sha256=good), arr)


def test_fmnist_splits_sizes_and_first_labels():
    train = resolve_dataset("fmnist", "train")
    val = resolve_dataset("fmnist", "val")
    assert len(train) == 60_000 and len(val) == 10_000
    # First labels of the official files (Xiao et al., 2017): 9 = Ankle boot.
    assert train.targets[:10] == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert val.targets[:10] == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    image, label = train[0]
    assert image.mode == "L" and image.size == (28, 28) and label == 9
    assert train.classes[9] == "Ankle boot" and len(train.classes) == 10
    assert resolve_dataset("fmnist", "test").targets[:10] == val.targets[:10]
    # A folder holding the idx files is recognised as Fashion-MNIST too.
    assert len(resolve_dataset(str(fmnist.EMBEDDED_DIR), "val")) == 10_000


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = {1: 0x801, 3: 0x803}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_fmnist_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for images, labels in fmnist.FILES.values():
        _write_idx(folder / f"{images}.gz", np.zeros((1, 2, 2)))
        _write_idx(folder / f"{labels}.gz", np.zeros(1))
    return folder


def test_read_idx_parses_header_and_rejects_bad_magic(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    _write_idx(tmp_path / "x.gz", arr)
    np.testing.assert_array_equal(fmnist.read_idx(tmp_path / "x.gz", 3), arr)
    with pytest.raises(UserError, match="not an unsigned-byte idx file"):
        fmnist.read_idx(tmp_path / "x.gz", 1)


def test_fmnist_search_order(tmp_path, monkeypatch):
    explicit = _fake_fmnist_folder(tmp_path / "explicit")
    env = _fake_fmnist_folder(tmp_path / "env" / "fashion-mnist")
    monkeypatch.setattr(fmnist, "SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("SSLBOOST_DATA", str(tmp_path / "env"))
    assert fmnist.locate(explicit) == explicit
    assert fmnist.locate(None) == env  # $SSLBOOST_DATA/fashion-mnist


def test_fmnist_not_found_lists_the_places_tried(tmp_path, no_fmnist):
    with pytest.raises(UserError) as err:
        resolve_dataset("fmnist", "train")
    msg = str(err.value)
    for place in (
        "$SSLBOOST_DATA",
        "no-debian",
        "no-embedded",
        "torchvision download",
        "network unreachable",
    ):
        assert place in msg
    assert "\n" not in msg


def test_an_explicit_fmnist_folder_is_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLBOOST_DATA", str(_fake_fmnist_folder(tmp_path / "env")))
    for spec in ("fmnist:" + str(tmp_path / "nonexistent"), "fmnist:" + str(tmp_path)):
        with pytest.raises(UserError, match=str(tmp_path)) as err:
            resolve_dataset(spec, "train")
        assert str(tmp_path / "env") not in str(err.value)


# --- ImageFolder -----------------------------------------------------------------------------


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "data"
    for split, n in (("train", 3), ("val", 2)):
        for c, cls in enumerate(("cat", "dog")):
            for i in range(n):
                _png(root / split / cls / f"{cls}_{split}_{i}.png", 40 * c + i)
    (root / "train" / "dog" / "broken.png").write_bytes(b"not a png at all")
    (root / "train" / "cat" / "empty.jpg").write_bytes(b"")
    (root / "train" / "cat" / "notes.txt").write_text("ignored: not an image extension")
    return root


def test_imagefolder_reads_classes_and_skips_unreadable(folder):
    train = resolve_dataset(str(folder), "train")
    assert train.classes == ["cat", "dog"]
    assert len(train) == 6 and train.targets == [0, 0, 0, 1, 1, 1]
    assert train.skipped == 2
    image, label = train[4]
    assert image.mode == "RGB" and label == 1
    val = resolve_dataset(str(folder), "val")
    assert len(val) == 4 and val.skipped == 0 and val.targets == [0, 0, 1, 1]
    assert val.identity() != train.identity() and len(val.identity()) == 64


def test_imagefolder_plain_root_and_errors(tmp_path, folder):
    plain = folder / "train"
    assert len(resolve_dataset(str(plain), "train")) == 6
    with pytest.raises(UserError, match="no val/ folder"):
        resolve_dataset(str(plain), "val")
    _png(folder / "val" / "bird" / "b.png", 1)
    with pytest.raises(UserError, match="not among the training classes"):
        resolve_dataset(str(folder), "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class folders"):
        resolve_dataset(str(tmp_path / "empty"), "train")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no image files"):
        resolve_dataset(str(tmp_path / "noimg"), "train")
    with pytest.raises(UserError, match="no such folder"):
        resolve_dataset(str(tmp_path / "missing"), "train")
    with pytest.raises(UserError, match="unknown split"):
        resolve_dataset(str(folder), "dev")


# --- label subsets ---------------------------------------------------------------------------


def test_parse_labels():
    assert parse_labels("1%") == "1%" and parse_labels("10") == "10%" and parse_labels(" 100% ") == "100%"
    assert parse_labels("0.5%") == "0.5%" and labels_tag("1%") == "1pct"
    for bad in ("0%", "150%", "lots", "-1"):
        with pytest.raises(UserError):
            parse_labels(bad)


def test_balanced_subset_counts_and_reproducibility():
    targets = np.array([0] * 100 + [1] * 50 + [2] * 7)
    idx = balanced_indices(targets, 0.1, seed=3)
    # round(0.1·100) = 10, round(0.1·50) = 5, round(0.1·7) = round(0.7) = 1
    assert np.bincount(targets[idx]).tolist() == [10, 5, 1]
    assert len(set(idx.tolist())) == len(idx) and np.all(np.diff(idx) > 0)
    assert np.bincount(targets[balanced_indices(targets, 0.001, 0)]).tolist() == [1, 1, 1]  # at least one
    assert np.array_equal(idx, balanced_indices(targets, 0.1, seed=3))
    assert not np.array_equal(idx, balanced_indices(targets, 0.1, seed=4))
    assert np.bincount(targets[balanced_indices(targets, 0.25, 0)]).tolist() == [25, 13, 2]  # 12.5→13, 1.75→2


def test_subset_saved_and_reused(tmp_path, folder):
    train = resolve_dataset(str(folder), "train")
    sub = choose_subset(train, "50%", seed=2, out_dir=tmp_path / "out")
    saved = tmp_path / "out" / "subset-50pct-seed2.json"
    assert saved.is_file() and sub.path == str(saved)
    assert np.bincount(np.asarray(train.targets)[sub.indices]).tolist() == [2, 2]  # round(1.5) = 2 each
    again = choose_subset(train, "50%", seed=7, subset_file=saved)
    assert (
        np.array_equal(again.indices, sub.indices) and again.sha256 == sub.sha256 and again.source == "file"
    )
    assert json.loads(saved.read_text())["dataset"]["sha256"] == train.identity()
    other = resolve_dataset(str(folder), "val")
    with pytest.raises(UserError, match="different training set"):
        load_subset_file(saved, other, "50%")
    assert choose_subset(train, "100%", seed=0).indices.tolist() == list(range(6))


def test_subset_from_file_names(tmp_path, folder):
    train = resolve_dataset(str(folder), "train")
    listing = tmp_path / "1percent.txt"
    listing.write_text("dog_train_1.png\ncat_train_0.png\n")
    sub = choose_subset(train, "1%", seed=0, subset_file=listing)
    assert [train.names[i] for i in sub.indices] == ["cat_train_0.png", "dog_train_1.png"]
    with pytest.raises(UserError, match="1 of 2 listed images are not in the training set"):
        indices_from_names(train, ["cat_train_0.png", "n01440764_10026.JPEG"], "list")


def test_simclr_list_fetched_through_the_zoo_download(tmp_path, monkeypatch):
    body = b"n01440764_10026.JPEG\nn01440764_10027.JPEG\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        requested: list[str] = []

        def do_GET(self):  # noqa: N802
            Handler.requested.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SSLBOOST_SUBSETS_URL", f"http://127.0.0.1:{server.server_port}/subsets/")
        path = simclr_list("1%")
        assert simclr_list("1%") == path  # cached: fetched once
    finally:
        server.shutdown()
    assert path.read_bytes() == body
    assert Handler.requested == ["/subsets/1percent.txt"]


def test_carve_validation_is_balanced_disjoint_and_fixed():
    from e2mc_cli.data.subsets import HOLDOUT_SEED, SplitPart, carve_validation

    class Labels:  # the minimum a split offers: classes, targets, items, identity
        classes = ["a", "b", "c"]
        targets = [0] * 30 + [1] * 30 + [2] * 30

        def __len__(self):
            return 90

        def __getitem__(self, i):
            return f"img{i}", self.targets[i]

        def identity(self):
            return "parent"

    parent = Labels()
    train, val = carve_validation(parent, 15)
    assert isinstance(val, SplitPart) and len(val) == 15 and len(train) == 75
    assert np.bincount(val.targets).tolist() == [5, 5, 5]  # 15 / 90 of 30 per class
    assert set(train.indices.tolist()).isdisjoint(val.indices.tolist())
    assert sorted([*train.indices.tolist(), *val.indices.tolist()]) == list(range(90))
    assert val[0] == (f"img{val.indices[0]}", parent.targets[val.indices[0]])
    expected = balanced_indices(np.asarray(parent.targets), 15 / 90, HOLDOUT_SEED)
    assert np.array_equal(val.indices, expected)
    again_train, again_val = carve_validation(parent, 15)  # the same images every time
    assert again_val.identity() == val.identity() and again_train.identity() == train.identity()
    assert len({train.identity(), val.identity(), "parent"}) == 3
    with pytest.raises(UserError, match="--holdout must be between 1 and 89"):
        carve_validation(parent, 90)
