"""Image pipelines of the evaluation protocols, data loading, and frozen-backbone features.

- Evaluation transform (every protocol's validation pass, and the training images of ``--mode
  cached`` and ``knn``): :func:`e2mc_cli.data.transforms.eval_transform` of the checkpoint's
  :func:`~e2mc_cli.data.transforms.eval_preprocessing`.
- Training transform (``--mode standard`` and ``semisup``): ``RandomResizedCrop(PX)`` (scale
  0.08–1, torchvision's default as in the official code) and a horizontal flip, drawn afresh every
  epoch, normalised as the evaluation transform (the same mean and std). Datasets used at their
  native small size (the built-in 28 px ``fmnist``) crop at least 20 % of the image
  (:data:`SMALL_IMAGE_CROP_SCALE`), as their pre-training recipes do: 8 % of a 28 px image is an
  8 px patch.
- Features are computed in the evaluation's precision (:func:`e2mc_cli.precision.autocast`) and
  kept in fp32.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from e2mc_cli.data.transforms import EvalPreprocessing, ToRGB, normalised_tensor
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.progress import stage
from e2mc_cli.models.memory_format import images_to
from e2mc_cli.precision import autocast
from e2mc_cli.stop_signals import leave_stop_signals_to_the_main_process

STANDARD_CROP_SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop default, the official recipes'
SMALL_IMAGE_CROP_SCALE = (0.2, 1.0)  # native-size small images (fmnist): as their pre-training views


def train_transform(prep: EvalPreprocessing, scale: tuple[float, float] = STANDARD_CROP_SCALE):
    """``RandomResizedCrop(PX, scale)`` + horizontal flip at the evaluation's size ``PX``,
    normalised as the evaluation (``prep``'s mean and std)."""
    return v2.Compose(
        [
            ToRGB(),
            v2.ToImage(),
            v2.RandomResizedCrop(int(prep.image_size), scale=tuple(scale), antialias=True),
            v2.RandomHorizontalFlip(),
            *normalised_tensor(prep.mean, prep.std),
        ]
    )


class Transformed(Dataset):
    """``dataset[indices[i]]`` through ``transform``: ``(tensor, label)``."""

    def __init__(self, dataset, indices, transform):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.dataset[int(self.indices[i])]
        return self.transform(image), label


def default_workers(dataset, n: int) -> int:
    """Loader processes: none for in-memory datasets or fewer than 1024 images, else up to 8."""
    if not hasattr(dataset, "samples") or n < 1024:
        return 0
    return min(8, os.cpu_count() or 1)


def loader(
    dataset,
    indices,
    transform,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    workers: int | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """Batches of ``transform(dataset[i])`` for ``i`` in ``indices``, seeded by ``seed`` when
    shuffled; ``workers`` ``None`` picks :func:`default_workers`."""
    workers = default_workers(dataset, len(indices)) if workers is None else workers
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        Transformed(dataset, indices, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=workers > 0,  # one start-up for every epoch
        worker_init_fn=leave_stop_signals_to_the_main_process,  # Ctrl-C or SIGTERM: the command stops
    )


def pick_device(device: str | None = None) -> torch.device:
    """``auto`` (or nothing): CUDA when present, else the CPU; any other name as given
    (the CLI's ``--device`` has been checked by :func:`e2mc_cli.cli.options.parse_device`)."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    dataset,
    indices,
    transform,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    workers: int | None = None,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (float32, on the CPU) and labels of ``dataset[indices]``, backbone in eval mode,
    its forward pass in ``precision`` (a stage of the evaluation's progress display,
    :mod:`e2mc_cli.evaluate.progress`)."""
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    n = len(indices)
    feats, labels = None, torch.empty(n, dtype=torch.long)
    start = 0
    split = getattr(dataset, "split", "")
    try:
        with stage(f"features ({split})" if split else "features", n, "images") as advance:
            for x, y in loader(dataset, indices, transform, batch_size, workers=workers):
                with autocast(device, precision):
                    f = backbone(images_to(x, device)).float().cpu()
                if feats is None:  # filled in place: no second copy of a large feature matrix
                    feats = torch.empty(n, f.shape[1], dtype=torch.float32)
                feats[start : start + len(f)] = f
                labels[start : start + len(f)] = y
                start += len(f)
                advance(len(f))
    finally:
        backbone.train(was_training)
    if feats is None:
        raise UserError("no images to extract features from")
    return feats, labels


class FeatureCache:
    """Frozen-backbone features kept across evaluations of one checkpoint.

    Features are stored per ``key`` (the caller's description of split, dataset identity,
    transform and precision) and per dataset index, so the 1 % subset, the 10 % subset, the kNN
    bank and the validation set of one checkpoint are each passed through the backbone once. The
    cache binds to the first checkpoint it serves and empties itself if given another.
    """

    def __init__(self) -> None:
        self._owner: int | None = None
        self._banks: dict[tuple, dict] = {}

    def bind(self, owner: object) -> None:
        if self._owner != id(owner):
            self._owner, self._banks = id(owner), {}

    def get(self, key: tuple, backbone: nn.Module, dataset, indices, transform, **kwargs):
        """Features and labels of ``dataset[indices]``, extracting only those not cached yet."""
        bank = self._banks.setdefault(key, {"pos": {}, "feats": None, "labels": None})
        indices = np.asarray(indices, dtype=np.int64)
        missing = np.array([i for i in indices.tolist() if i not in bank["pos"]], dtype=np.int64)
        if missing.size:
            f, y = extract_features(backbone, dataset, missing, transform, **kwargs)
            offset = 0 if bank["feats"] is None else len(bank["feats"])
            bank["feats"] = f if bank["feats"] is None else torch.cat([bank["feats"], f])
            bank["labels"] = y if bank["labels"] is None else torch.cat([bank["labels"], y])
            bank["pos"].update({int(i): offset + r for r, i in enumerate(missing.tolist())})
        rows = torch.as_tensor([bank["pos"][int(i)] for i in indices.tolist()], dtype=torch.long)
        return bank["feats"][rows], bank["labels"][rows]
