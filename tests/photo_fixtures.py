"""An ImageNet-like folder of real photographs for the data-path tests and benchmarks.

:func:`photo_folder` writes ``root/train/<class>/*.JPEG`` (500 × 375, quality 90, ImageNet's
typical size and quality) from the photographs that scikit-image (``skimage.data``) and
scikit-learn (``sklearn.datasets.load_sample_images``) ship inside their packages: each photo is
cut into a few different crops (and their mirror images), so a few dozen distinct files come out
of a handful of photos and nothing large is committed. Without either package the photo tests
are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = (500, 375)  # ImageNet's most common size (width × height)
QUALITY = 90
# (left, top, right, bottom) shares of the photo: whole, three 3/4 crops, a 2/3 centre crop
BOXES = ((0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 0.75, 0.75), (0.25, 0.25, 1.0, 1.0), (0.25, 0.0, 1.0, 0.75),
         (1 / 6, 1 / 6, 5 / 6, 5 / 6))
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg")  # files inside the skimage.data package: nothing is downloaded


def shipped_photos() -> list[tuple[str, Image.Image]]:
    """``(name, RGB image)`` of each colour photograph shipped by the installed packages."""
    photos = []
    try:
        import skimage.data as sk

        folder = Path(sk.__file__).parent
        for name in SKIMAGE_PHOTOS:
            if (folder / name).is_file():
                with Image.open(folder / name) as im:
                    photos.append((Path(name).stem, im.convert("RGB")))
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        photos += [(Path(f).stem, Image.fromarray(a)) for f, a in zip(bunch.filenames, bunch.images)]
    except ImportError:
        pass
    return photos


def _variant(photo: Image.Image, box: tuple[float, ...], mirror: bool) -> Image.Image:
    w, h = photo.size
    region = photo.crop(tuple(round(f * s) for f, s in zip(box, (w, h, w, h))))
    # fill 500 × 375 (4:3): scale to cover, then centre-crop
    scale = max(SIZE[0] / region.width, SIZE[1] / region.height)
    size = (max(SIZE[0], round(region.width * scale)), max(SIZE[1], round(region.height * scale)))
    region = region.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - SIZE[0]) // 2, (size[1] - SIZE[1]) // 2
    out = region.crop((left, top, left + SIZE[0], top + SIZE[1]))
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirror else out


def photo_folder(root: Path, classes: int = 4, per_photo: int = 4) -> Path:
    """Write the photo folder under ``root`` (``root/train/<class>/<photo>_<k>.JPEG``) and return
    ``root``; ``per_photo`` ≤ 10 variants of each photo. Skips the calling test without photos."""
    photos = shipped_photos()
    if not photos:
        pytest.skip("no photographs: neither scikit-image nor scikit-learn is installed")
    variants = [(box, mirror) for mirror in (False, True) for box in BOXES][:per_photo]
    for p, (name, photo) in enumerate(photos):
        folder = Path(root) / "train" / f"class{p % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, (box, mirror) in enumerate(variants):
            _variant(photo, box, mirror).save(folder / f"{name}_{k}.JPEG", quality=QUALITY)
    return Path(root)


def colour_image(h: int = 40, w: int = 50, seed: int = 1) -> Image.Image:
    """A small random RGB image: every colour op changes it."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
