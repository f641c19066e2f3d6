"""Backbones and the heads each method needs, assembled into one :class:`SSLModel`.

The state dict of an :class:`SSLModel` *is* the canonical checkpoint layout: ``backbone.*``
(torchvision names, no ``fc``), ``projector.*``, ``prototypes.weight`` (SwAV), ``predictor.*``
(SimSiam).
"""

from __future__ import annotations

import torch
from torch import nn

from e2mc_cli.errors import UserError
from e2mc_cli.models import heads as H
from e2mc_cli.models.backbones import BACKBONES, MiniResNet, build_backbone

METHOD_NAMES = ("vicreg", "swav", "simsiam")

# The official head sizes for a ResNet-50; smaller backbones pass their own in ``heads``.
DEFAULT_HEADS: dict[str, dict] = {
    "vicreg": {"mlp": "8192-8192-8192"},
    "swav": {"hidden_mlp": 2048, "feat_dim": 128, "n_prototypes": 3000},
    "simsiam": {"dim": 2048, "pred_dim": 512},
}


class SSLModel(nn.Module):
    """A backbone plus the heads of one method (``projector``; ``prototypes``; ``predictor``)."""

    def __init__(self, method: str, arch: str, heads: dict | None = None):
        super().__init__()
        if method not in METHOD_NAMES:
            raise UserError(f"unknown method {method!r}; expected one of: {', '.join(METHOD_NAMES)}")
        self.method, self.arch = method, arch
        self.heads = {**DEFAULT_HEADS[method], **(heads or {})}
        self.backbone = build_backbone(arch)
        width = self.backbone.num_features
        h = self.heads
        self.prototypes: nn.Linear | None = None
        self.predictor: nn.Sequential | None = None
        if method == "vicreg":
            self.projector = H.vicreg_projector(width, h["mlp"])
        elif method == "swav":
            self.projector = H.swav_projection_head(width, int(h["hidden_mlp"]), int(h["feat_dim"]))
            self.prototypes = H.swav_prototypes(int(h["feat_dim"]), int(h["n_prototypes"]))
        else:
            self.projector = H.simsiam_projector(width, int(h["dim"]))
            self.predictor = H.simsiam_predictor(int(h["dim"]), int(h["pred_dim"]))

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projector output for a batch of images (the embedding most methods compare)."""
        return self.projector(self.backbone(x))


def build_model(method: str, arch: str = "resnet50", heads: dict | None = None) -> SSLModel:
    return SSLModel(method, arch, heads)


def infer_heads(method: str, state_dict: dict[str, torch.Tensor]) -> dict:
    """Head sizes read off the tensors of a canonical state dict."""
    try:
        if method == "vicreg":
            idx = sorted(
                {
                    int(k.split(".")[1])
                    for k in state_dict
                    if k.startswith("projector.") and k.endswith("weight") and state_dict[k].ndim == 2
                }
            )
            return {"mlp": "-".join(str(state_dict[f"projector.{i}.weight"].shape[0]) for i in idx)}
        if method == "swav":
            return {
                "hidden_mlp": state_dict["projector.0.weight"].shape[0],
                "feat_dim": state_dict["projector.3.weight"].shape[0],
                "n_prototypes": state_dict["prototypes.weight"].shape[0],
            }
        return {
            "dim": state_dict["projector.6.weight"].shape[0],
            "pred_dim": state_dict["predictor.0.weight"].shape[0],
        }
    except KeyError as exc:
        raise UserError(f"checkpoint has no {exc.args[0]!r}: not a complete {method} model") from None


__all__ = [
    "BACKBONES",
    "DEFAULT_HEADS",
    "METHOD_NAMES",
    "MiniResNet",
    "SSLModel",
    "build_backbone",
    "build_model",
    "infer_heads",
]
