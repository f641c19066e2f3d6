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
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from e2mc_cli.errors import UserError, unknown_choice

AUGMENT_MODES = ("cpu",)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one item, mixed by numpy's SeedSequence."""
    entropy = [int(seed) & 0xFFFFFFFF, int(epoch), int(index)]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


@contextmanager
def seeded(seed: int):
    """Run a block with torch's CPU generator, numpy's and Python's seeded; restore them after."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
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
    """One loader batch: ``views`` (one ``B × …`` tensor per view), ``params`` (per view, the
    parameters a device stage still has to apply; empty when the views are finished), the items'
    ``indices`` and the ``failed`` (substituted) ones."""

    views: list[torch.Tensor]
    indices: torch.Tensor
    failed: list[int]
    params: list[torch.Tensor] = field(default_factory=list)

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (the DataLoader calls this with ``pin_memory=True``)."""
        return Batch(
            [v.pin_memory() for v in self.views],
            self.indices.pin_memory(),
            self.failed,
            [p.pin_memory() for p in self.params],
        )


def collate_views(items) -> Batch:
    """Stack each view over the batch; keep the indices and the substituted (failed) ones."""
    n_views = len(items[0][0])
    views = [torch.stack([it[0][v] for it in items]) for v in range(n_views)]
    indices = torch.tensor([it[1] for it in items], dtype=torch.long)
    failed = [it[2] for it in items if it[2] >= 0]
    return Batch(views, indices, failed)


class ViewPipeline:
    """How a method's training views are made (see the module docstring); built by
    :func:`e2mc_cli.methods.view_pipeline` from the method's view recipe.

    ``transform`` is the per-image part the workers run (``image -> views``).
    """

    def __init__(self, transform: Callable, augment: str = "cpu"):
        if augment not in AUGMENT_MODES:
            raise unknown_choice("--augment", augment, AUGMENT_MODES)
        self.transform, self.augment = transform, augment

    def dataset(self, base: Dataset, seed: int) -> SeededViews:
        """The loader's dataset: item ``(epoch, index)`` of ``base`` with seeded views."""
        return SeededViews(base, self.transform, seed)

    def collate(self, items) -> Batch:
        return collate_views(items)

    def to_device(self, batch: Batch, device: torch.device) -> list[torch.Tensor]:
        """The finished float views of ``batch`` on ``device`` (copied without blocking)."""
        return [v.to(device, non_blocking=True) for v in batch.views]

    def describe(self) -> str:
        """One line for the start-up display: where each part of the views is made."""
        return "official per-image views on the loader's workers (--augment cpu)"
