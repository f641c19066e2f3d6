"""Linear probe on a frozen backbone, in two modes.

- ``standard`` (the paper's protocol): every epoch, each training image is freshly augmented
  (RandomResizedCrop + flip) and passed through the frozen backbone in eval mode (BatchNorm uses
  its running statistics); only the linear classifier learns.
- ``cached``: the backbone's features of the un-augmented training images (evaluation transform)
  are computed once; the classifier is trained on them with the same optimiser, schedule, batch
  size and number of epochs. No augmentation, a fraction of the cost.

Classifier: ``nn.Linear(d, C)`` with weights ~ N(0, 0.01²) and zero bias (as the official linear
evaluations), cross-entropy, SGD or LARS with momentum 0.9, learning rate
``lr · ½(1 + cos(π e / E))`` at epoch ``e`` of ``E``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from e2mc_cli.evaluate.features import autocast, loader
from e2mc_cli.evaluate.progress import stage
from e2mc_cli.evaluate.protocols import ProtocolConfig
from e2mc_cli.training.optim import LARS


def make_classifier(dim: int, num_classes: int) -> nn.Linear:
    head = nn.Linear(dim, num_classes)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    return head


def make_optimizer(params, cfg: ProtocolConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "lars":
        return LARS(params, lr=cfg.effective_lr, weight_decay=cfg.wd, momentum=cfg.momentum)
    return torch.optim.SGD(params, lr=cfg.effective_lr, momentum=cfg.momentum, weight_decay=cfg.wd)


def epoch_factor(epoch: int, cfg: ProtocolConfig) -> float:
    """Learning-rate multiplier for ``epoch`` (0-based): cosine over ``cfg.epochs`` or step decay."""
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def _set_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    for group, lr in zip(optimizer.param_groups, base_lrs):
        group["lr"] = lr * factor


SMALL_STEP_FLOPS = 5e7  # below this per-step work, one CPU thread beats several


@contextlib.contextmanager
def _cpu_threads_for(device: torch.device, step_flops: float):
    """One intra-op thread on the CPU for tiny steps: thread synchronisation would dominate them
    (and stall badly when other processes share the cores)."""
    if device.type != "cpu" or step_flops >= SMALL_STEP_FLOPS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_on_features(
    feats: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    cfg: ProtocolConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> nn.Linear:
    """``--mode cached``: a linear classifier trained on precomputed features."""
    device = torch.device(device)
    torch.manual_seed(seed)
    head = make_classifier(feats.shape[1], num_classes).to(device)
    opt = make_optimizer(head.parameters(), cfg)
    base = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(seed)
    threads = _cpu_threads_for(device, 6.0 * cfg.batch_size * feats.shape[1] * num_classes)
    with threads, stage(f"linear probe on features, seed {seed}", cfg.epochs, "epochs") as advance:
        _fit(head, opt, base, feats, labels, cfg, gen, device, advance)
    return head.cpu()


def _fit(head, opt, base, feats, labels, cfg: ProtocolConfig, gen: torch.Generator, device, advance) -> None:
    n = len(labels)
    for epoch in range(cfg.epochs):
        _set_lr(opt, base, epoch_factor(epoch, cfg))
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]  # features stay on the CPU; batches move
            x, y = feats[idx].to(device, non_blocking=True), labels[idx].to(device, non_blocking=True)
            loss = F.cross_entropy(head(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        advance(1)


@dataclass(frozen=True)
class LabelledTraining:
    """One classifier training on augmented crops of ``dataset[indices]`` (read through
    ``transform``): the protocol's hyperparameters, the seed, and where it runs."""

    dataset: Dataset
    indices: np.ndarray
    transform: Callable
    num_classes: int
    cfg: ProtocolConfig
    seed: int = 0
    device: torch.device | str = "cpu"
    workers: int | None = None

    def fit(
        self,
        opt: torch.optim.Optimizer,
        logits_of: Callable[[torch.Tensor], torch.Tensor],
        what: str = "linear probe",
    ) -> None:
        """The protocol's epochs of cross-entropy steps on ``logits_of(images)``, each epoch at its
        scheduled learning rates, over shuffled batches in an order that depends on the seed only
        (a stage ``what, seed S`` of the evaluation's progress display)."""
        device, cfg = torch.device(self.device), self.cfg
        base = [g["lr"] for g in opt.param_groups]
        data = loader(
            self.dataset, self.indices, self.transform, cfg.batch_size, shuffle=True, seed=self.seed,
            workers=self.workers,
        )  # fmt: skip
        with stage(f"{what}, seed {self.seed}", cfg.epochs, "epochs") as advance:
            for epoch in range(cfg.epochs):
                _set_lr(opt, base, epoch_factor(epoch, cfg))
                for x, y in data:
                    loss = F.cross_entropy(logits_of(x.to(device, non_blocking=True)), y.to(device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                advance(1)


def train_standard(backbone: nn.Module, job: LabelledTraining) -> nn.Linear:
    """``--mode standard``: fresh augmentations every epoch through the frozen backbone (eval mode)."""
    device = torch.device(job.device)
    torch.manual_seed(job.seed)
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    head = make_classifier(backbone.num_features, job.num_classes).to(device)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(device):
            f = backbone(x)
        return head(f.float())

    job.fit(make_optimizer(head.parameters(), job.cfg), logits_of)
    return head.cpu()


@torch.no_grad()
def predict(head: nn.Module, feats: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Logits of ``head`` on ``feats`` (float32, CPU)."""
    head = head.eval()
    return torch.cat([head(feats[i : i + batch_size]).float() for i in range(0, len(feats), batch_size)])


def topk_correct(scores: torch.Tensor, targets: torch.Tensor, k: int) -> np.ndarray:
    """Per-sample booleans: the target is among the ``k`` highest scores."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return (top == targets.view(-1, 1)).any(dim=1).numpy()
