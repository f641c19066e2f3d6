"""Backbones and heads assembled into one :class:`SSLModel`.

The state dict of an :class:`SSLModel` *is* the canonical checkpoint layout: ``backbone.*``
(torchvision names, no ``fc``) followed by the heads a method's spec builds (``projector.*`` and
e.g. ``prototypes.weight`` or ``predictor.*``), then the method's *state modules*: what its
official release carries besides the trained network and what training updates without gradients
(a momentum encoder, a queue of keys, a centre). Which heads and state a method has, and their
sizes, is the method's business (:mod:`e2mc_cli.methods`); nothing here knows a method by name.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from e2mc_cli.models.backbones import BACKBONES, MiniResNet, build_backbone
from e2mc_cli.models.heads import Fp32Linear, mlp, parse_dims


class SSLModel(nn.Module):
    """A backbone plus a method's named heads, each an attribute (``model.projector``, …).

    ``method`` is the method's name, ``arch`` the backbone's, ``heads`` the head sizes the heads
    were built with (saved in the checkpoint metadata); ``modules`` must hold a ``projector``,
    the head whose output is the embedding (:meth:`forward`). ``state`` are the method's state
    modules (a momentum encoder, a queue): registered after the heads, their parameters frozen
    (``requires_grad=False``: no optimiser sees them; the method updates them itself). Modules are
    registered in the order given, so the state dict lists ``backbone.*`` first, then each head,
    then each state module.
    """

    def __init__(
        self,
        method: str,
        arch: str,
        backbone: nn.Module,
        heads: Mapping[str, object],
        modules: Mapping[str, nn.Module],
        state: Mapping[str, nn.Module] | None = None,
    ):
        super().__init__()
        if "projector" not in modules:
            raise ValueError(f"a {method} model needs a 'projector' head, got {', '.join(modules) or 'none'}")
        state = dict(state or {})
        clash = sorted(set(state) & ({"backbone"} | set(modules)))
        if clash:
            raise ValueError(f"a {method} model's state modules reuse the names {', '.join(clash)}")
        self.method, self.arch, self.heads = method, arch, dict(heads)
        self.backbone = backbone
        for name, module in modules.items():
            self.add_module(name, module)
        for name, module in state.items():
            module.requires_grad_(False)
            self.add_module(name, module)
        self.head_names = tuple(modules)
        self.state_names = tuple(state)

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projector output for a batch of images (the embedding most methods compare)."""
        return self.projector(self.backbone(x))


__all__ = [
    "BACKBONES",
    "Fp32Linear",
    "MiniResNet",
    "SSLModel",
    "build_backbone",
    "mlp",
    "parse_dims",
]
