"""Linear probe on a frozen backbone, in two modes.

- ``standard`` (the paper's protocol): every epoch, each training image is freshly augmented
  (RandomResizedCrop + flip) and passed through the frozen backbone in eval mode (BatchNorm uses
  its running statistics); only the linear classifier learns.
- ``cached``: the backbone's features of the un-augmented training images (evaluation transform)
  are computed once; the classifier is trained on them with the same optimiser, schedule, batch
  size and number of epochs. No augmentation, a fraction of the cost.

Classifier: ``nn.Linear(d, C)`` with weights ~ N(0, 0.01²) and zero bias (as the official linear
evaluations), cross-entropy, SGD with momentum 0.9 (for SimSiam wrapped in LARC over every
parameter, as its ``main_lincls.py --lars``), learning rate ``lr · ½(1 + cos(π e / E))`` at epoch
``e`` of ``E``. The training loops call ``after_epoch(epoch, model)`` at the end of each epoch
(1-based), where :class:`e2mc_cli.evaluate.scoring.EpochScores` scores the classifier on the
evaluation split. The backbone's forward pass runs in the evaluation's precision
(:mod:`e2mc_cli.precision`); the classifier always in fp32.
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

from e2mc_cli.evaluate.features import loader
from e2mc_cli.evaluate.progress import stage
from e2mc_cli.evaluate.protocols import ProtocolConfig
from e2mc_cli.models.memory_format import images_to
from e2mc_cli.precision import autocast
from e2mc_cli.training.optim import LARC

# apex's LARC as SimSiam's main_lincls.py builds it: LARC(SGD, trust_coefficient=.001, clip=False)
LARC_TRUST_COEFFICIENT = 0.001
AfterEpoch = Callable[[int, nn.Module], None]  # (epoch, 1-based; the model being trained)


def make_classifier(dim: int, num_classes: int) -> nn.Linear:
    head = nn.Linear(dim, num_classes)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    return head


def make_optimizer(params, cfg: ProtocolConfig) -> torch.optim.Optimizer | LARC:
    """SGD with the protocol's momentum and weight decay at its (scaled) learning rate; for
    ``optimizer = "larc"`` wrapped in LARC (trust coefficient 0.001, no clipping), which rescales
    the gradient of *every* tensor, the bias included, by ``η‖w‖ / (‖g‖ + wd‖w‖)`` (SimSiam's
    ``main_lincls.py``: ``parameters`` is the classifier's weight and bias, both in one group)."""
    sgd = torch.optim.SGD(params, lr=cfg.effective_lr, momentum=cfg.momentum, weight_decay=cfg.wd)
    if cfg.optimizer == "larc":
        return LARC(sgd, trust_coefficient=LARC_TRUST_COEFFICIENT, clip=False)
    return sgd


def epoch_factor(epoch: int, cfg: ProtocolConfig) -> float:
    """Learning-rate multiplier for ``epoch`` (0-based): cosine over ``cfg.epochs`` or step decay."""
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def _set_lr(optimizer, base_lrs: list[float], factor: float) -> None:
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
    after_epoch: AfterEpoch | None = None,
) -> nn.Linear:
    """``--mode cached``: a linear classifier trained on precomputed features (in fp32)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    head = make_classifier(feats.shape[1], num_classes).to(device)
    opt = make_optimizer(head.parameters(), cfg)
    base = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(seed)
    threads = _cpu_threads_for(device, 6.0 * cfg.batch_size * feats.shape[1] * num_classes)
    with threads, stage(f"linear probe on features, seed {seed}", cfg.epochs, "epochs") as advance:
        _fit(head, opt, base, feats, labels, cfg, gen, device, advance, after_epoch)
    return head.cpu()


def _fit(head, opt, base, feats, labels, cfg: ProtocolConfig, gen, device, advance, after_epoch) -> None:
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
        if after_epoch is not None:
            after_epoch(epoch + 1, head)
        advance(1)


@dataclass(frozen=True)
class LabelledTraining:
    """One classifier training on augmented crops of ``dataset[indices]`` (read through
    ``transform``): the protocol's hyperparameters, the seed, where it runs and in which precision
    the backbone's forward pass runs."""

    dataset: Dataset
    indices: np.ndarray
    transform: Callable
    num_classes: int
    cfg: ProtocolConfig
    seed: int = 0
    device: torch.device | str = "cpu"
    workers: int | None = None
    precision: str = "fp32"

    def fit(
        self,
        opt,
        logits_of: Callable[[torch.Tensor], torch.Tensor],
        model: nn.Module,
        *,
        what: str = "linear probe",
        after_epoch: AfterEpoch | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """The protocol's epochs of cross-entropy steps on ``logits_of(images)``, each epoch at its
        scheduled learning rates, over shuffled batches in an order that depends on the seed only
        (a stage ``what, seed S`` of the evaluation's progress display); ``after_epoch(epoch,
        model)`` at the end of each. With a ``scaler`` (fp16) the loss is scaled against gradient
        underflow and the step skipped when the gradients overflowed."""
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
                    loss = F.cross_entropy(logits_of(images_to(x, device)), y.to(device))
                    opt.zero_grad(set_to_none=True)
                    if scaler is None:
                        loss.backward()
                        opt.step()
                    else:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                if after_epoch is not None:
                    after_epoch(epoch + 1, model)
                advance(1)


def train_standard(
    backbone: nn.Module, job: LabelledTraining, after_epoch: AfterEpoch | None = None
) -> nn.Linear:
    """``--mode standard``: fresh augmentations every epoch through the frozen backbone (eval mode,
    forward pass in ``job.precision``); the classifier learns in fp32."""
    device = torch.device(job.device)
    torch.manual_seed(job.seed)
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    head = make_classifier(backbone.num_features, job.num_classes).to(device)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(device, job.precision):
            f = backbone(x)
        return head(f.float())

    job.fit(make_optimizer(head.parameters(), job.cfg), logits_of, head, after_epoch=after_epoch)
    return head.cpu()


@torch.no_grad()
def predict(head: nn.Module, feats: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Logits of ``head`` on ``feats`` (float32, on the CPU): the batches go to the head's device,
    and the head gets its training mode back."""
    device = next(head.parameters()).device
    was_training = head.training
    head.eval()
    try:
        out = [
            head(feats[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(feats), batch_size)
        ]
    finally:
        head.train(was_training)
    return torch.cat(out)
