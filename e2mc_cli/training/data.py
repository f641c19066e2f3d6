"""Deterministic data for training: the order of images and every random crop depend only on
(seed, epoch, index), never on the number of loader workers, the number of processes or on
where a run was stopped and resumed.

- :class:`EpochBatches` gives the global batches of one epoch: a permutation of the dataset drawn
  from ``seed + epoch``, cut into ``len(dataset) // global_batch`` batches (the incomplete last
  one is dropped, as SwAV's loader). Process ``r`` of ``w`` takes the ``r``-th contiguous slice of
  each global batch, so the all-gathered batch equals the single-process batch in the same order.
  Resuming at batch ``k`` slices the index list; nothing already consumed is loaded again.
- The items of each batch, ``(epoch, index)`` pairs, become views through the method's
  :class:`~e2mc_cli.data.pipeline.ViewPipeline`, seeded from ``(seed, epoch, index)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from e2mc_cli.errors import UserError


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
