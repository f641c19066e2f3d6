"""Semi-supervised evaluation: fine-tune backbone and linear classifier on the labelled subset.

The backbone (BatchNorm in training mode) and a fresh ``nn.Linear(d, C)`` (N(0, 0.01²) weights,
zero bias) are trained with cross-entropy on augmented crops (RandomResizedCrop + flip), SGD
momentum 0.9, no weight decay, two learning rates (backbone, head) moved by the per-epoch schedule
of the method: cosine (VICReg) or ×0.2 at epochs 12 and 16 (SwAV), 20 epochs (Appendix B.2.2 of the
E2MC paper, Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931).
"""

from __future__ import annotations

import torch
from torch import nn

from e2mc_cli.evaluate.features import autocast
from e2mc_cli.evaluate.linear import LabelledTraining, make_classifier


class Classifier(nn.Module):
    """A backbone and a linear head, trained together."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = make_classifier(backbone.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def finetune(backbone: nn.Module, job: LabelledTraining) -> Classifier:
    """Fine-tune ``backbone`` (modified in place) and a new head; return both as one module."""
    device, cfg = torch.device(job.device), job.cfg
    torch.manual_seed(job.seed)
    model = Classifier(backbone, job.num_classes).to(device)
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

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            logits = model(x)
        return logits.float()

    model.train()
    job.fit(opt, logits_of, what="fine-tuning")
    return model.eval()
