"""Barlow Twins files in the official layouts, rebuilt from the architecture of the official
``main.py`` (facebookresearch/barlowtwins), written out here independently of ``e2mc_cli.models``.

- ``checkpoint.pth``: ``{epoch, model, optimizer}``; ``model`` is the DistributedDataParallel state
  dict of ``BarlowTwins`` (``module.backbone.*``, ``module.projector.*``, ``module.bn.*``),
  ``optimizer`` the state dict of its ``LARS`` over two groups, the weights then the biases and
  batch-norm parameters (``weight_decay_filter`` / ``lars_adaptation_filter`` stored as ``True``).
- ``resnet50.pth``: ``model.module.backbone.state_dict()``: torchvision names, no ``fc``.
"""

from __future__ import annotations

import io

import torch
from torch import nn
from zoo_fixtures import Official, backbone_width, official_backbone, prefixed, randomize_


def official_projector(embedding: int, mlp: str) -> nn.Sequential:
    """``BarlowTwins.projector``: (Linear without bias, BatchNorm1d, ReLU) per hidden layer, then
    a Linear without bias."""
    sizes = [embedding, *map(int, mlp.split("-"))]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 2):
        layers += [nn.Linear(sizes[i], sizes[i + 1], bias=False), nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(True)]
    layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
    return nn.Sequential(*layers)


def official_modules(arch: str = "resnet-mini", mlp: str = "32-32-32") -> dict[str, nn.Module]:
    """``backbone``, ``projector`` and ``bn`` (``BatchNorm1d(d, affine=False)``), every tensor random."""
    backbone = randomize_(official_backbone(arch))
    projector = randomize_(official_projector(backbone_width(arch), mlp))
    bn = randomize_(nn.BatchNorm1d(int(mlp.split("-")[-1]), affine=False))
    return {"backbone": backbone, "projector": projector, "bn": bn}


def lars_two_groups(named: list[tuple[str, torch.Tensor]]) -> tuple[dict, list[str]]:
    """The ``LARS.state_dict()`` of ``main.py`` over its two groups, and the parameter names in the
    order of its positions (the weights, then the 1-d tensors)."""
    weights = [(n, p) for n, p in named if p.ndim != 1]
    biases = [(n, p) for n, p in named if p.ndim == 1]
    order = weights + biases
    group = {"weight_decay": 1e-6, "momentum": 0.9, "eta": 0.001}
    filters = {"weight_decay_filter": True, "lars_adaptation_filter": True}
    state = {
        "state": {i: {"mu": torch.randn_like(p)} for i, (_, p) in enumerate(order)},
        "param_groups": [
            {"lr": 0.0016, **group, **filters, "params": list(range(len(weights)))},
            {"lr": 0.0000384, **group, **filters, "params": list(range(len(weights), len(order)))},
        ],
    }
    return state, [n for n, _ in order]


def full_checkpoint(arch: str = "resnet-mini", mlp: str = "32-32-32", epoch: int = 1000) -> Official:
    """``checkpoint.pth`` of ``main.py`` after its last epoch."""
    modules = official_modules(arch, mlp)
    model = {}
    for name, module in modules.items():
        model.update(prefixed(f"module.{name}.", module.state_dict()))
    named = [(f"module.{n}.{k}", p) for n, m in modules.items() for k, p in m.named_parameters()]
    optimizer, order = lars_two_groups(named)
    buf = io.BytesIO()
    torch.save({"epoch": epoch, "model": model, "optimizer": optimizer}, buf)
    return Official(buf.getvalue(), model, modules, optimizer, order)


def backbone_file(arch: str = "resnet-mini") -> Official:
    """``resnet50.pth``: the bare backbone state dict."""
    backbone = randomize_(official_backbone(arch))
    state = dict(backbone.state_dict())
    buf = io.BytesIO()
    torch.save(state, buf)
    return Official(buf.getvalue(), state, {"backbone": backbone})
