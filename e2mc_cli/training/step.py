"""One optimiser step of continued pre-training.

The method's views of a global batch (each process its contiguous slice), ``out = method(views)``
(under the run's ``--precision`` autocast, :mod:`e2mc_cli.precision`; in channels_last), the
criterion on ``out.embeddings`` (criteria with ``views = "all"``: ``out.all_embeddings``) —
criteria all-gather across processes themselves — ``loss = out.loss + criterion_out.loss``, every
term gathered into one device vector with a non-finite flag (:mod:`~e2mc_cli.training.terms`;
all-reduced under DDP) whose copy to the host starts without waiting, ``backward``, the method's
``on_after_backward`` hook, the optimiser step. In ``fp16`` a gradient scaler scales the loss
before ``backward`` and unscales the gradients before the hook (which sees true gradients), then
steps the optimiser unless a gradient overflowed (as ``torch.amp.GradScaler`` does), and adapts its
scale. The learning rate follows the recipe's schedule per step. Nothing here waits for the device
(beyond the fp16 scaler's own overflow check): the loop reads the terms one step later and stops
on a non-finite loss then (:class:`NonFiniteLoss`), before any checkpoint is written.

:func:`forward_step`, :func:`~e2mc_cli.training.terms.term_vector` and :func:`backward_step` are
also the pieces ``sslboost bench train`` times.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from e2mc_cli.models.memory_format import images_to
from e2mc_cli.precision import autocast, resolve_precision
from e2mc_cli.training.optim import apply_lr, lr_factor
from e2mc_cli.training.plan import RunPlan
from e2mc_cli.training.state import NonFiniteLoss, TrainState
from e2mc_cli.training.terms import LateRead, agree_on_terms, nonfinite_message, read_terms, term_vector

__all__ = [
    "NonFiniteLoss",
    "StepRecord",
    "agree_on_terms",
    "backward_step",
    "forward_step",
    "nonfinite_message",
    "term_vector",
    "train_step",
]


@dataclass(frozen=True)
class StepRecord:
    """What one step leaves for the loop: which step it was, the learning rate it used, its loss
    terms on their way to the host (read them with :meth:`read`), and the embeddings of the views
    (detached, on the device) for the health monitor."""

    step: int  # 1-based: the optimiser steps done after it
    epoch: int  # 0-based
    lr: float
    names: tuple[str, ...]  # every term, prefixed by its source (terms.term_vector)
    terms: LateRead  # [non-finite flag, *terms]; means over processes under DDP
    embeddings: tuple[torch.Tensor, ...]

    def read(self) -> tuple[bool, dict[str, float]]:
        """``(the loss was non-finite on some process, the terms by name)``; waits for the device
        only if it has not computed them yet."""
        return read_terms(self.names, self.terms.values())


def forward_step(
    module, criterion, views: list[torch.Tensor], device: torch.device, precision: str | None = None
):
    """Views to ``(loss, method_out, criterion_out)`` under the autocast of ``precision`` (``None``:
    bf16 on CUDA, fp32 elsewhere), in channels_last, as the model is
    (:func:`~e2mc_cli.training.state.build_state`).

    ``module`` is the method (or its DistributedDataParallel wrapper); the criterion gets
    ``out.all_embeddings`` when its ``views`` is ``"all"``, else ``out.embeddings`` (float32: the
    heads' last layers compute in float32, :class:`~e2mc_cli.models.heads.Fp32Linear`).
    """
    precision = precision or resolve_precision(None, "bf16", device)
    views = [images_to(v, device) for v in views]
    with autocast(device, precision):
        out = module(views)
        feed = out.all_embeddings if criterion.views == "all" else out.embeddings
        cout = criterion(list(feed))
    return out.loss.float() + cout.loss.float(), out, cout


def backward_step(method, optimizer, loss: torch.Tensor, step: int, scaler=None) -> None:
    """``backward``, the method's ``on_after_backward`` hook, the optimiser step; with a gradient
    ``scaler`` (``torch.amp.GradScaler``, fp16) the scaled loss's ``backward``, ``unscale_`` (the
    hook sees the true gradients), the hook, ``scaler.step`` (skipped when a gradient is not
    finite) and ``scaler.update``."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        method.on_after_backward(step)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    method.on_after_backward(step)
    scaler.step(optimizer)
    scaler.update()


def train_step(state: TrainState, plan: RunPlan, views: list[torch.Tensor], epoch: int) -> StepRecord:
    """Queue one optimiser step of ``state`` (``state.step`` counts it) and return its record, with
    its loss terms still on their way to the host (no host synchronisation)."""
    factor = lr_factor(state.step, plan.total_steps, plan.warmup_steps, plan.schedule, plan.final_lr_ratio)
    lr = apply_lr(state.optimizer, factor)
    state.method.on_step_start(state.step, epoch)
    loss, out, cout = forward_step(state.module, state.criterion, views, plan.device, plan.precision)
    names, vector = term_vector(plan.method_name, plan.criterion_name, loss, out, cout)
    terms = LateRead(agree_on_terms(vector, plan.world))
    backward_step(state.method, state.optimizer, loss, state.step, state.scaler)
    state.method.on_after_step(state.step)
    state.step += 1
    return StepRecord(state.step, epoch, lr, names, terms, tuple(e.detach() for e in out.embeddings))
