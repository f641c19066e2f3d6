"""Semi-supervised evaluation: fine-tune backbone and linear classifier on the labelled subset.

The backbone (BatchNorm in training mode) and a fresh ``nn.Linear(d, C)`` (N(0, 0.01²) weights,
zero bias) are trained with cross-entropy on augmented crops (RandomResizedCrop + flip), SGD
momentum 0.9, no weight decay, two learning rates (backbone, head) moved by the per-epoch schedule
of the method: cosine (VICReg) or ×0.2 at epochs 12 and 16 (SwAV), 20 epochs (paper 002, B.2.2).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from e2mc_cli.evaluate.features import autocast, loader
from e2mc_cli.evaluate.linear import _set_lr, epoch_factor, make_classifier
from e2mc_cli.evaluate.protocols import ProtocolConfig


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = make_classifier(backbone.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def finetune(
    backbone: nn.Module,
    dataset,
    indices,
    transform,
    num_classes: int,
    cfg: ProtocolConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    workers: int | None = None,
) -> Classifier:
    """Fine-tune ``backbone`` (modified in place) and a new head; return both as one module."""
    device = torch.device(device)
    torch.manual_seed(seed)
    model = Classifier(backbone, num_classes).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(
        [
            {"params": model.backbone.parameters(), "lr": cfg.lr},
            {"params": model.head.parameters(), "lr": cfg.head_lr},
        ],
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.wd,
    )
    base = [cfg.lr, cfg.head_lr]
    data = loader(dataset, indices, transform, cfg.batch_size, shuffle=True, seed=seed, workers=workers)
    model.train()
    for epoch in range(cfg.epochs):
        _set_lr(opt, base, epoch_factor(epoch, cfg))
        for x, y in data:
            with autocast(device):
                logits = model(x.to(device, non_blocking=True))
            loss = F.cross_entropy(logits.float(), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()
