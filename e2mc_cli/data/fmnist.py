"""The built-in dataset ``fmnist``: the real Fashion-MNIST (Xiao et al., 2017), read from its idx files.

The four official files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; plain or gzipped) are looked for, in
order, in:

1. an explicit folder (``--data PATH`` or ``fmnist:PATH``): the only place looked in when given
   (its files missing is an error naming it, never another copy of the data),
2. ``$SSLBOOST_DATA`` (the folder itself, or its ``fashion-mnist/`` or ``FashionMNIST/raw/`` subfolder),
3. ``/usr/share/datasets/fashion-mnist/`` (Debian's ``dataset-fashion-mnist`` package),
4. ``<cache>/datasets`` (an earlier download),
5. the copy shipped inside the package (``e2mc_cli/data/fashion_mnist/``, MIT licence, see its
   ``NOTICE``), whose decoded contents are checked against :data:`IDX_SHA256` when read,
6. torchvision's ``FashionMNIST(download=True)`` into ``<cache>/datasets`` (only if the shipped copy
   is missing or damaged; network needed once).

Splits: ``train`` (60 000 images) and ``val`` = ``test`` (the 10 000 test images). Items are
``(PIL grayscale 28 × 28 image, int label)``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from e2mc_cli.errors import UserError
from e2mc_cli.io import cache_dir

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED_DIR = Path(str(resources.files("e2mc_cli.data").joinpath("fashion_mnist")))
# SHA-256 of each idx file's decoded bytes: the identity of Fashion-MNIST whatever its compression
# (Debian's gzip files differ byte-wise from Zalando's; their contents do not).
IDX_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned-byte labels (1-d) and images (3-d)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def has_files(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds all four Fashion-MNIST idx files (plain or gzipped)."""
    folder = Path(folder)
    return all(_find_file(folder, stem) for pair in FILES.values() for stem in pair)


def candidates(folder: Path) -> list[Path]:
    """Where under ``folder`` the idx files may lie."""
    return [folder, folder / "fashion-mnist", folder / "FashionMNIST" / "raw"]


def _torchvision_download(root: Path) -> Path:
    """Download with torchvision into ``root``; return the folder holding the idx files."""
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(str(root), train=train, download=True)
    return root / "FashionMNIST" / "raw"


def _given(path: str | os.PathLike) -> Path:
    """The folder under an explicit ``path`` holding the idx files; else a :class:`UserError` naming it."""
    given = Path(path).expanduser()
    folder = next((f for f in candidates(given) if has_files(f)), None)
    if folder is None:
        names = ", ".join(stem for pair in FILES.values() for stem in pair)
        where = "no such folder" if not given.is_dir() else "not all four Fashion-MNIST idx files there"
        raise UserError(
            f"{given}: {where} (looked in it, fashion-mnist/ and FashionMNIST/raw/ for {names}, plain or .gz)"
        )
    return folder


def locate(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The folder with the idx files: under ``path`` when given (and only there), else searched
    in the documented order; else a :class:`UserError` listing every place tried."""
    if path is not None:
        return _given(path)
    tried: list[str] = []
    places: list[tuple[str, Path]] = []
    env = os.environ.get("SSLBOOST_DATA")
    if env:
        places.append(("$SSLBOOST_DATA", Path(env).expanduser()))
    else:
        tried.append("$SSLBOOST_DATA (not set)")
    places.append(("Debian dataset-fashion-mnist", SYSTEM_DIR))
    cache = Path(cache_dir()) / "datasets"
    places.append(("cache", cache))
    for label, place in places:
        for folder in candidates(place):
            if has_files(folder):
                return folder
        tried.append(f"{place} ({label})")
    if has_files(EMBEDDED_DIR):
        return EMBEDDED_DIR
    tried.append(f"{EMBEDDED_DIR} (copy shipped with sslboost: incomplete)")
    if download:
        try:
            folder = _torchvision_download(cache)
            if has_files(folder):
                return folder
            tried.append(f"torchvision download into {cache} (files incomplete)")
        except Exception as exc:  # network errors of every kind end up here
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            tried.append(f"torchvision download into {cache} (failed: {reason})")
    raise UserError(
        "Fashion-MNIST not found; tried: "
        + "; ".join(tried)
        + ". Reinstall sslboost, set $SSLBOOST_DATA, or pass --data PATH to a folder with the four idx files"
    )


def _read_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: unreadable idx file ({exc})") from None


def parse_idx(data: bytes, ndim: int, path: str | os.PathLike = "<idx>") -> np.ndarray:
    """The uint8 array held by the bytes of an unsigned-byte idx file."""
    if len(data) < 4 + 4 * ndim or int.from_bytes(data[:4], "big") != _IDX_MAGIC[ndim]:
        raise UserError(f"{path}: not an unsigned-byte idx file with {ndim} dimension(s)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{path}: truncated idx file ({body.size} bytes for shape {shape})")
    return body.reshape(shape)


def read_idx(path: str | os.PathLike, ndim: int, sha256: str | None = None) -> np.ndarray:
    """Parse an unsigned-byte idx file (plain or gzipped) into a uint8 array; with ``sha256``, the
    decoded bytes must have that digest."""
    path = Path(path)
    data = _read_bytes(path)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise UserError(
            f"{path}: contents do not match the pinned sha256 of Fashion-MNIST; reinstall sslboost "
            "(pip install --force-reinstall sslboost) or pass --data PATH to a folder with the idx files"
        )
    return parse_idx(data, ndim, path)


@functools.lru_cache(maxsize=4)
def _load(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_stem, labels_stem = FILES[split]
    pinned = IDX_SHA256 if Path(folder) == EMBEDDED_DIR else {}
    images = read_idx(_find_file(Path(folder), images_stem), 3, pinned.get(images_stem))
    labels = read_idx(_find_file(Path(folder), labels_stem), 1, pinned.get(labels_stem)).astype(np.int64)
    if len(images) != len(labels) or len(images) != SPLIT_SIZES[split]:
        raise UserError(
            f"{folder}: Fashion-MNIST {split} split has {len(images)} images and {len(labels)} labels, "
            f"expected {SPLIT_SIZES[split]}"
        )
    return images, labels


class FashionMNIST(Dataset):
    """One split of Fashion-MNIST held in memory: ``(PIL 'L' image, int label)`` items."""

    def __init__(self, split: str = "train", path: str | os.PathLike | None = None, *, download: bool = True):
        split = {"val": "test"}.get(split, split)
        if split not in FILES:
            raise UserError(f"unknown Fashion-MNIST split {split!r}; expected train, val or test")
        self.folder = locate(path, download=download)
        self.split = split
        self.images, labels = _load(str(self.folder), split)
        self.targets: list[int] = labels.tolist()
        self.classes: list[str] = list(CLASSES)
        self.skipped = 0  # nothing is ever unreadable here; kept for the ImageFolder interface
        self.spec = "fmnist"
        self._identity: str | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]

    def identity(self) -> str:
        """SHA-256 of the split's labels and pixels (what a result on this split depends on)."""
        if self._identity is None:
            h = hashlib.sha256(f"fmnist/{self.split}/{len(self)}\n".encode())
            h.update(np.asarray(self.targets, dtype=np.int64).tobytes())
            h.update(self.images.tobytes())
            self._identity = h.hexdigest()
        return self._identity
