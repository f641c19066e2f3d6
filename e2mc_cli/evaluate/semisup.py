"""Semi-supervised evaluation: fine-tune backbone and linear classifier on the labelled subset.

The backbone (BatchNorm in training mode) and a fresh ``nn.Linear(d, C)`` (N(0, 0.01²) weights,
zero bias) are trained with cross-entropy on augmented crops (RandomResizedCrop + flip), SGD
momentum 0.9, no weight decay, two learning rates (backbone, head) moved by the per-epoch schedule
of the method: cosine (VICReg) or ×0.2 at epochs 12 and 16 (SwAV), 20 epochs (Appendix B.2.2 of the
E2MC paper, Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931).

The backbone runs in the evaluation's precision (:mod:`e2mc_cli.precision`; fp16 with a gradient
scaler), the classifier in fp32; ``after_epoch(epoch, model)`` is called at the end of each epoch,
where the model is scored on the evaluation split as the authors' ``eval_semisup.py`` does.
"""

from __future__ import annotations

import torch
from torch import nn

from e2mc_cli.evaluate.linear import AfterEpoch, LabelledTraining, make_classifier
from e2mc_cli.precision import autocast, needs_grad_scaler


class Classifier(nn.Module):
    """A backbone and a linear head, trained together; the head computes in fp32 under any autocast."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = make_classifier(backbone.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        with torch.autocast(features.device.type, enabled=False):
            return self.head(features.float())


def finetune(backbone: nn.Module, job: LabelledTraining, after_epoch: AfterEpoch | None = None) -> Classifier:
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
        with autocast(device, job.precision):
            return model(x)

    scaler = torch.amp.GradScaler(device.type) if needs_grad_scaler(job.precision) else None
    model.train()
    job.fit(opt, logits_of, model, what="fine-tuning", after_epoch=after_epoch, scaler=scaler)
    return model.eval()
