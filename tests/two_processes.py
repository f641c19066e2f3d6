"""Two CPU processes joined by a gloo group: what a run computes under DDP, checked in tests
against the same computation in one process."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def on_two_processes(body: Callable[[int], object], tmp_path: Path) -> list:
    """``[body(0), body(1)]``, each called with its rank in a forked process of its own (one
    thread, in a gloo process group of two); the results come back through files in ``tmp_path``.
    ``body`` may be a closure: the processes are forked, nothing is pickled on the way in."""
    init_file, out_file = str(tmp_path / "gloo-init"), str(tmp_path / "rank-result")
    args = (body, init_file, out_file)
    mp.start_processes(_run_rank, args=args, nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(f"{out_file}.{rank}") for rank in range(WORLD)]


def _run_rank(rank: int, body: Callable[[int], object], init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=60)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timeout
    )
    try:
        torch.save(body(rank), f"{out_file}.{rank}")
        dist.barrier()  # both ranks finish before either tears the group down (gloo aborts)
    finally:
        dist.destroy_process_group()
