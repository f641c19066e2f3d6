"""Pure tensor math behind the add-on criteria and the embedding diagnostics.

Every function takes embeddings ``x`` of shape ``(n, d)`` (n samples, d dimensions) and returns
tensors that stay on ``x``'s device and in its dtype, except where a docstring says otherwise
(log-determinants and eigenvalue problems run in float64). Nothing here keeps state, knows
about methods, or all-gathers: the modules in :mod:`e2mc_cli.criteria` do that.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = [
    "VIEW_REDUCTIONS",
    "reduce_views",
    "to_unit_cube",
    "m_spacings",
    "m_spacings_entropy",
    "offdiag_cov_penalty",
    "variance_hinge",
    "uniformity",
    "nuclear_norm",
    "singular_values",
    "effective_rank",
    "von_neumann_entropy",
    "psd_logdet",
    "nn_entropy",
    "rank_surrogate",
    "RANK_VARIANTS",
    "standardize",
]

_SQRT2 = math.sqrt(2.0)

VIEW_REDUCTIONS = ("mean", "sum")


def reduce_views(per_view: torch.Tensor, reduction: str) -> torch.Tensor:
    """Combine one value per view (dim 0 of ``per_view``) by ``"mean"`` or ``"sum"``.

    The E2MC paper's pseudocode sums its entropy over the two views (Appendix A) and Eq. B.3
    sums the uniformity term; the authors' training scripts (``main_*_ent_ft.py``,
    ``main_swav_unif_ft.py``, https://github.com/deepc94/e2mc) average both over the views.
    """
    if reduction == "mean":
        return per_view.mean(dim=0)
    if reduction == "sum":
        return per_view.sum(dim=0)
    raise ValueError(f"view reduction must be one of {', '.join(VIEW_REDUCTIONS)}, not {reduction!r}")


def to_unit_cube(x: torch.Tensor, space: str) -> torch.Tensor:
    """E2MC's map Ψ onto the unit cube (Chakraborty et al., AISTATS 2025, Appendix A).

    ``"hypercube"``: ``sigmoid(x)`` (methods that do not normalise their embeddings, VICReg);
    ``"hypersphere"``: the standard Gaussian CDF ``½(1 + erf(x/√2))`` (SwAV, SimSiam), which maps
    N(0, 1) data to U[0, 1].
    """
    if space == "hypercube":
        return torch.sigmoid(x)
    if space == "hypersphere":
        return 0.5 * (1.0 + torch.erf(x / _SQRT2))
    raise ValueError(f"space must be 'hypercube' or 'hypersphere', not {space!r}")


def m_spacings(x: torch.Tensor) -> torch.Tensor:
    """The scaled m-spacings ``(n+1)/m · (x₍ᵢ₊ₘ₎ − x₍ᵢ₎)``, ``i = 1 … n−m``, of each column,
    ``m = round(√n)``: ``Tensor[..., n−m, d]`` (samples along dim −2, sorted per column)."""
    n = x.shape[-2]
    m = round(math.sqrt(n))
    if n <= m:
        raise ValueError(f"m-spacings entropy needs more than {m} samples, got {n}")
    xs = torch.sort(x, dim=-2).values
    return (xs[..., m:, :] - xs[..., : n - m, :]) * ((n + 1) / m)


def m_spacings_entropy(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Vasicek's m-spacings estimate of each column's differential entropy, ``Tensor[d]``.

    With ``m = round(√n)`` and the order statistics ``x₍₁₎ ≤ … ≤ x₍ₙ₎`` of one column,
    ``H = 1/(n−m) · Σ_i log((n+1)/m · (x₍ᵢ₊ₘ₎ − x₍ᵢ₎) + eps)`` (Vasicek 1976,
    https://doi.org/10.1111/j.2517-6161.1976.tb01566.x, as E2MC uses it, Appendix A).
    Samples are expected in [0, 1] (the result for U[0, 1] is ≈ 0, the maximum on the unit
    interval; for U[0, w] it is ≈ log w). ``x`` may carry leading batch dimensions: the samples
    are always along dim −2.
    """
    spacings = m_spacings(x)
    return torch.log(spacings + eps).sum(dim=-2) / spacings.shape[-2]


class _GramFrobeniusSq(torch.autograd.Function):
    """``‖x xᵀ‖_F² = ‖xᵀ x‖_F²`` from the smaller Gram matrix ``G``; gradient ``4·G x`` (one product).

    Plain autograd would differentiate both factors of ``x xᵀ`` separately (two products); the
    symmetric closed form needs one, which halves the cost of this part of the backward pass.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        wide = x.shape[-2] < x.shape[-1]
        gram = x @ x.transpose(-1, -2) if wide else x.transpose(-1, -2) @ x
        ctx.save_for_backward(x, gram)
        ctx.wide = wide
        return gram.pow(2).sum(dim=(-2, -1))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, gram = ctx.saved_tensors
        gx = gram @ x if ctx.wide else x @ gram
        return (4.0 * grad)[..., None, None] * gx


def offdiag_cov_penalty(x: torch.Tensor) -> torch.Tensor:
    """``Σ_{j≠k} K_jk² / d`` with ``K`` the sample covariance (``n − 1``) of ``x`` (n × d).

    The estimator of VICReg's covariance term and E2MC's ``C(ž)``. It never forms the d × d
    matrix when n < d: with ``x̃ = x − mean(x)``, ``Σ_{j≠k} (x̃ᵀx̃)_jk² = ‖x̃ᵀx̃‖_F² − Σ_j (x̃ᵀx̃)_jj²``,
    ``‖x̃ᵀx̃‖_F = ‖x̃x̃ᵀ‖_F`` and ``(x̃ᵀx̃)_jj = Σ_i x̃_ij²``, so the n × n Gram matrix is enough.
    Leading batch dimensions are allowed (one value per batch entry).
    """
    n, d = x.shape[-2], x.shape[-1]
    xc = x - x.mean(dim=-2, keepdim=True)
    total = _GramFrobeniusSq.apply(xc)  # the n × n Gram when n < d, else the d × d one
    diag = xc.pow(2).sum(dim=-2).pow(2).sum(dim=-1)
    return (total - diag).clamp_min(0.0) / ((n - 1) ** 2 * d)


def variance_hinge(x: torch.Tensor, target: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg's variance term ``mean_j relu(target − √(Var(x_j) + eps))`` (Bardes et al. 2022)."""
    std = torch.sqrt(x.var(dim=-2) + eps)
    return F.relu(target - std).mean(dim=-1)


def _sq_dists(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances (n × n) from the Gram matrix, clamped at 0."""
    sq = x.pow(2).sum(dim=-1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    return d2.clamp_min(0.0)


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola's uniformity ``log mean_{p≠q} exp(−t‖x_p − x_q‖²)`` on the rows of ``x``.

    Computed with a log-sum-exp over the off-diagonal pairs (no square root, so duplicated rows
    have a finite gradient). The caller L2-normalises first when it wants the hypersphere version.
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError("uniformity needs at least 2 samples")
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    logits = (-t * _sq_dists(x)).masked_fill(eye, float("-inf"))  # exp(−∞) = 0: pairs p ≠ q only
    return torch.logsumexp(logits.flatten(), dim=0) - math.log(n * (n - 1))


class _GramSingularValues(torch.autograd.Function):
    """σ(A) from the eigenvalues of the smaller Gram matrix, in float64; dσ_i/dA = u_i v_iᵀ."""

    @staticmethod
    def forward(ctx, a: torch.Tensor) -> torch.Tensor:
        wide = a.shape[-2] <= a.shape[-1]
        a64 = a.double()
        gram = a64 @ a64.transpose(-1, -2) if wide else a64.transpose(-1, -2) @ a64
        lam, q = torch.linalg.eigh(gram)  # ascending
        sigma = lam.clamp_min(0.0).sqrt().flip(-1)
        q = q.flip(-1)
        ctx.save_for_backward(a64, q, sigma)
        ctx.wide, ctx.dtype = wide, a.dtype
        return sigma.to(a.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        a64, q, sigma = ctx.saved_tensors
        # A = U Σ Vᵀ; with q = U (wide) the right vectors are v_i = Aᵀu_i/σ_i, so
        # Σ_i g_i u_i v_iᵀ = U diag(g/σ) Uᵀ A (wide) or A V diag(g/σ) Vᵀ (tall). Directions with
        # σ_i ≈ 0 are left out (a valid subgradient there), which keeps the gradient finite.
        tol = sigma[..., :1] * max(a64.shape[-2:]) * torch.finfo(torch.float64).eps
        scale = torch.where(sigma > tol, grad.double() / sigma.clamp_min(1e-300), torch.zeros_like(sigma))
        proj = (q * scale.unsqueeze(-2)) @ q.transpose(-1, -2)
        ga = proj @ a64 if ctx.wide else a64 @ proj
        return ga.to(ctx.dtype)


def singular_values(x: torch.Tensor) -> torch.Tensor:
    """Singular values of ``x`` (descending, ``min(n, d)`` of them), with a finite gradient.

    Computed as the square roots of the eigenvalues of the smaller Gram matrix (``x xᵀ`` or
    ``xᵀ x``) in float64, which for a 512 × 8192 batch is far cheaper than a full SVD; the
    gradient ``Σ_i g_i u_i v_iᵀ`` drops directions whose singular value is numerically zero.
    """
    return _GramSingularValues.apply(x)


def nuclear_norm(x: torch.Tensor) -> torch.Tensor:
    """``‖x‖_* = Σ σ_i``, the sum of the singular values."""
    return singular_values(x).sum(dim=-1)


def effective_rank(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """RankMe's effective rank ``exp(H(p))`` with ``p = σ / Σσ`` over the singular values of ``x``.

    Between 1 (rank one) and ``min(n, d)`` (all singular values equal); ``eps`` guards the logs.
    """
    s = singular_values(x.double() if x.dtype in (torch.float16, torch.bfloat16) else x)
    p = s / (s.sum(dim=-1, keepdim=True) + eps)
    h = -(p * torch.log(p + eps)).sum(dim=-1)
    return torch.exp(h).to(x.dtype if x.is_floating_point() else torch.float32)


def von_neumann_entropy(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Von Neumann entropy ``S(ρ) = −Σ λ log λ`` of ``ρ = uᵀu / n``, ``u`` = rows of ``x`` L2-normalised.

    ``ρ`` is uncentred with trace 1, so ``0 ≤ S ≤ log min(n, d)``; ``n`` orthonormal rows give
    ``log n``. The n × n Gram ``u uᵀ / n`` has the same non-zero spectrum and is used when n < d.
    The Gram product runs in the input's precision, the eigenvalue problem in float64;
    eigenvalues are clamped at ``eps`` (the von Neumann entropy bound of the ICLR 2022 submission
    *Formulating a Non-contrastive Loss as a Difference of Entropies*).
    """
    n, d = x.shape
    u = F.normalize(x, dim=1)
    rho = (u @ u.T if n < d else u.T @ u).double() / n
    lam = torch.linalg.eigvalsh(rho).clamp_min(eps)
    return -(lam * torch.log(lam)).sum().to(x.dtype)


def psd_logdet(r: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """``log det(r + eps·I)`` of a symmetric positive semi-definite matrix, in float64.

    Cholesky first (``2 Σ log L_ii``); if it fails (numerically not positive definite) the
    eigenvalues from ``eigvalsh``, clamped at ``max(eps, 1e-300)``, are used instead. Returns float64.
    """
    r = r.double()
    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
    a = 0.5 * (r + r.transpose(-1, -2)) + eps * eye
    chol, info = torch.linalg.cholesky_ex(a)
    if not bool((info != 0).any()):
        return 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(dim=-1)
    lam = torch.linalg.eigvalsh(a).clamp_min(max(eps, 1e-300))
    return torch.log(lam).sum(dim=-1)


def nn_entropy(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Nearest-neighbour entropy surrogate ``mean_b log(min_{i≠b} ‖x_b − x_i‖ + eps)`` (SimMER).

    Larger when the rows are spread out (a Kozachenko–Leonenko estimate up to constants). The
    neighbour is chosen without gradient; the distance to it carries the gradient to both rows
    (equal to the gradient of the minimum), and is finite for duplicated rows.
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError("nearest-neighbour entropy needs at least 2 samples")
    with torch.no_grad():
        d2 = _sq_dists(x.detach())
        d2.fill_diagonal_(float("inf"))
        nn_index = d2.argmin(dim=1)
    dist = torch.linalg.vector_norm(x - x[nn_index], dim=1)
    return torch.log(dist + eps).mean()


RANK_VARIANTS = ("nuclear", "tlsm", "nuclear_l2", "nuclear_fro")


def rank_surrogate(x: torch.Tensor, variant: str = "nuclear", eps: float = 1e-12) -> torch.Tensor:
    """A rank surrogate to maximise (SimMER), ``r = min(n, d)``, ``σ`` the singular values of ``x``.

    ``"nuclear"`` (L_R2): ``‖x‖_* = Σσ``; ``"tlsm"`` (L_R1, total least squares minimum): ``σ_r``,
    the smallest of the r singular values; ``"nuclear_l2"`` (L_R3): ``‖x‖_* / (r‖x‖₂)``;
    ``"nuclear_fro"`` (L_R4): ``(‖x‖_* / ‖x‖_F)² / r``. The last two are scale-free, in [1/r, 1].
    """
    s = singular_values(x)
    r = s.shape[-1]
    if variant == "nuclear":
        return s.sum(dim=-1)
    if variant == "tlsm":
        return s[..., -1]
    if variant == "nuclear_l2":
        return s.sum(dim=-1) / (r * s[..., 0] + eps)
    if variant == "nuclear_fro":
        fro_sq = s.pow(2).sum(dim=-1)
        return s.sum(dim=-1).pow(2) / (fro_sq + eps) / r
    raise ValueError(f"rank variant must be one of {', '.join(RANK_VARIANTS)}, not {variant!r}")


def standardize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-column ``(x − mean) / √(var + eps)`` (biased variance), a BatchNorm without affine."""
    mean = x.mean(dim=0, keepdim=True)
    var = x.var(dim=0, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)
