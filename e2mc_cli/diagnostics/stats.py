"""Embedding statistics: the pure functions the papers use to tell a spread-out embedding from a
collapsing one.

Every statistic is a small pure function of an embedding tensor ``z`` (n samples × d dimensions),
computed without gradient in float64 on ``z``'s device. Three views of the same embedding are used,
each where the papers measure it:

- the *squashed* embedding ``ž = Ψ(z)`` in the unit cube (E2MC's map, §3.2 of the E2MC paper,
  Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931: sigmoid for
  the hypercube methods, the Gaussian CDF for the hypersphere ones): marginal m-spacings entropy,
  mean |off-diagonal correlation|, log-determinant of the covariance;
- the *raw* embedding: effective rank (RankMe) and the singular-value spectrum;
- the *unit-norm* embedding ``u = z/‖z‖``: von Neumann entropy (*Formulating a Non-contrastive Loss
  as a Difference of Entropies Using a Von Neumann Entropy Bound*, submitted to ICLR 2022), the
  centre-vector statistics of Jha et al. (*The Common Stability Mechanism behind most
  Self-Supervised Learning Approaches*, arXiv 2024, https://arxiv.org/abs/2402.14957) and the
  nearest-neighbour distances of Fig. 3 of the E2MC paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from e2mc_cli.criteria import functional as CF
from e2mc_cli.criteria.functional import (
    m_spacings_entropy,
    psd_logdet,
    to_unit_cube,
    von_neumann_entropy,
)

SPACES = ("hypercube", "hypersphere")
LOGDET_RIDGE = 1e-6
NEIGHBOUR_K = 100
HIST_BINS = 50


def _f64(z: torch.Tensor) -> torch.Tensor:
    if z.ndim != 2:
        raise ValueError(f"expected an (n, d) embedding matrix, got shape {tuple(z.shape)}")
    return z.detach().to(torch.float64)


def squash(z: torch.Tensor, space: str | None) -> torch.Tensor:
    """E2MC's Ψ (the criterion's own :func:`~e2mc_cli.criteria.functional.to_unit_cube`);
    ``space=None`` leaves data that already lies in [0, 1] unchanged."""
    return z if space is None else to_unit_cube(z, space)


# --------------------------------------------------------------------------- squashed statistics


@torch.no_grad()
def marginal_entropy(z: torch.Tensor, space: str | None) -> torch.Tensor:
    """m-spacings entropy (Vasicek; eq. 4 of the E2MC paper) of each dimension of ``Ψ(z)``, ``Tensor[d]``.

    0 is the maximum (a uniform marginal on [0, 1]); a marginal squeezed into an interval of width
    ``w`` scores ≈ ``log w``; a constant dimension scores ``log(1e-7) ≈ −16``.
    """
    return m_spacings_entropy(squash(_f64(z), space))


@torch.no_grad()
def mean_abs_offdiag_corr(x: torch.Tensor, chunk: int = 1024) -> float:
    """``mean_{j≠k} |corr(x_j, x_k)|`` (Pearson) over the non-constant columns of ``x``.

    0 for decorrelated dimensions, 1 when every dimension is a copy of one signal. The d × d matrix
    is formed ``chunk`` rows at a time. Columns with zero variance (dead units) have no correlation
    and are left out; NaN when fewer than two columns vary.
    """
    x = _f64(x)
    xc = x - x.mean(dim=0)
    std = xc.pow(2).sum(dim=0).sqrt()
    keep = std > 1e-12 * float(std.max().clamp_min(1.0))
    xs = xc[:, keep] / std[keep]
    d = xs.shape[1]
    if d < 2:
        return float("nan")
    total = 0.0
    for j0 in range(0, d, chunk):
        c = xs[:, j0 : j0 + chunk].T @ xs  # rows j0.. of the correlation matrix
        total += float(c.abs().sum()) - float(c.diagonal(offset=j0).abs().sum())
    return total / (d * (d - 1))


@torch.no_grad()
def logdet_per_dim(x: torch.Tensor, ridge: float = LOGDET_RIDGE) -> float:
    """``log det(K + ridge·I) / d`` with ``K`` the sample covariance (``n − 1``) of ``x``, in float64.

    A second-order (Gaussian) entropy per dimension, as CorInfoMax's criterion (Özsoy, *Self-Supervised
    Learning with an Information Maximization Criterion*, M.Sc. thesis, Koç University, 2022):
    ``log w²`` for d independent columns of variance ``w²``. When ``n ≤ d`` the covariance has rank
    < d and the ``ridge`` sets the floor of the missing directions; Sylvester's identity
    ``det(rI_d + AᵀA) = r^(d−n) det(rI_n + AAᵀ)`` then gives the same value from the n × n Gram.
    """
    x = _f64(x)
    n, d = x.shape
    xc = x - x.mean(dim=0)
    if n < d:
        ld = psd_logdet(xc @ xc.T / (n - 1), eps=ridge) + (d - n) * math.log(ridge)
    else:
        ld = psd_logdet(xc.T @ xc / (n - 1), eps=ridge)
    return float(ld) / d


# ----------------------------------------------------------------------------- raw / unit norm


@torch.no_grad()
def singular_spectrum(z: torch.Tensor) -> torch.Tensor:
    """Singular values of ``z`` (descending, float64), from the smaller Gram matrix as
    :func:`~e2mc_cli.criteria.functional.singular_values`."""
    return CF.singular_values(_f64(z))


def effective_rank_of(spectrum: torch.Tensor, eps: float = 1e-12) -> float:
    """RankMe's effective rank ``exp(H(p))``, ``p = σ / Σσ``, of a precomputed spectrum:
    1 for rank one, ``k`` for k equal singular values, at most ``min(n, d)``."""
    p = spectrum / (spectrum.sum() + eps)
    return float(torch.exp(-(p * torch.log(p + eps)).sum()))


@torch.no_grad()
def effective_rank(z: torch.Tensor) -> float:
    """Effective rank (RankMe) of the raw embedding ``z``
    (:func:`~e2mc_cli.criteria.functional.effective_rank` in float64)."""
    return float(CF.effective_rank(_f64(z)))


@torch.no_grad()
def stability_stats(z_a: torch.Tensor, z_b: torch.Tensor | None = None) -> dict[str, float]:
    """Centre-vector statistics of Jha et al. (2024) from two augmented views (rows = the same images).

    With unit-norm views ``u_a, u_b`` and ``G = u_a u_bᵀ``: ``aug_mean_sq = mean(diag G)`` estimates
    ``E_x‖E_ω u‖²`` (squared norm of each image's augmentation mean), ``centre_sq`` = mean of the
    off-diagonal of ``G`` estimates ``‖s‖²`` with ``s = E_x E_ω u`` the centre vector, and
    ``residual_sq = aug_mean_sq − centre_sq = E_x‖E_ω u − s‖²``. Both estimates are unbiased
    because the two views are independent given the image. Collapse ⇔ ``centre_sq → 1``
    (all images share one direction); random directions give ``centre_sq ≈ 0``. Without ``z_b``
    one view stands for both: ``centre_sq`` is still unbiased, ``aug_mean_sq`` is 1.
    """
    u_a = F.normalize(_f64(z_a), dim=1)
    u_b = u_a if z_b is None else F.normalize(_f64(z_b), dim=1)
    n = u_a.shape[0]
    if u_b.shape != u_a.shape:
        raise ValueError(f"views differ in shape: {tuple(u_a.shape)} vs {tuple(u_b.shape)}")
    if n < 2:
        raise ValueError("stability statistics need at least 2 samples")
    diag = (u_a * u_b).sum(dim=1).sum()
    total = u_a.sum(dim=0) @ u_b.sum(dim=0)  # Σ_ij G_ij without forming G
    aug = float(diag) / n
    centre = float(total - diag) / (n * (n - 1))
    return {"aug_mean_sq": aug, "centre_sq": centre, "residual_sq": aug - centre}


@torch.no_grad()
def neighbour_distances(
    z: torch.Tensor, ks: Sequence[int] = (1, NEIGHBOUR_K), chunk: int = 1024
) -> dict[int, np.ndarray]:
    """Distance of every row to its k-th nearest other row, for each ``k`` in ``ks``.

    Distances are Euclidean between the L2-normalised rows (chord length on the unit sphere,
    ``√(2 − 2 cos)``, in [0, 2]), as in the nearest-neighbour analysis Fig. 3 of the E2MC paper takes
    from Sablayrolles et al. (2018), whose descriptors live on the sphere. A row is never its own
    neighbour. ``k`` larger than ``n − 1`` is an error.
    """
    u = F.normalize(_f64(z), dim=1)
    n = u.shape[0]
    kmax = max(ks)
    if kmax > n - 1:
        raise ValueError(f"the {kmax}-th neighbour needs more than {kmax} samples, got {n}")
    out = {k: np.empty(n) for k in ks}
    for i0 in range(0, n, chunk):
        sim = u[i0 : i0 + chunk] @ u.T
        rows = torch.arange(sim.shape[0], device=sim.device)
        sim[rows, rows + i0] = -math.inf
        top = sim.topk(kmax, dim=1).values  # descending similarity = ascending distance
        dist = (2.0 - 2.0 * top).clamp_min(0.0).sqrt().cpu().numpy()
        for k in ks:
            out[k][i0 : i0 + sim.shape[0]] = dist[:, k - 1]
    return out


def histogram_overlap(a: np.ndarray, b: np.ndarray, bins: int = HIST_BINS) -> float:
    """Overlap coefficient ``Σ_bins min(p, q)`` of the normalised histograms of ``a`` and ``b``.

    Both histograms use the same ``bins`` equal-width bins spanning ``[min(a ∪ b), max(a ∪ b)]``;
    1 for identical samples, 0 when no bin holds values of both.
    """
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    if hi <= lo:
        return 1.0
    edges = np.linspace(lo, hi, bins + 1)
    p = np.histogram(a, bins=edges)[0] / a.size
    q = np.histogram(b, bins=edges)[0] / b.size
    return float(np.minimum(p, q).sum())


def neighbour_separability(z: torch.Tensor, k: int = NEIGHBOUR_K, bins: int = HIST_BINS) -> dict:
    """Fig. 3 of the E2MC paper as numbers: distances to the 1st and k-th neighbour, their means and the
    overlap of their histograms (smaller = points better separated).

    Overlap is large when the density of points varies across the embedding: the k-th neighbour of
    a point in a dense region is then closer than the 1st neighbour of a point in a sparse one.
    A maximum-entropy (uniform) embedding has even density, narrow histograms and little overlap.
    Uses ``k = min(k, n − 1)``. The distance arrays are returned for plotting (``"d1"``, ``"dk"``).
    """
    n = z.shape[0]
    k = min(k, n - 1)
    dist = neighbour_distances(z, ks=(1, k))
    d1, dk = dist[1], dist[k]
    return {
        "k": k,
        "d1_mean": float(d1.mean()),
        "dk_mean": float(dk.mean()),
        "overlap": histogram_overlap(d1, dk, bins=bins),
        "d1": d1,
        "dk": dk,
    }


@torch.no_grad()
def embedding_stats(
    z: torch.Tensor,
    space: str | None,
    views: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    k: int = NEIGHBOUR_K,
    bins: int = HIST_BINS,
) -> dict:
    """Every statistic of one embedding matrix, as a flat dict of floats (plus arrays for plots).

    ``views`` (two augmented views of the same images) feed :func:`stability_stats`; without them
    those keys are absent. Keys: ``entropy_mean``, ``entropy_worst`` (lowest dimension),
    ``entropy_worst_dim``, ``abs_corr``, ``logdet_per_dim`` (on ``Ψ(z)``); ``eff_rank``
    (on ``z``); ``vne`` (von Neumann entropy); ``aug_mean_sq``, ``centre_sq``, ``residual_sq``;
    ``nn_k``, ``nn_d1_mean``, ``nn_dk_mean``, ``nn_overlap``; arrays ``_spectrum`` (σ / Σσ),
    ``_nn_d1``, ``_nn_dk``. Keys starting with ``_`` are not scalar.
    """
    z = _f64(z)
    zs = squash(z, space)
    h = m_spacings_entropy(zs)
    sv = singular_spectrum(z)
    out: dict = {
        "n": z.shape[0],
        "d": z.shape[1],
        "entropy_mean": float(h.mean()),
        "entropy_worst": float(h.min()),
        "entropy_worst_dim": int(h.argmin()),
        "abs_corr": mean_abs_offdiag_corr(zs),
        "logdet_per_dim": logdet_per_dim(zs),
        "eff_rank": effective_rank_of(sv),
        "vne": float(von_neumann_entropy(z)),
    }
    if views is not None:
        out.update(stability_stats(*views))
    nn_stats = neighbour_separability(z, k=k, bins=bins)
    out.update(
        nn_k=nn_stats["k"],
        nn_d1_mean=nn_stats["d1_mean"],
        nn_dk_mean=nn_stats["dk_mean"],
        nn_overlap=nn_stats["overlap"],
    )
    out["_spectrum"] = (sv / sv.sum()).cpu().numpy()
    out["_nn_d1"], out["_nn_dk"] = nn_stats["d1"], nn_stats["dk"]
    return out
