"""Deterministic data for training: the order of images and every random crop depend only on
(seed, epoch, index), never on the number of loader workers, the number of processes or on
where a run was stopped and resumed.

- :class:`EpochBatches` gives the global batches of one epoch: a permutation of the dataset drawn
  from ``seed + epoch``, cut into ``len(dataset) // global_batch`` batches (the incomplete last
  one is dropped, as SwAV's loader). Process ``r`` of ``w`` takes the ``r``-th contiguous slice of
  each global batch, so the all-gathered batch equals the single-process batch in the same order.
  Resuming at batch ``k`` slices the index list; nothing already consumed is loaded again.
- :class:`SeededViews` applies the method's view transform to item ``index`` of ``epoch`` with
  the random generators (torch, numpy, Python) seeded from ``(seed, epoch, index)`` and restored
  afterwards. Items are requested as ``(epoch, index)`` pairs.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from e2mc_cli.errors import UserError


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
    """``dataset[index]`` → ``(views, index, substituted)`` with seeded augmentations.

    An image that fails to load (a file damaged after the dataset was listed) is replaced by the
    next readable index; ``substituted`` is the failing index or -1, so the loop can count it.
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


def collate_views(items):
    """Stack each view over the batch; keep the indices and the substituted (failed) ones."""
    n_views = len(items[0][0])
    views = [torch.stack([it[0][v] for it in items]) for v in range(n_views)]
    indices = torch.tensor([it[1] for it in items], dtype=torch.long)
    failed = [it[2] for it in items if it[2] >= 0]
    return views, indices, failed


class EpochBatches(Sampler):
    """Batches of ``(epoch, index)`` pairs for one process, from batch ``start`` of ``epoch`` on."""

    def __init__(
        self,
        n_items: int,
        global_batch: int,
        seed: int,
        epoch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ):
        if global_batch % world_size:
            raise UserError(f"batch size {global_batch} is not divisible by the {world_size} processes")
        self.n_items, self.global_batch = n_items, global_batch
        self.seed, self.epoch = seed, epoch
        self.rank, self.world_size = rank, world_size
        self.start = start

    @staticmethod
    def steps_per_epoch(n_items: int, global_batch: int) -> int:
        return n_items // global_batch

    def __len__(self) -> int:
        return max(self.steps_per_epoch(self.n_items, self.global_batch) - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator()
        g.manual_seed(int(self.seed) * 1_000_003 + int(self.epoch))
        perm = torch.randperm(self.n_items, generator=g).tolist()
        local = self.global_batch // self.world_size
        for step in range(self.start, self.steps_per_epoch(self.n_items, self.global_batch)):
            lo = step * self.global_batch + self.rank * local
            yield [(self.epoch, i) for i in perm[lo : lo + local]]


def default_workers(cap: int = 4) -> int:
    """Data-loading processes for this machine: its usable CPU cores, at most ``cap``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cap, cores))
