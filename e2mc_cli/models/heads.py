"""The heads of each method, with the module indices of the official code (so their state-dict
keys match the official checkpoints after the method's prefix is replaced).

- VICReg projector ``mlp`` "8192-8192-8192": (Linear-BN-ReLU) × 2, final Linear without bias;
  keys 0, 1, 3, 4, 6.
- SwAV projection head: Linear-BN-ReLU-Linear (2048-2048-128), keys 0, 1, 3; prototypes
  Linear(128 → 3000, no bias).
- SimSiam projector (the encoder's ``fc``): Linear(no bias)-BN-ReLU-Linear(no bias)-BN-ReLU-
  Linear-BN(affine=False), keys 0, 1, 3, 4, 6, 7; predictor Linear(no bias)-BN-ReLU-Linear,
  keys 0, 1, 3.
"""

from __future__ import annotations

from torch import nn


def _dims(spec: str) -> list[int]:
    return [int(x) for x in str(spec).split("-")]


def vicreg_projector(in_dim: int, mlp: str = "8192-8192-8192") -> nn.Sequential:
    dims = [in_dim, *_dims(mlp)]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
    return nn.Sequential(*layers)


def swav_projection_head(in_dim: int, hidden_mlp: int = 2048, feat_dim: int = 128) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_mlp),
        nn.BatchNorm1d(hidden_mlp),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_mlp, feat_dim),
    )


def swav_prototypes(feat_dim: int = 128, n_prototypes: int = 3000) -> nn.Linear:
    return nn.Linear(feat_dim, n_prototypes, bias=False)


def simsiam_projector(in_dim: int, dim: int = 2048) -> nn.Sequential:
    head = nn.Sequential(
        nn.Linear(in_dim, in_dim, bias=False),
        nn.BatchNorm1d(in_dim),
        nn.ReLU(inplace=True),
        nn.Linear(in_dim, in_dim, bias=False),
        nn.BatchNorm1d(in_dim),
        nn.ReLU(inplace=True),
        nn.Linear(in_dim, dim),
        nn.BatchNorm1d(dim, affine=False),
    )
    head[6].bias.requires_grad = False  # as the official code: the bias before the last BN is unused
    return head


def simsiam_predictor(dim: int = 2048, pred_dim: int = 512) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, pred_dim, bias=False),
        nn.BatchNorm1d(pred_dim),
        nn.ReLU(inplace=True),
        nn.Linear(pred_dim, dim),
    )
