"""What every method module shares: its output record and the training-loop hooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from e2mc_cli.models import SSLModel


class MethodOutput(NamedTuple):
    """One forward pass of a method on a batch of views.

    - ``loss``: the base method's loss (scalar tensor, with gradients).
    - ``terms``: detached 0-dim tensors for logging (``float(v)`` when writing them out; kept as
      tensors so that logging does not force a device synchronisation every step).
    - ``embeddings``: the two full-resolution views' embeddings an add-on criterion sees
      (with gradients).
    - ``space``: ``"hypercube"`` or ``"hypersphere"`` — how the method treats its embeddings,
      which decides the criterion's squashing map Ψ.
    - ``all_embeddings``: every crop's embedding, full-resolution views first (for criteria whose
      ``views`` is ``"all"``); equal to ``embeddings`` for two-view methods.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    embeddings: list[torch.Tensor]
    space: str
    all_embeddings: list[torch.Tensor]


class Method(nn.Module):
    """A self-supervised method around an :class:`~e2mc_cli.models.SSLModel`.

    ``forward(images)`` takes the list of views produced by the method's view transform (each a
    batch ``B × 3 × H × W``, full-resolution views first) and returns a :class:`MethodOutput`.
    The training loop calls ``on_train_start(total_steps, steps_per_epoch)`` once, after a
    resumed state was restored and before the first step (schedules of momentum or temperature
    over the run); ``on_step_start(step, epoch)`` before the forward pass of every optimiser step,
    ``on_after_backward(step)`` between ``backward()`` and ``optimizer.step()``, and
    ``on_after_step(step)`` after ``optimizer.step()`` (an EMA teacher's update). ``step`` is the
    global optimiser-step index (0-based), ``epoch`` the 0-based epoch; ``total_steps`` counts the
    recipe's epochs (a ``--max-steps`` cut does not change the schedule).

    ``global_batchnorm``: whether, under DistributedDataParallel, every BatchNorm normalises over
    the global batch (``SyncBatchNorm``, as the official VICReg, SwAV and SimSiam code), or over
    each process's own batch (``False``: MoCo's per-GPU batch norm, which it shuffles itself).
    """

    name: ClassVar[str]
    space: ClassVar[str]
    global_batchnorm: ClassVar[bool] = True

    def __init__(self, model: SSLModel):
        super().__init__()
        if model.method != self.name:
            raise ValueError(f"{type(self).__name__} needs a {self.name!r} model, got {model.method!r}")
        self.model = model

    def on_train_start(self, total_steps: int, steps_per_epoch: int) -> None:
        """Hook run once before the first step of an invocation (no-op by default)."""

    def on_step_start(self, step: int, epoch: int) -> None:
        """Hook run before each step's forward pass (no-op by default)."""

    def on_after_backward(self, step: int) -> None:
        """Hook run after ``backward()``, before ``optimizer.step()`` (no-op by default)."""

    def on_after_step(self, step: int) -> None:
        """Hook run after ``optimizer.step()`` of step ``step`` (no-op by default)."""

    def param_groups(self) -> list[dict]:
        """Optimiser parameter groups: ``{"name", "params", "fix_lr"}``.

        ``fix_lr=True`` marks a group whose learning rate the schedule must leave at its
        initial value (SimSiam's predictor). Parameters with ``requires_grad=False`` are left out.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"name": "model", "params": params, "fix_lr": False}]

    def forward(self, images: list[torch.Tensor]) -> MethodOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def check_views(images: list[torch.Tensor], expected: int | None, method: str) -> None:
    """Raise ``ValueError`` unless ``images`` is a list of ``expected`` equally-sized batches."""
    if not isinstance(images, (list, tuple)) or len(images) < 2:
        raise ValueError(f"{method} needs a list of at least 2 view batches")
    if expected is not None and len(images) != expected:
        raise ValueError(f"{method} expects {expected} views, got {len(images)}")
    bs = images[0].shape[0]
    if any(v.shape[0] != bs for v in images):
        raise ValueError(f"{method}: every view batch must hold the same number of images")


def resolution_groups(images: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of consecutive crops sharing one resolution."""
    groups, start = [], 0
    for i in range(1, len(images) + 1):
        if i == len(images) or images[i].shape[-2:] != images[start].shape[-2:]:
            groups.append((start, i))
            start = i
    return groups
