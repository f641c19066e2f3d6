"""From dataset items to the training views on the device: the seam between the data loader and
the training step.

A :class:`ViewPipeline` names how a method's training views are made and owns the three pieces
the training loop wires together:

- :meth:`ViewPipeline.dataset`: the map-style dataset the loader's workers read, item
  ``(epoch, index)`` → what the worker hands over, made with the random generators seeded from
  ``(seed, epoch, index)`` (:class:`SeededViews`), so a run is repeatable for any number of
  workers and across a resume;
- :meth:`ViewPipeline.collate`: the worker's items → one :class:`Batch`;
- :meth:`ViewPipeline.to_device`: a :class:`Batch` → the float views the method's forward pass
  takes, on the training device.

``augment="cpu"`` is the official per-image pipeline (:mod:`e2mc_cli.data.augment`): workers
hand over finished float views and :meth:`~ViewPipeline.to_device` only moves them.

``augment="split"`` (:data:`DEFAULT_AUGMENT`) splits it: workers decode and crop
(:mod:`e2mc_cli.data.split`) and hand over uint8 crops with each view's photometric parameters,
drawn from the same seeded generator in the official sequence; :meth:`~ViewPipeline.to_device`
moves them and applies the batched photometric stage (:mod:`e2mc_cli.data.device_stage`) on the
device. ``decode="device"`` (split only) leaves the JPEG decoding to the device too
(:mod:`e2mc_cli.data.decode`), falling back to the workers with one note where it cannot.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from e2mc_cli.data.decode import EncodedImages, dataset_unsupported, decode_views, device_unsupported
from e2mc_cli.data.device_stage import PhotometricStage
from e2mc_cli.data.split import Encoded, SplitViews
from e2mc_cli.data.views import ViewRecipe
from e2mc_cli.errors import UserError, unknown_choice

AUGMENT_MODES = ("cpu", "split")
DEFAULT_AUGMENT = "split"
DECODE_MODES = ("cpu", "device")


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one item, mixed by numpy's SeedSequence."""
    entropy = [int(seed) & 0xFFFFFFFF, int(epoch), int(index)]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


@contextmanager
def seeded(seed: int):
    """Run a block with torch's CPU generator, numpy's and Python's seeded; restore them after.

    Only the CPU generator is seeded (``torch.manual_seed`` would also queue the seeding of CUDA
    generators, with a stack trace each time, in a process without CUDA)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class SeededViews(Dataset):
    """``dataset[(epoch, index)]`` → ``(views, index, substituted)`` with seeded augmentations.

    ``views`` is what ``transform(image)`` returns. An image that fails to load (a file damaged
    after the dataset was listed) is replaced by the next readable index; ``substituted`` is the
    failing index or -1, so the loop can count it.
    """

    def __init__(self, dataset: Dataset, transform: Callable, seed: int, max_tries: int = 16):
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.max_tries = max_tries

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        failed = -1
        n = len(self.dataset)
        for attempt in range(self.max_tries):
            i = (index + attempt) % n
            try:
                image, _ = self.dataset[i]
            except (OSError, ValueError, SyntaxError, UserError):
                if failed < 0:
                    failed = i
                continue
            with seeded(item_seed(self.seed, epoch, index)):
                views = self.transform(image)
            return views, index, failed
        raise UserError(f"{self.max_tries} images in a row from index {index} are unreadable")


@dataclass
class Batch:
    """One loader batch: ``views`` (one ``B × …`` tensor per view: finished float views, or the
    split pipeline's ``B × H × W × 3`` uint8 crops), ``params`` (per view, the ``B × P``
    parameters a device stage still has to apply; empty when the views are finished), the items'
    ``indices`` and the ``failed`` (substituted) ones. When the device decodes, ``views`` is
    empty and ``encoded`` holds each item's file bytes (or decoded image), ``boxes`` the
    ``B × V × 4`` crop boxes."""

    views: list[torch.Tensor]
    indices: torch.Tensor
    failed: list[int]
    params: list[torch.Tensor] = field(default_factory=list)
    encoded: list[torch.Tensor] = field(default_factory=list)
    boxes: torch.Tensor | None = None

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (the DataLoader calls this with ``pin_memory=True``)."""
        return Batch(
            [v.pin_memory() for v in self.views],
            self.indices.pin_memory(),
            self.failed,
            [p.pin_memory() for p in self.params],
            [e.pin_memory() for e in self.encoded],
            self.boxes,
        )


def collate_views(items) -> Batch:
    """Stack each view over the batch; keep the indices and the substituted (failed) ones."""
    n_views = len(items[0][0])
    views = [torch.stack([it[0][v] for it in items]) for v in range(n_views)]
    indices = torch.tensor([it[1] for it in items], dtype=torch.long)
    failed = [it[2] for it in items if it[2] >= 0]
    return Batch(views, indices, failed)


def collate_split(items) -> Batch:
    """The split pipeline's items (:class:`~e2mc_cli.data.split.Crops` or, when the device
    decodes, :class:`~e2mc_cli.data.split.Encoded`) → one :class:`Batch`."""
    indices = torch.tensor([it[1] for it in items], dtype=torch.long)
    failed = [it[2] for it in items if it[2] >= 0]
    parts = [it[0] for it in items]
    params = torch.stack([p.params for p in parts])
    per_view = list(params.unbind(1))
    if isinstance(parts[0], Encoded):
        boxes = torch.stack([p.boxes for p in parts])
        return Batch([], indices, failed, per_view, [p.payload for p in parts], boxes)
    views = [_stack_uint8([p.views[v] for p in parts]) for v in range(len(parts[0].views))]
    return Batch(views, indices, failed, per_view)


def _stack_uint8(arrays: list[np.ndarray]) -> torch.Tensor:
    """The crops stacked into one uint8 tensor by torch's default collate (in a loader worker it
    stacks straight into shared memory, so the batch is not copied again to leave the worker)."""
    with warnings.catch_warnings():  # PIL's arrays are read-only; the stack only reads them
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return default_collate([torch.from_numpy(a) for a in arrays])


class ViewPipeline:
    """How a method's training views are made (see the module docstring); built by
    :func:`e2mc_cli.methods.view_pipeline` from the method's view recipes.

    ``transform`` is the official per-image pipeline (``image -> views``,
    :class:`~e2mc_cli.data.augment.MultiView`); ``recipes`` the views' recipes (default: the
    transform's). ``augment``: :data:`AUGMENT_MODES`; ``decode``: :data:`DECODE_MODES`, where
    ``"device"`` decodes JPEG batches on ``device`` (the training device; ``None``: wherever
    :meth:`to_device` sends the batch, torchvision's CPU decoder on the CPU) and falls back to
    the workers, with :attr:`note` saying why, where that cannot be done.
    """

    def __init__(
        self,
        transform: Callable,
        augment: str = "cpu",
        *,
        recipes: Sequence[ViewRecipe] | None = None,
        decode: str = "cpu",
        device: torch.device | str | None = None,
    ):
        if augment not in AUGMENT_MODES:
            raise unknown_choice("--augment", augment, AUGMENT_MODES)
        if decode not in DECODE_MODES:
            raise unknown_choice("--decode", decode, DECODE_MODES)
        self.transform, self.augment, self.decode = transform, augment, decode
        self.device = None if device is None else torch.device(device)
        self.recipes = list(recipes) if recipes is not None else getattr(transform, "recipes", None)
        self.note = ""  # why the device does not decode, when it was asked to
        self.decoding = False  # whether the last dataset() hands the device encoded files
        if augment == "split":
            if not self.recipes:
                raise ValueError("the split pipeline needs the views' recipes")
            self.worker = SplitViews(self.recipes)
            self.stage = PhotometricStage(self.recipes)
        if decode == "device":
            reason = "--decode device needs --augment split" if augment != "split" else None
            self.note = reason or device_unsupported(self.device) or ""

    def dataset(self, base: Dataset, seed: int) -> SeededViews:
        """The loader's dataset: item ``(epoch, index)`` of ``base`` with seeded views (or, when
        the device decodes, seeded crop boxes and parameters with the file's bytes)."""
        if self.augment == "cpu":
            return SeededViews(base, self.transform, seed)
        if self.decode == "device" and not self.note:
            self.note = dataset_unsupported(base) or ""
        self.decoding = self.decode == "device" and not self.note
        return SeededViews(EncodedImages(base) if self.decoding else base, self.worker, seed)

    def collate(self, items) -> Batch:
        return collate_views(items) if self.augment == "cpu" else collate_split(items)

    def to_device(self, batch: Batch, device: torch.device) -> list[torch.Tensor]:
        """The float views of ``batch`` on ``device``: copied without blocking, and for the split
        pipeline decoded (when the device decodes) and finished by the photometric stage."""
        if not batch.params:
            return [v.to(device, non_blocking=True) for v in batch.views]
        if batch.encoded:
            crops = decode_views(batch.encoded, batch.boxes, batch.params, self.recipes, device)
        else:
            crops = [v.to(device, non_blocking=True) for v in batch.views]
        return self.stage(crops, batch.params)

    def describe(self) -> str:
        """One line for the start-up display: where each part of the views is made (and the note
        of a device decode that falls back)."""
        photometric = "colour jitter, grayscale, blur, solarisation and normalisation batched on the device"
        if self.augment == "cpu":
            line = "the official per-image pipeline on the loader's workers (--augment cpu)"
        elif self.decode == "device" and not self.note:
            line = (
                "crop parameters on the loader's workers; JPEG decode, crops, flips, "
                f"{photometric} (--augment split --decode device)"
            )
        else:
            line = (
                "decode, crops and flips on the loader's workers (uint8); "
                f"{photometric} (--augment split)"
            )
        return f"{line}; note: {self.note}" if self.note else line
