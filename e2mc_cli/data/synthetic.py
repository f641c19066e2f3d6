"""Synthetic data, linearly separable by construction, for tests and demos.

Each sample starts as a class-dependent Gaussian feature ``f = μ_c + σ ε`` in ``R^k`` (class means
``μ_c ~ N(0, I)`` scaled by ``separation``); images are a fixed random linear map of ``f``:
``pixels = clip(0.5 + 0.15 · A f / s, 0, 1)`` with ``A ~ N(0, 1/k)^{k × (3·H·W)}`` and
``s = √(separation² + 1)`` the typical standard deviation of ``A f`` (so hardly any pixel is
clipped). A linear classifier on ``f`` (or on any injective linear image of it) separates the
classes up to the overlap of the Gaussians, which ``separation`` makes negligible.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from e2mc_cli.io import atomic_path


def gaussian_features(
    n_per_class: int,
    n_classes: int = 4,
    dim: int = 16,
    *,
    separation: float = 4.0,
    seed: int = 0,
    class_seed: int = 1234,
) -> tuple[np.ndarray, np.ndarray]:
    """``(features [n_per_class·n_classes, dim] float32, labels int64)`` in class-major order.

    The class means depend on ``class_seed`` only, so splits drawn with different ``seed`` share them.
    """
    means = separation * np.random.default_rng(class_seed).standard_normal((n_classes, dim))
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    feats = means[labels] + rng.standard_normal((len(labels), dim))
    return feats.astype(np.float32), labels.astype(np.int64)


def random_feature_space(feats: np.ndarray, out_dim: int, *, seed: int = 1) -> np.ndarray:
    """The features seen through a fixed random linear map ``R^k → R^out_dim``."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((feats.shape[1], out_dim)) / np.sqrt(feats.shape[1])
    return (feats @ a).astype(np.float32)


class _ArrayImages(Dataset):
    """``(PIL RGB image, label)`` items from ``self.images`` (N × H × W × 3 uint8) and ``self.targets``."""

    images: np.ndarray
    targets: list[int]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]


class SyntheticImages(_ArrayImages):
    """``(PIL RGB image, label)`` items whose pixels are a fixed random linear map of
    class-dependent Gaussian features (see the module docstring)."""

    def __init__(
        self,
        n_per_class: int,
        n_classes: int = 4,
        image_size: int = 16,
        *,
        dim: int = 8,
        separation: float = 4.0,
        seed: int = 0,
        map_seed: int = 1,
    ):
        feats, labels = gaussian_features(n_per_class, n_classes, dim, separation=separation, seed=seed)
        pixels = random_feature_space(feats, 3 * image_size * image_size, seed=map_seed)
        pixels = np.clip(0.5 + 0.15 * pixels / np.sqrt(separation**2 + 1.0), 0.0, 1.0)
        self.images = (pixels.reshape(-1, image_size, image_size, 3) * 255).round().astype(np.uint8)
        self.targets: list[int] = labels.tolist()
        self.classes = [f"class{c}" for c in range(n_classes)]


def write_image_folder(root: str | os.PathLike, splits: dict[str, SyntheticImages]) -> Path:
    """Save datasets as PNG files in the ImageNet layout ``root/<split>/<class>/<i>.png``."""
    root = Path(root)
    for split, data in splits.items():
        for i in range(len(data)):
            image, label = data[i]
            path = root / split / data.classes[label] / f"{split}_{i:05d}.png"
            with atomic_path(path) as tmp:
                image.save(tmp, format="PNG")
    return root


class ColourImages(_ArrayImages):
    """``(PIL RGB image, label)`` items of one flat colour per class plus pixel noise.

    Class ``c`` has colour ``u_c ~ U[0.1, 0.9]^3`` (from ``class_seed``); each pixel is
    ``clip(u_c + 0.05 ε)``. Crops, resizing and flips leave an image's class evident, so a
    classifier trained on augmented crops and one trained on whole images should agree.
    """

    def __init__(
        self,
        n_per_class: int,
        n_classes: int = 4,
        image_size: int = 16,
        *,
        seed: int = 0,
        class_seed: int = 1234,
    ):
        colours = np.random.default_rng(class_seed).uniform(0.1, 0.9, (n_classes, 3))
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(n_classes), n_per_class)
        noise = 0.05 * rng.standard_normal((len(labels), image_size, image_size, 3))
        pixels = np.clip(colours[labels][:, None, None, :] + noise, 0.0, 1.0)
        self.images = (pixels * 255).round().astype(np.uint8)
        self.targets: list[int] = labels.tolist()
        self.classes = [f"class{c}" for c in range(n_classes)]
