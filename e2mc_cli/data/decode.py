"""JPEG decoding on the training device (``--decode device``), with its clean fallback.

With it, the loader's workers only read each file's bytes and its size from the JPEG header
(:class:`EncodedImages`) and draw the views' crops and parameters from that size
(:class:`~e2mc_cli.data.split.SplitViews`); on the device, :func:`decode_views` decodes the
whole batch at once with ``torchvision.io.decode_jpeg(list_of_bytes, device=...)`` (nvJPEG on
CUDA), then crops, resizes (antialiased, torchvision's tensor ``resized_crop``) and flips each
view, before the batched photometric stage (:mod:`e2mc_cli.data.device_stage`).

The crops are those of the workers' path (same boxes, flips and parameters from the same seeded
draws); the pixels differ by the decoder (nvJPEG's IDCT and chroma upsampling against
libjpeg-turbo's) and by torchvision's tensor resize against PIL's, a few levels of 255.

:func:`decode_unsupported` says why the device cannot decode (the reason is the one note line
the pipeline shows, and the workers decode instead): a device that is not CUDA, a dataset with
no files or files other than JPEG (the built-in Fashion-MNIST), a torchvision without nvJPEG.
A file named ``.jpg`` that is no RGB or gray JPEG (CMYK, PNG inside) is decoded by its worker.
torchvision 0.29 marks its image decoders deprecated (for TorchCodec); the warning is silenced
here, and a torchvision without them is one of the reasons to fall back.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from e2mc_cli.data.views import P, ViewRecipe
from e2mc_cli.errors import UserError

try:  # deprecated in torchvision 0.29, to go in a later release
    from torchvision.io import decode_jpeg, encode_jpeg
except ImportError:  # pragma: no cover - a torchvision without its image decoders
    decode_jpeg = encode_jpeg = None

JPEG_SUFFIXES = (".jpg", ".jpeg")
DEVICE_MODES = ("RGB", "L")  # what nvJPEG decodes to RGB; others (CMYK) are decoded on the workers


@dataclass(frozen=True)
class EncodedImage:
    """One image as a worker hands it to the device: ``data``, the file's bytes (1-D uint8), or
    for a file the device cannot decode the decoded ``3 × H × W`` uint8 image; its ``height`` and
    ``width`` in pixels."""

    data: torch.Tensor
    height: int
    width: int


def read_encoded(path: str | Path) -> EncodedImage:
    """The bytes of a JPEG file and its size from its header (nothing decoded); any other image
    is decoded to RGB here. An unreadable file raises ``OSError`` (the loader substitutes it)."""
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        if im.format == "JPEG" and im.mode in DEVICE_MODES:
            return EncodedImage(torch.frombuffer(bytearray(data), dtype=torch.uint8), im.height, im.width)
        rgb = im.convert("RGB")
    return EncodedImage(F.pil_to_tensor(rgb), rgb.height, rgb.width)


class EncodedImages(Dataset):
    """``base[i]`` as ``(EncodedImage, label)``, read from ``base.samples`` (``(path, label)``
    pairs: :class:`~e2mc_cli.data.datasets.ImageFolderDataset`)."""

    def __init__(self, base: Dataset):
        self.base = base
        self.samples = base.samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[EncodedImage, int]:
        path, label = self.samples[index]
        return read_encoded(path), label


def _decode_jpeg(data, device: torch.device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def _probe_jpeg() -> torch.Tensor:
    """A tiny encoded JPEG, to ask a device's decoder whether it works."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return encode_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8))


_PROBED: dict[str, str | None] = {}


def device_unsupported(device: torch.device | str | None) -> str | None:
    """Why ``device`` cannot decode JPEG batches (``None``: it can). ``None`` as the device: the
    batch is decoded wherever it is sent (torchvision's CPU decoder for a CPU tensor)."""
    if decode_jpeg is None:
        return "this torchvision has no JPEG decoder (torchvision.io.decode_jpeg)"
    if device is None:
        return None
    device = torch.device(device)
    if device.type != "cuda":
        return f"--decode device needs a CUDA training device, not {device.type}"
    key = str(device)
    if key not in _PROBED:
        try:
            _decode_jpeg([_probe_jpeg()], device)
            _PROBED[key] = None
        except (RuntimeError, ImportError, AttributeError, NotImplementedError) as exc:
            _PROBED[key] = f"this torchvision cannot decode JPEG on {device} ({str(exc).splitlines()[0]})"
    return _PROBED[key]


def dataset_unsupported(base: Dataset) -> str | None:
    """Why the files of ``base`` cannot be decoded on the device (``None``: they can)."""
    samples = getattr(base, "samples", None)
    if samples is None:
        return f"{type(base).__name__} has no JPEG files (the built-in dataset is decoded on the workers)"
    others = sum(Path(p).suffix.lower() not in JPEG_SUFFIXES for p, _ in samples)
    if others:
        return f"{others} of the {len(samples)} files are not JPEG"
    return None


def decode_unsupported(base: Dataset, device: torch.device | str | None) -> str | None:
    """The reason the device cannot decode ``base``'s images on ``device``, or ``None``."""
    return device_unsupported(device) or dataset_unsupported(base)


def _host_decode(data: torch.Tensor, index: int) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
            return F.pil_to_tensor(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"image {index} of the batch cannot be decoded ({exc})") from None


def decode_images(payloads: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Each payload as a ``3 × H × W`` uint8 image on ``device``: the encoded ones (1-D) decoded
    in one batch; a batch the decoder refuses is decoded image by image, on the host where the
    device's decoder fails (PIL reads some damaged files the device decoder rejects)."""
    images: list[torch.Tensor | None] = [None] * len(payloads)
    encoded = [i for i, p in enumerate(payloads) if p.ndim == 1]
    if encoded:
        try:
            decoded = _decode_jpeg([payloads[i] for i in encoded], device)
        except RuntimeError:
            decoded = []
            for i in encoded:
                try:
                    decoded.append(_decode_jpeg(payloads[i], device))
                except RuntimeError:
                    decoded.append(_host_decode(payloads[i], i).to(device))
        for i, image in zip(encoded, decoded):
            images[i] = image
    for i, p in enumerate(payloads):
        if p.ndim == 3:
            images[i] = p.to(device, non_blocking=True)
    return images


def decode_views(
    payloads: Sequence[torch.Tensor],
    boxes: torch.Tensor,
    params: Sequence[torch.Tensor],
    recipes: Sequence[ViewRecipe],
    device: torch.device,
) -> list[torch.Tensor]:
    """The views' ``B × size × size × 3`` uint8 crops on ``device`` (channels last, as the workers'
    crops): decode, then per image and view crop ``boxes[i, v]`` (top, left, height, width),
    resize and flip where ``params[v]`` says so."""
    images = decode_images(payloads, torch.device(device))
    views = []
    for v, recipe in enumerate(recipes):
        size, mode = [recipe.size, recipe.size], InterpolationMode(recipe.interpolation)
        crops = torch.stack(
            [
                F.resized_crop(img, *box, size, mode, antialias=True)
                for img, box in zip(images, boxes[:, v].tolist())
            ]
        )
        flip = (params[v][:, P["flip"]] > 0.5).to(crops.device, non_blocking=True)
        crops = torch.where(flip[:, None, None, None], crops.flip(-1), crops)
        views.append(crops.permute(0, 2, 3, 1))
    return views
