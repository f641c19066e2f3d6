"""Process-group helpers: joining the group torchrun describes, this process's device, and code that
must give the same numbers on 1 process × n samples and k processes × n/k."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from e2mc_cli.errors import PeerFault, UserError

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def local_world_size() -> int:
    """The training processes on this node (torchrun's ``LOCAL_WORLD_SIZE``; 1 without torchrun)."""
    try:
        return max(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    except ValueError:
        return 1


def pick_device(device: str) -> torch.device:
    """``--device auto|cpu|cuda|cuda:N`` as this process's device.

    Under torchrun (``WORLD_SIZE`` > 1) each process uses GPU ``LOCAL_RANK``; in a single process
    ``cuda:N`` is GPU ``N`` and ``cuda`` GPU 0. The CUDA device is made current.
    """
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not want_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        index = int(os.environ.get("LOCAL_RANK", "0"))
    else:
        index = (torch.device(device).index or 0) if device.startswith("cuda") else 0
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def join_process_group(device: torch.device) -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): NCCL on GPU, gloo on CPU.

    Returns whether this call started the group (the caller then ends it with :func:`leave`).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device.index)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def leave(started: bool) -> None:
    """End the process group if :func:`join_process_group` started it."""
    if started and dist.is_initialized():
        dist.destroy_process_group()


def on_main_process(write: Callable[[], T]) -> T | None:
    """``write()`` on rank 0 (its result; ``None`` on the other processes).

    Under DDP every process calls it (a collective): rank 0 then tells the others whether its
    write raised. If it did, every process raises: rank 0 its own exception, the others the same
    fault rebuilt from plain values (an :class:`OSError` with the same errno, message and paths,
    a :class:`UserError` with the same message and exit code, ``KeyboardInterrupt`` for an
    interrupt, a :class:`PeerFault` for anything else). So every process stops at the same point
    with the same one line, and none is left waiting in the next collective for a process that
    has stopped.
    """
    if not is_distributed():
        return write()
    result, error, report = None, None, [None]
    if rank() == 0:
        try:
            result = write()
        except BaseException as exc:  # a second Ctrl-C inside a write too: re-raised below
            error, report = exc, [_fault_report(exc)]
    dist.broadcast_object_list(report, src=0)
    if report[0] is None:
        return result
    if error is not None:
        raise error
    raise _rebuilt(report[0])


def _fault_report(exc: BaseException) -> tuple:
    """What the other processes need to raise the same fault: plain values only."""
    if isinstance(exc, OSError):
        return ("os", exc.errno, exc.strerror, exc.filename, exc.filename2, str(exc))
    if isinstance(exc, UserError):
        return ("user", str(exc), getattr(exc, "exit_code", None))
    if isinstance(exc, KeyboardInterrupt):
        return ("interrupt",)
    return ("other", type(exc).__name__, str(exc))


def _rebuilt(report: tuple) -> BaseException:
    """The exception a process other than rank 0 raises for rank 0's :func:`_fault_report`."""
    kind = report[0]
    if kind == "os":
        _, errnum, strerror, filename, filename2, text = report
        if errnum is None:
            return OSError(f"rank 0: {text}")
        return OSError(errnum, strerror, filename, None, filename2)
    if kind == "user":
        error = UserError(report[1])
        if report[2] is not None:
            error.exit_code = report[2]
        return error
    if kind == "interrupt":
        return KeyboardInterrupt()
    return PeerFault(f"rank 0 failed while writing: {report[1]}: {report[2]}")


def barrier() -> None:
    """Wait for every process (nothing to wait for without a process group)."""
    if is_distributed():
        dist.barrier()


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """Every process's ``x`` concatenated along dim 0, in rank order, *without* gradients (MoCo's
    ``concat_all_gather``: ``torch.distributed.all_gather``); ``x`` itself (detached) without a
    process group. :func:`gather_with_grad` is the one whose shards keep their gradients."""
    x = x.detach()
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


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
