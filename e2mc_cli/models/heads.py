"""Head builders: the multi-layer perceptrons a method's spec assembles into its heads.

Module indices follow ``nn.Sequential`` order — ``(Linear, BatchNorm1d, ReLU)`` per hidden layer,
then the output ``Linear`` (and an optional final ``BatchNorm1d``) — so the state-dict keys of a
head (``0.weight``, ``1.running_mean``, ``3.weight``, …) are those of the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def parse_dims(text: str | int) -> list[int]:
    """``"8192-8192-8192"`` → ``[8192, 8192, 8192]`` (a single number is one layer)."""
    return [int(x) for x in str(text).split("-")]


def mlp(
    dims: Sequence[int],
    *,
    hidden_bias: bool = True,
    out_bias: bool = True,
    out_norm: bool = False,
) -> nn.Sequential:
    """``dims[0] → … → dims[-1]``: ``(Linear, BatchNorm1d, ReLU)`` per hidden layer, then the
    output ``Linear``; with ``out_norm`` a ``BatchNorm1d(dims[-1], affine=False)`` after it."""
    if len(dims) < 2:
        raise ValueError(f"an MLP needs an input and an output size, got {list(dims)}")
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(a, b, bias=hidden_bias), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=out_bias))
    if out_norm:
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    return nn.Sequential(*layers)

