"""Deterministic data for training: the order of images and every random crop depend only on
(seed, epoch, index), never on the number of loader workers, the number of processes or on
where a run was stopped and resumed.

- :func:`epoch_order` is the permutation of the dataset for one epoch, drawn from ``seed`` and
  ``epoch``; an epoch is ``len(dataset) // global_batch`` global batches of it (the incomplete
  last one is dropped, as SwAV's loader).
- :class:`StepBatches` gives the batches of global steps ``[start, end)`` of a run, across epoch
  boundaries, so one loader (and one set of workers) serves the whole run. Process ``r`` of ``w``
  takes the ``r``-th contiguous slice of each global batch, so the all-gathered batch equals the
  single-process batch in the same order. Resuming at step ``k`` starts the sampler there; nothing
  already consumed is loaded again. :class:`EpochBatches` is the special case of one epoch.
- The items of each batch, ``(epoch, index)`` pairs, become views through the method's
  :class:`~e2mc_cli.data.pipeline.ViewPipeline`, seeded from ``(seed, epoch, index)``.
- :func:`run_loader` is the run's one :class:`~torch.utils.data.DataLoader`; :func:`default_workers`
  and :func:`prefetch_batches` are its defaults on a training node (:func:`loader_settings` says
  what was chosen).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from e2mc_cli import distributed as D
from e2mc_cli.data import pipeline as P
from e2mc_cli.errors import UserError
from e2mc_cli.stop_signals import leave_stop_signals_to_the_main_process

# The pipeline a run uses when --augment is not given, and the modes there are: the view
# pipeline's own (e2mc_cli.data.pipeline decides them), named here for the training code.
DEFAULT_AUGMENT: str = P.DEFAULT_AUGMENT
AUGMENT_MODES: tuple[str, ...] = tuple(P.AUGMENT_MODES)

BATCHES_IN_FLIGHT = 4  # batches prepared ahead of the step, over all workers, at least


def epoch_order(n_items: int, seed: int, epoch: int) -> list[int]:
    """The permutation of ``range(n_items)`` that epoch ``epoch`` of a run seeded ``seed`` visits."""
    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n_items, generator=g).tolist()


def steps_per_epoch(n_items: int, global_batch: int) -> int:
    """Global batches in one epoch (the incomplete last one is dropped)."""
    return n_items // global_batch


class StepBatches(Sampler):
    """Batches of ``(epoch, index)`` pairs for one process, for global steps ``[start, end)``.

    Step ``s`` is batch ``s mod E`` of epoch ``s // E`` (``E`` = :func:`steps_per_epoch`); the
    permutation of an epoch is drawn once, when its first batch is asked for.
    """

    def __init__(
        self,
        n_items: int,
        global_batch: int,
        seed: int,
        start: int,
        end: int,
        *,
        rank: int = 0,
        world_size: int = 1,
    ):
        if global_batch % world_size:
            raise UserError(f"batch size {global_batch} is not divisible by the {world_size} processes")
        if steps_per_epoch(n_items, global_batch) == 0:
            raise UserError(f"{n_items} images are fewer than one batch of {global_batch}")
        self.n_items, self.global_batch, self.seed = n_items, global_batch, seed
        self.start, self.end = start, max(end, start)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = steps_per_epoch(self.n_items, self.global_batch)
        local = self.global_batch // self.world_size
        order_of, order = -1, []
        for step in range(self.start, self.end):
            epoch, pos = divmod(step, per_epoch)
            if epoch != order_of:
                order_of, order = epoch, epoch_order(self.n_items, self.seed, epoch)
            lo = pos * self.global_batch + self.rank * local
            yield [(epoch, i) for i in order[lo : lo + local]]


class EpochBatches(StepBatches):
    """The batches of one epoch for one process, from batch ``start`` of ``epoch`` on."""

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
        first = epoch * steps_per_epoch(n_items, global_batch)
        end = first + steps_per_epoch(n_items, global_batch)
        super().__init__(
            n_items, global_batch, seed, min(first + start, end), end, rank=rank, world_size=world_size
        )


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers(cores: int | None = None, local_processes: int | None = None) -> int:
    """Data-loading workers per training process on this node: the usable cores shared by the node's
    training processes (``LOCAL_WORLD_SIZE`` under torchrun), one core of each share left to the
    process itself, at least 1."""
    cores = usable_cores() if cores is None else cores
    local_processes = D.local_world_size() if local_processes is None else local_processes
    return max(1, cores // max(local_processes, 1) - 1)


def prefetch_batches(workers: int) -> int | None:
    """Batches each worker prepares ahead (the loader's ``prefetch_factor``): two, PyTorch's
    default, and more for few workers so that at least :data:`BATCHES_IN_FLIGHT` are in flight;
    ``None`` without workers (the main process loads each batch when it is needed)."""
    if workers <= 0:
        return None
    return max(2, math.ceil(BATCHES_IN_FLIGHT / workers))


def loader_settings(workers: int, pin_memory: bool, augment: str) -> dict:
    """How a run's batches are loaded, as the start-up display and ``summary.json`` record it."""
    return {
        "workers": workers,
        "prefetch_factor": prefetch_batches(workers),
        "pin_memory": pin_memory,
        "augment": augment,
    }


def make_loader(
    dataset: Dataset,
    sampler: Sampler,
    pipeline: P.ViewPipeline,
    workers: int,
    *,
    pin_memory: bool,
    seed: int,
    persistent: bool = False,
) -> DataLoader:
    """A loader of :class:`~e2mc_cli.data.pipeline.Batch`\\ es of ``dataset`` with the views of a run
    seeded ``seed``: ``workers`` processes (keeping them between passes when ``persistent``, for a
    loader iterated more than once), page-locked batches when ``pin_memory`` (a CUDA device),
    :func:`prefetch_batches` ahead."""
    return DataLoader(
        pipeline.dataset(dataset, seed),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=pipeline.collate,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_batches(workers),
        persistent_workers=persistent and workers > 0,
        worker_init_fn=leave_stop_signals_to_the_main_process,  # the run stops them
        # its own generator: creating a loader must not draw from the global torch RNG
        generator=torch.Generator().manual_seed(int(seed)),
    )


def run_loader(plan, start: int, end: int) -> DataLoader:
    """This process's batches of steps ``[start, end)`` of the run ``plan``
    (a :class:`~e2mc_cli.training.plan.RunPlan`), one pass, all epochs."""
    sampler = StepBatches(
        len(plan.dataset), plan.batch_size, plan.seed, start, end, rank=plan.rank, world_size=plan.world
    )
    pipeline, workers = plan.pipeline, plan.workers
    return make_loader(plan.dataset, sampler, pipeline, workers, pin_memory=plan.cuda, seed=plan.seed)
