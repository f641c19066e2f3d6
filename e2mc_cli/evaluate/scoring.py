"""Scoring a classifier on the evaluation split, after each of its scored epochs.

The authors' evaluation scripts (``eval_linear.py`` and ``eval_semisup.py`` of the E2MC code, as
SwAV's ``eval_linear.py``, VICReg's ``evaluate.py`` and SimSiam's ``main_lincls.py``) validate the
classifier after every epoch and report the best top-1 seen, replacing it only when an epoch
beats it (``if top1 > best``). That figure is selected on the validation set itself, so it is
biased upwards; it is the one the papers' tables hold. :class:`EpochScores` keeps the top-1 of
every scored epoch (:func:`e2mc_cli.evaluate.protocols.scored_epochs`), the best of them by the
same rule (:func:`e2mc_cli.evaluate.protocols.best_epoch`), and the scores of the last epoch,
which are the evaluation's final predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from e2mc_cli.evaluate import features as FX
from e2mc_cli.evaluate.protocols import best_epoch
from e2mc_cli.models.memory_format import images_to
from e2mc_cli.precision import autocast


def topk_correct(scores: torch.Tensor, targets: torch.Tensor, k: int) -> np.ndarray:
    """Per-sample booleans: the target is among the ``k`` highest scores."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return (top == targets.view(-1, 1)).any(dim=1).numpy()


def top1_percent(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy of ``scores`` (samples × classes) against ``targets``, in percent."""
    return float(topk_correct(scores, targets, 1).mean() * 100)


@dataclass
class EpochScores:
    """Top-1 on the evaluation split after each scored epoch of one classifier's training.

    ``score(model)`` gives the model's scores (samples × classes, on the CPU); :meth:`after_epoch`
    is the training loop's end-of-epoch hook and scores the epochs in ``epochs`` only."""

    score: Callable[[nn.Module], torch.Tensor]
    targets: torch.Tensor
    epochs: frozenset[int]
    track: list[tuple[int, float]] = field(default_factory=list)
    final_scores: torch.Tensor | None = None  # of the last epoch scored

    def after_epoch(self, epoch: int, model: nn.Module) -> None:
        """The hook of the training loops: score ``model`` at the end of ``epoch`` (1-based)."""
        if epoch not in self.epochs:
            return
        scores = self.score(model)
        self.track.append((int(epoch), top1_percent(scores, self.targets)))
        self.final_scores = scores

    @property
    def best(self) -> tuple[int, float]:
        """``(epoch, top1)`` of the best scored epoch (:func:`~e2mc_cli.evaluate.protocols.best_epoch`)."""
        return best_epoch(self.track)


@torch.inference_mode()
def predict_images(
    model: nn.Module, dataset, transform, *, batch_size, device, workers, precision: str = "fp32"
) -> torch.Tensor:
    """Logits of an image classifier over the whole of ``dataset`` (eval mode, then the model's
    mode back), its forward pass in ``precision`` (:mod:`e2mc_cli.precision`)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for x, _ in FX.loader(dataset, np.arange(len(dataset)), transform, batch_size, workers=workers):
            with autocast(device, precision):
                out.append(model(images_to(x, device)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)
