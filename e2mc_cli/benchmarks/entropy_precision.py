"""How much the m-spacings entropy of E2MC suffers when its embeddings arrive in bf16 or fp16.

Under mixed precision the projector's output ``z`` is rounded to the autocast dtype before the
criterion sees it; :class:`~e2mc_cli.criteria.base.Criterion` then upcasts to float32 and computes
``Ψ``, the sort and the logarithms there, but the rounding has already happened. This module
measures what that rounding does, against the same embedding kept in float64 throughout, on the
shapes of the shipped E2MC recipes (:data:`RECIPE_SHAPES`).

Why bf16 hurts. bfloat16 keeps 8 significant bits, so a value in [1, 2) is rounded to a step (one
ulp) of 2⁻⁷ ≈ 0.008, and one in [0.5, 1) to 2⁻⁸. The estimator looks at the m-spacings
``x₍ᵢ₊ₘ₎ − x₍ᵢ₎`` with ``m = round(√n)``: at n = 512 (m = 23) an m-spacing of a unit-variance
dimension spans about m/(n·φ(z)) ≈ 0.11 near the centre and 0.2–0.3 in the shoulders — only a few
tens of bf16 ulps (fewer still for a dimension whose mean is large against its spread, since the
ulp grows with the magnitude and the spacing does not). Each end is rounded by up to half an ulp,
so each spacing, and each term ``log s`` of the estimate, is off by up to a few percent; ``Ψ``
(sigmoid or Gaussian CDF) is monotone and smooth and carries that relative error into the unit
cube. Samples a spacing apart are only one or two ulps from their neighbours, so ties are common
and the sort may order them either way. The entropy, a mean of n − m logarithms, averages most of
this away; its gradient does not: the derivative with respect to one order statistic is a
difference of inverse spacings, ``(1/(n−m))·(1/s₍ᵢ₋ₘ₎ − 1/s₍ᵢ₎)·Ψ'(z)``, two nearly equal numbers
each a little wrong, and a tie broken the other way hands it to the other sample. fp16 keeps 11
significant bits, 8× finer steps, and its spacing errors are 8× smaller; fp32 (24 bits) shows the
float32 arithmetic itself (its rare large gradient errors are near-ties ordered differently).

Measures (per recipe shape and input dtype, on i.i.d. N(0, 1) embeddings, seeded):

- ``spacing_ulps``: the median width of an m-spacing of ``z`` in ulps of the dtype;
- ``spacing_rel_err``: the mean over all spacings of ``|s_low / s_64 − 1|``;
- ``entropy_rel_err_mean`` / ``_max``: over dimensions, ``|exp(H_low − H_64) − 1|``, the relative
  error of ``exp(H)`` (the width of the uniform distribution with that entropy). ``H`` itself is
  ≈ 0 at its maximum, so a ratio of entropies would be meaningless; to first order this is the
  error of ``H`` in nats;
- ``grad_rel_err_mean`` / ``_max``: over dimensions, ``‖g_low − g_64‖ / ‖g_64‖`` of the gradient of
  ``H_j`` with respect to its column of ``z``, taken as training receives it (in the input dtype).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from e2mc_cli.criteria import functional as Fn

__all__ = ["DTYPES", "RECIPE_SHAPES", "PrecisionRow", "RecipeShape", "entropy_errors", "entropy_precision"]

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class RecipeShape:
    """What the criterion of one shipped recipe sees: ``n`` samples per view (the whole batch,
    ``run.batch_size``, after the all-gather), ``d`` dimensions, the map ``Ψ`` (``space``)."""

    recipe: str
    n: int
    d: int
    space: str


# n: run.batch_size of each recipe (the authors ran 2 GPUs × 256 and all-gathered, also 512);
# d: the embedding E2MC reads (VICReg's 8192-d projector, SwAV's 128-d head, SimSiam's 2048-d
# projector; the fmnist bases' [model] sizes); space: the method's (sigmoid for VICReg).
RECIPE_SHAPES = (
    RecipeShape("vicreg-e2mc", 512, 8192, "hypercube"),
    RecipeShape("swav-e2mc", 512, 128, "hypersphere"),
    RecipeShape("simsiam-e2mc", 512, 2048, "hypersphere"),
    RecipeShape("barlowtwins-e2mc", 512, 8192, "hypercube"),
    RecipeShape("fmnist-vicreg-e2mc", 256, 512, "hypercube"),
    RecipeShape("fmnist-swav-e2mc", 256, 64, "hypersphere"),
    RecipeShape("fmnist-simsiam-e2mc", 256, 256, "hypersphere"),
    RecipeShape("mocov2-e2mc", 256, 128, "hypersphere"),  # MoCo v2's 128-d query head, batch 256
)
RECIPE_SHAPES += (RecipeShape("mocov3-e2mc", 512, 256, "hypersphere"),)  # MoCo v3's 256-d projector
RECIPE_SHAPES += (RecipeShape("dino-e2mc", 512, 256, "hypersphere"),)  # DINO's 256-d bottleneck


@dataclass
class PrecisionRow:
    recipe: str
    n: int
    d: int
    space: str
    dtype: str
    spacing_ulps: float
    spacing_rel_err: float
    entropy_rel_err_mean: float
    entropy_rel_err_max: float
    grad_rel_err_mean: float
    grad_rel_err_max: float


def _entropy_and_grad(z: torch.Tensor, space: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(H_j per dimension, ∂H_j/∂z in z's dtype, the scaled m-spacings)``; the arithmetic runs in
    float32 for half-precision ``z`` (as :class:`~e2mc_cli.criteria.base.Criterion` does), else in
    ``z``'s dtype."""
    leaf = z.detach().requires_grad_()
    x = leaf.float() if leaf.dtype in (torch.float16, torch.bfloat16) else leaf
    u = Fn.to_unit_cube(x, space)
    h = Fn.m_spacings_entropy(u)
    (grad,) = torch.autograd.grad(h.sum(), leaf)  # columns are independent: column j is ∂H_j/∂z_j
    return h.detach(), grad, Fn.m_spacings(u.detach())


def _ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of ``dtype``'s numbers around ``|x|`` (float64): ``eps · 2^(e−1)`` for ``|x| = f·2^e``."""
    _, exponent = torch.frexp(x.abs().clamp_min(torch.finfo(dtype).tiny))
    return torch.finfo(dtype).eps * torch.pow(2.0, exponent.double() - 1)


def spacing_ulps(z64: torch.Tensor, dtype: torch.dtype) -> float:
    """The median width of the m-spacings of ``z`` (per column) in ulps of ``dtype`` at their upper end."""
    n = z64.shape[0]
    m = round(n**0.5)
    zs = torch.sort(z64, dim=0).values
    lo, hi = zs[: n - m], zs[m:]
    return float(((hi - lo) / _ulp(torch.maximum(lo.abs(), hi.abs()), dtype)).median())


def entropy_errors(z64: torch.Tensor, space: str, dtype: torch.dtype) -> dict[str, float]:
    """The error measures of the module docstring for one float64 embedding ``z64`` (n × d)
    rounded to ``dtype``."""
    h64, g64, s64 = _entropy_and_grad(z64, space)
    h, g, s = _entropy_and_grad(z64.to(dtype), space)
    ent = (torch.exp(h.double() - h64) - 1).abs()
    grad = torch.linalg.vector_norm(g.double() - g64, dim=0) / torch.linalg.vector_norm(g64, dim=0)
    return {
        "spacing_ulps": spacing_ulps(z64, dtype),
        "spacing_rel_err": float((s.double() / s64 - 1).abs().mean()),
        "entropy_rel_err_mean": float(ent.mean()),
        "entropy_rel_err_max": float(ent.max()),
        "grad_rel_err_mean": float(grad.mean()),
        "grad_rel_err_max": float(grad.max()),
    }


def entropy_precision(
    shapes: Sequence[RecipeShape] | None = None,
    dtypes: Sequence[str] = ("bf16", "fp16", "fp32"),
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[PrecisionRow]:
    """One :class:`PrecisionRow` per shape (default :data:`RECIPE_SHAPES`) and dtype: the same
    N(0, 1) embedding (seeded by ``seed``) rounded to each dtype, against float64 (see the module
    docstring)."""
    rows = []
    for shape in RECIPE_SHAPES if shapes is None else shapes:
        if progress:
            progress(f"entropy precision {shape.recipe} n={shape.n} d={shape.d}")
        gen = torch.Generator().manual_seed(seed)
        z64 = torch.randn(shape.n, shape.d, generator=gen, dtype=torch.float64).to(device)
        for name in dtypes:
            errors = entropy_errors(z64, shape.space, DTYPES[name])
            rows.append(PrecisionRow(shape.recipe, shape.n, shape.d, shape.space, name, **errors))
    return rows
