"""Head builders: the multi-layer perceptrons a method's spec assembles into its heads.

Module indices follow ``nn.Sequential`` order — ``(Linear, BatchNorm1d, ReLU)`` per hidden layer,
then the output ``Linear`` (and an optional final ``BatchNorm1d``) — so the state-dict keys of a
head (``0.weight``, ``1.running_mean``, ``3.weight``, …) are those of the official code.

The output ``Linear`` of every head is an :class:`Fp32Linear`: whatever the autocast of the
training step (``--precision``), the embedding an add-on criterion reads, and each method's loss
input, comes out of a float32 product of a float32 input. The hidden layers follow the autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from e2mc_cli.errors import UserError
from e2mc_cli.precision import full_precision

HEAD_SIZE_MAX = 65536  # widest head layer built: a 65536 × 65536 linear layer alone is 17 GB


def check_size(value, what: str = "head size") -> int:
    """``value`` if it is an integer from 1 to :data:`HEAD_SIZE_MAX`, else a UserError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= HEAD_SIZE_MAX:
        raise UserError(f"{what} must be an integer from 1 to {HEAD_SIZE_MAX}, got {value!r}")
    return value


def parse_dims(text: str | int, what: str = "layer sizes") -> list[int]:
    """``"8192-8192-8192"`` → ``[8192, 8192, 8192]`` (a single number is one layer); anything else
    (a word, a size of 0 or above :data:`HEAD_SIZE_MAX`) is a UserError naming ``what``."""
    parts = str(text).split("-") if not isinstance(text, bool) else ["?"]
    if not all(p.strip().isdigit() for p in parts):
        raise UserError(f"{what} {text!r}: expected sizes joined by '-', e.g. 8192-8192-8192")
    return [check_size(int(p), f"{what} {text!r}: each size") for p in parts]


class Fp32Linear(nn.Linear):
    """An ``nn.Linear`` that computes in float32 under any autocast: autocast is off for its product
    and its input is upcast, so the output is float32 and equals the float32 layer on the upcast
    input. Same parameters and state-dict keys as ``nn.Linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.float()
        with full_precision(x.device):
            return F.linear(x.float(), self.weight.float(), bias)


def mlp(
    dims: Sequence[int],
    *,
    hidden_bias: bool = True,
    out_bias: bool = True,
    out_norm: bool = False,
) -> nn.Sequential:
    """``dims[0] → … → dims[-1]``: ``(Linear, BatchNorm1d, ReLU)`` per hidden layer, then the
    output ``Linear`` (an :class:`Fp32Linear`); with ``out_norm`` a ``BatchNorm1d(dims[-1],
    affine=False)`` after it (on the float32 output, so float32 too)."""
    if len(dims) < 2:
        raise ValueError(f"an MLP needs an input and an output size, got {list(dims)}")
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(a, b, bias=hidden_bias), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    layers.append(Fp32Linear(dims[-2], dims[-1], bias=out_bias))
    if out_norm:
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    return nn.Sequential(*layers)

