"""SimSiam as a method module: its loss over two views and its spec (projector and predictor)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from e2mc_cli.data.views import simsiam_recipes
from e2mc_cli.methods.base import Method, MethodOutput, check_views
from e2mc_cli.methods.functional import simsiam_loss
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.models import SSLModel, mlp
from e2mc_cli.precision import full_precision


class SimSiam(Method):
    """SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, CVPR 2021,
    https://arxiv.org/abs/2011.10566).

    Each view goes through the encoder (backbone + 3-layer projector) to ``z`` and the predictor
    to ``p``; the loss is ``−½ (cos(p_a, sg(z_b)) + cos(p_b, sg(z_a)))``
    (:func:`~e2mc_cli.methods.functional.simsiam_loss`). The predictor trains at a fixed learning
    rate when ``fix_pred_lr`` (the official recipe): :meth:`param_groups` marks its group
    ``fix_lr=True``. An add-on criterion sees ``z_a, z_b`` *with* gradients (only the base loss
    stops them), in space ``"hypersphere"`` (the cosine loss normalises them). The last layers of
    projector and predictor and the loss compute in float32 under any autocast.
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
        with full_precision(z_a.device):
            loss, terms = simsiam_loss(p_a, p_b, z_a, z_b)
        views = [z_a, z_b]
        return MethodOutput(loss, terms, views, self.space, views)


def _heads(width: int, sizes: Mapping[str, object]) -> dict[str, nn.Module]:
    """Projector (the encoder's ``fc``) Linear(no bias)-BN-ReLU-Linear(no bias)-BN-ReLU-Linear-
    BN(affine=False), keys 0, 1, 3, 4, 6, 7; predictor Linear(no bias)-BN-ReLU-Linear, keys 0, 1, 3."""
    dim, pred_dim = int(sizes["dim"]), int(sizes["pred_dim"])
    projector = mlp([width, width, width, dim], hidden_bias=False, out_norm=True)
    projector[6].bias.requires_grad = False  # as the official code: the bias before the last BN is unused
    return {"projector": projector, "predictor": mlp([dim, pred_dim, dim], hidden_bias=False)}


def _read_heads(state_dict: Mapping[str, torch.Tensor]) -> dict:
    return {
        "dim": state_dict["projector.6.weight"].shape[0],
        "pred_dim": state_dict["predictor.0.weight"].shape[0],
    }


def _scaled_heads(width: int) -> dict:
    """Dimension w, predictor w/4 (2048 and 512 on ResNet-50)."""
    return {"dim": width, "pred_dim": max(width // 4, 1)}


SPEC = MethodSpec(
    method=SimSiam,
    display_name="SimSiam",
    heads={"dim": 2048, "pred_dim": 512},
    head_builder=_heads,
    head_reader=_read_heads,
    head_scaler=_scaled_heads,
    view_builder=simsiam_recipes,
    view_options={"scale": (0.2, 1.0)},
    paper="simsiam",
    code="https://github.com/facebookresearch/simsiam",
    licence="cc-by-nc-4.0",
    licence_name="CC-BY-NC 4.0",
    recipes="simsiam",
    # {epoch, arch, state_dict, optimizer}: module.encoder.* is a torchvision ResNet whose fc is
    # the projector (module.encoder.fc.{0,1,3,4,6,7}.*), module.predictor.{0,1,3}.*.
    official_keys=(("encoder.fc.", "projector."), ("predictor.", "predictor."), ("encoder.", "backbone.")),
)
