"""VICReg as a method module."""

from __future__ import annotations

import torch

from e2mc_cli.methods.base import Method, MethodOutput, check_views
from e2mc_cli.methods.functional import vicreg_loss
from e2mc_cli.models import SSLModel


class VICReg(Method):
    """VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce & LeCun, ICLR 2022).

    Two views go through the backbone and the 8192-8192-8192 projector one after the other (as
    the official code: batch-norm statistics per view); the loss is
    ``λ·mse(z_a, z_b) + μ·(variance hinge) + ν·(off-diagonal covariance)`` with
    λ, μ, ν = 25, 25, 1 (:func:`~e2mc_cli.methods.functional.vicreg_loss`). An add-on criterion
    sees the projector outputs ``z_a, z_b``, which VICReg does not normalise: space
    ``"hypercube"``.
    """

    name = "vicreg"
    space = "hypercube"

    def __init__(
        self,
        model: SSLModel,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
    ):
        super().__init__(model)
        self.sim_coeff, self.std_coeff, self.cov_coeff = float(sim_coeff), float(std_coeff), float(cov_coeff)

    def forward(self, images: list[torch.Tensor]) -> MethodOutput:
        check_views(images, 2, "VICReg")
        z_a = self.model.projector(self.model.backbone(images[0]))
        z_b = self.model.projector(self.model.backbone(images[1]))
        loss, terms = vicreg_loss(z_a, z_b, self.sim_coeff, self.std_coeff, self.cov_coeff)
        views = [z_a, z_b]
        return MethodOutput(loss, terms, views, self.space, views)
