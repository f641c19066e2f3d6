"""Helpers for code that must give the same numbers on 1 process × n samples and k processes × n/k."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every process along dim 0, keeping gradients to every shard.

    Without an initialised process group this is the identity. Every process then computes the
    same loss on the whole batch; the backward pass sums the incoming gradients across
    processes, so a shard's gradient is ``world_size`` times the single-process one, and
    DistributedDataParallel's averaging of parameter gradients over processes gives exactly the
    single-process parameter gradient.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)
