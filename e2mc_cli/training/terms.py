"""The loss terms of a step, kept on the device and read by the host one step late.

A step's terms (the total, the method's and the criterion's) go into one vector on the training
device, headed by a non-finite flag of the total loss (:func:`term_vector`); under DDP one
all-reduce of that vector gives every process the flag of any process and the terms' means over
processes (:func:`agree_on_terms`). :class:`LateRead` starts the copy of the vector to the host
without waiting for it (a non-blocking copy into page-locked memory on CUDA, with an event marking
its completion); the training loop reads it once the next step is queued
(:func:`read_terms`), so the host never stops the device's queue to look at a loss. On the CPU the
values are simply there.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


def _scalar(value, like: torch.Tensor) -> torch.Tensor:
    """``value`` (a tensor or a number) as a float32 0-d tensor on ``like``'s device, without a
    host synchronisation (a number is filled in on the device, never copied from the host)."""
    if torch.is_tensor(value):
        return value.detach().float().reshape(()).to(like.device, non_blocking=True)
    return like.new_full((), float(value), dtype=torch.float32)


def term_vector(
    method_name: str, criterion_name: str, loss: torch.Tensor, out, cout
) -> tuple[tuple[str, ...], torch.Tensor]:
    """``(names, vector)``: every loss term of a step, prefixed by its source (``loss``,
    ``<method>.loss``, ``<method>.<term>``…, ``<criterion>.loss``, ``<criterion>.<term>``…), and one
    float32 vector on the loss's device: ``[loss non-finite (1.0) or not (0.0), *terms]``."""
    terms = {
        "loss": loss,
        f"{method_name}.loss": out.loss,
        **{f"{method_name}.{k}": v for k, v in out.terms.items()},
        f"{criterion_name}.loss": cout.loss,
        **{f"{criterion_name}.{k}": v for k, v in cout.terms.items()},
    }
    total = loss.detach().float().reshape(())
    values = [(~torch.isfinite(total)).float(), *(_scalar(v, total) for v in terms.values())]
    return tuple(terms), torch.stack(values)


def agree_on_terms(vector: torch.Tensor, world: int) -> torch.Tensor:
    """Under DDP (``world`` > 1), one all-reduce of a :func:`term_vector` (in float64): the flag is
    then the number of processes whose loss is non-finite and the terms their means over processes
    (the global batch's values for mean-type losses); the vector as it is otherwise. Stays on the
    device; every process must call it at the same step."""
    if world <= 1:
        return vector
    vector = vector.double()
    dist.all_reduce(vector)
    return torch.cat([vector[:1], vector[1:] / world])


class LateRead:
    """A device vector on its way to the host.

    On CUDA the copy into page-locked host memory is queued on the current stream behind the work
    that computes the vector, and a CUDA event is recorded after it; :meth:`values` waits for that
    event only (by then the device has usually finished it, while the next step runs). Elsewhere
    the vector is read when asked for (on the CPU its values are already there).
    """

    def __init__(self, vector: torch.Tensor):
        vector = vector.detach()
        self.event = None
        if vector.device.type == "cuda":
            self.host = torch.empty(vector.shape, dtype=vector.dtype, pin_memory=True)
            self.host.copy_(vector, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = vector

    def ready(self) -> bool:
        """Whether :meth:`values` would return without waiting for the device."""
        return self.event is None or self.event.query()

    def values(self) -> list[float]:
        """The vector's values (waiting for the copy to finish if need be)."""
        if self.event is not None:
            self.event.synchronize()
        return self.host.tolist()


def read_terms(names: tuple[str, ...], values: list[float]) -> tuple[bool, dict[str, float]]:
    """``(any process's loss was non-finite, the terms by name)`` from the values of an (agreed)
    :func:`term_vector`."""
    return values[0] > 0, dict(zip(names, values[1:], strict=True))


def _bad_terms(terms: dict[str, float]) -> list[str]:
    return [f"{k} = {v}" for k, v in terms.items() if not math.isfinite(v)]


def nonfinite_message(terms: dict[str, float], step: int, epoch: int) -> str:
    """``non-finite loss at step S (epoch E): <the non-finite terms>; …`` (1-based step and epoch):
    the terms that went bad (the total only when no part of it did)."""
    bad = _bad_terms({k: v for k, v in terms.items() if k != "loss"}) or _bad_terms(terms)
    if not bad:
        bad = ["the loss on another process"]
    return (
        f"non-finite loss at step {step} (epoch {epoch}): {', '.join(bad)}; "
        "stopped, and nothing from this step on is saved"
    )
