"""VICReg as a method module: its loss over two views and its spec (one projector)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from e2mc_cli.data.views import vicreg_recipes
from e2mc_cli.methods.base import Method, MethodOutput, check_views
from e2mc_cli.methods.functional import vicreg_loss
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.models import SSLModel, mlp, parse_dims
from e2mc_cli.precision import full_precision


class VICReg(Method):
    """VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce & LeCun, ICLR 2022,
    https://arxiv.org/abs/2105.04906).

    Two views go through the backbone and the 8192-8192-8192 projector one after the other (as
    the official code: batch-norm statistics per view); the loss is
    ``λ·mse(z_a, z_b) + μ·(variance hinge) + ν·(off-diagonal covariance)`` with
    λ, μ, ν = 25, 25, 1 (:func:`~e2mc_cli.methods.functional.vicreg_loss`). An add-on criterion
    sees the projector outputs ``z_a, z_b``, which VICReg does not normalise: space
    ``"hypercube"``. The projector's last layer and the loss compute in float32 under any
    autocast (the covariance's products would otherwise round to half precision).
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
        with full_precision(z_a.device):
            loss, terms = vicreg_loss(z_a, z_b, self.sim_coeff, self.std_coeff, self.cov_coeff)
        views = [z_a, z_b]
        return MethodOutput(loss, terms, views, self.space, views)


def _heads(width: int, sizes: Mapping[str, object]) -> dict[str, nn.Module]:
    """The projector ``mlp`` "8192-8192-8192": (Linear-BN-ReLU) × 2, last Linear without bias;
    keys 0, 1, 3, 4, 6."""
    return {"projector": mlp([width, *parse_dims(sizes["mlp"])], out_bias=False)}


def read_projector_sizes(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """``{"mlp": "a-b-c"}`` read off the Linear weights of a ``projector`` of (Linear-BN-ReLU) × n,
    Linear (VICReg's, and Barlow Twins' of the same shape)."""
    layers = sorted(
        int(k.split(".")[1])
        for k, v in state_dict.items()
        if k.startswith("projector.") and k.endswith("weight") and v.ndim == 2
    )
    if not layers:
        raise KeyError("projector.0.weight")
    return {"mlp": "-".join(str(state_dict[f"projector.{i}.weight"].shape[0]) for i in layers)}


def scaled_projector(width: int) -> dict:
    """8192-8192-8192 → 4w-4w-4w (the projector costs 3.6 % of the backbone at every width)."""
    return {"mlp": "-".join([str(4 * width)] * 3)}


SPEC = MethodSpec(
    method=VICReg,
    display_name="VICReg",
    heads={"mlp": "8192-8192-8192"},
    head_builder=_heads,
    head_reader=read_projector_sizes,
    head_scaler=scaled_projector,
    view_builder=vicreg_recipes,
    view_options={"scale": (0.08, 1.0)},
    paper="vicreg",
    code="https://github.com/facebookresearch/vicreg",
    licence="mit",
    licence_name="MIT",
    recipes="vicreg",
    # {epoch, model, optimizer}: module.backbone.*, module.projector.{0,1,3,4,6}.*; or the bare
    # backbone (resnet50.pth) with torchvision names.
    official_keys=(("projector.", "projector."), ("backbone.", "backbone.")),
)
