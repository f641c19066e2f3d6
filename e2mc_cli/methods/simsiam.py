"""SimSiam as a method module."""

from __future__ import annotations

import torch

from e2mc_cli.methods.base import Method, MethodOutput, check_views
from e2mc_cli.methods.functional import simsiam_loss
from e2mc_cli.models import SSLModel


class SimSiam(Method):
    """SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, CVPR 2021).

    Each view goes through the encoder (backbone + 3-layer projector) to ``z`` and the predictor
    to ``p``; the loss is ``−½ (cos(p_a, sg(z_b)) + cos(p_b, sg(z_a)))``
    (:func:`~e2mc_cli.methods.functional.simsiam_loss`). The predictor trains at a fixed learning
    rate when ``fix_pred_lr`` (the official recipe): :meth:`param_groups` marks its group
    ``fix_lr=True``. An add-on criterion sees ``z_a, z_b`` *with* gradients (only the base loss
    stops them), in space ``"hypersphere"`` (the cosine loss normalises them).
    """

    name = "simsiam"
    space = "hypersphere"

    def __init__(self, model: SSLModel, fix_pred_lr: bool = True):
        super().__init__(model)
        self.fix_pred_lr = bool(fix_pred_lr)

    def param_groups(self) -> list[dict]:
        pred = {id(p) for p in self.model.predictor.parameters()}
        encoder = [p for p in self.parameters() if p.requires_grad and id(p) not in pred]
        predictor = [p for p in self.model.predictor.parameters() if p.requires_grad]
        return [
            {"name": "encoder", "params": encoder, "fix_lr": False},
            {"name": "predictor", "params": predictor, "fix_lr": self.fix_pred_lr},
        ]

    def forward(self, images: list[torch.Tensor]) -> MethodOutput:
        check_views(images, 2, "SimSiam")
        z_a = self.model.projector(self.model.backbone(images[0]))
        z_b = self.model.projector(self.model.backbone(images[1]))
        p_a = self.model.predictor(z_a)
        p_b = self.model.predictor(z_b)
        loss, terms = simsiam_loss(p_a, p_b, z_a, z_b)
        views = [z_a, z_b]
        return MethodOutput(loss, terms, views, self.space, views)
