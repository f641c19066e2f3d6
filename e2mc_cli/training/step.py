"""One optimiser step of continued pre-training.

The method's views of a global batch (each process its contiguous slice), ``out = method(views)``
(under the run's ``--precision`` autocast, :mod:`e2mc_cli.precision`; channels_last on CUDA), the
criterion on ``out.embeddings`` (criteria with ``views = "all"``: ``out.all_embeddings``) —
criteria all-gather across processes themselves — ``loss = out.loss + criterion_out.loss``, a
finiteness check of every term, ``backward``, the method's ``on_after_backward`` hook, the
optimiser step. In ``fp16`` a gradient scaler scales the loss before ``backward`` and unscales the
gradients before the hook (which sees true gradients), then steps the optimiser unless a gradient
overflowed (as ``torch.amp.GradScaler`` does), and adapts its scale. The learning rate follows the
recipe's schedule per step. A non-finite loss raises :class:`NonFiniteLoss` before the step changes
anything.

:func:`forward_step`, :func:`collect_terms` and :func:`backward_step` are also the pieces
``sslboost bench train`` times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from e2mc_cli.precision import autocast, resolve_precision
from e2mc_cli.training.optim import apply_lr, lr_factor
from e2mc_cli.training.plan import RunPlan
from e2mc_cli.training.state import NonFiniteLoss, TrainState


@dataclass(frozen=True)
class StepRecord:
    """What one step leaves for the loop: the loss terms, the learning rate it used, and the
    embeddings of the views (detached, on the device) for the health monitor."""

    terms: dict[str, float]  # every term, prefixed by its source; means over processes under DDP
    lr: float
    embeddings: tuple[torch.Tensor, ...]


def forward_step(
    module, criterion, views: list[torch.Tensor], device: torch.device, precision: str | None = None
):
    """Views to ``(loss, method_out, criterion_out)`` under the autocast of ``precision`` (``None``:
    bf16 on CUDA, fp32 elsewhere), channels_last on CUDA.

    ``module`` is the method (or its DistributedDataParallel wrapper); the criterion gets
    ``out.all_embeddings`` when its ``views`` is ``"all"``, else ``out.embeddings`` (float32: the
    heads' last layers compute in float32, :class:`~e2mc_cli.models.heads.Fp32Linear`).
    """
    precision = precision or resolve_precision(None, "bf16", device)
    views = [v.to(device, non_blocking=True) for v in views]
    if device.type == "cuda":
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    with autocast(device, precision):
        out = module(views)
        feed = out.all_embeddings if criterion.views == "all" else out.embeddings
        cout = criterion(list(feed))
    return out.loss.float() + cout.loss.float(), out, cout


def collect_terms(method_name: str, criterion_name: str, loss, out, cout) -> dict[str, float]:
    """Every loss term as a float, prefixed by its source, read from the device in one transfer."""
    tensors = {
        "loss": loss.detach(),
        f"{method_name}.loss": out.loss.detach().float(),
        **{f"{method_name}.{k}": torch.as_tensor(v).detach().float() for k, v in out.terms.items()},
        f"{criterion_name}.loss": cout.loss.detach().float(),
    }
    values = torch.stack([t.to(loss.device).reshape(()) for t in tensors.values()]).tolist()
    terms = dict(zip(tensors, values))
    terms.update({f"{criterion_name}.{k}": float(v) for k, v in cout.terms.items()})
    return terms


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


def agree_on_terms(
    terms: dict[str, float], world: int, device: torch.device
) -> tuple[bool, dict[str, float]]:
    """``(any process's loss is non-finite, the terms' means over processes)``: one all-reduce
    under DDP (the global batch's values for mean-type losses); the terms as they are otherwise."""
    nonfinite = not math.isfinite(terms["loss"])
    if world > 1:
        vec = torch.tensor([float(nonfinite), *terms.values()], dtype=torch.float64, device=device)
        dist.all_reduce(vec)
        nonfinite = bool(vec[0] > 0)
        terms = dict(zip(terms, (vec[1:] / world).tolist()))
    return nonfinite, terms


def _bad_terms(terms: dict[str, float]) -> list[str]:
    return [f"{k} = {v}" for k, v in terms.items() if not math.isfinite(v)]


def nonfinite_message(terms: dict[str, float], step: int, epoch: int) -> str:
    """``non-finite loss at step S (epoch E): <the non-finite terms>; …`` (1-based step and epoch)."""
    bad = _bad_terms({k: v for k, v in terms.items() if k != "loss"}) or _bad_terms(terms)
    if not bad:
        bad = ["the loss on another process"]
    return (
        f"non-finite loss at step {step} (epoch {epoch}): {', '.join(bad)}; "
        "stopped without applying this step"
    )


def train_step(state: TrainState, plan: RunPlan, views: list[torch.Tensor], epoch: int) -> StepRecord:
    """One optimiser step of ``state`` (``state.step`` counts it). Raises :class:`NonFiniteLoss`."""
    factor = lr_factor(state.step, plan.total_steps, plan.warmup_steps, plan.schedule, plan.final_lr_ratio)
    lr = apply_lr(state.optimizer, factor)
    state.method.on_step_start(state.step, epoch)
    loss, out, cout = forward_step(state.module, state.criterion, views, plan.device, plan.precision)
    terms = collect_terms(plan.method_name, plan.criterion_name, loss, out, cout)
    nonfinite, terms = agree_on_terms(terms, plan.world, plan.device)
    if nonfinite:
        raise NonFiniteLoss(nonfinite_message(terms, state.step + 1, epoch + 1))
    backward_step(state.method, state.optimizer, loss, state.step, state.scaler)
    state.step += 1
    return StepRecord(terms, lr, tuple(e.detach() for e in out.embeddings))
