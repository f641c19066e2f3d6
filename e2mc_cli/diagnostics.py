"""Embedding health: the statistics the papers use to tell a spread-out embedding from a collapsing
one, the figures of ``sslboost inspect``, and the :class:`HealthMonitor` of the training loop.

Every statistic is a small pure function of an embedding tensor ``z`` (n samples × d dimensions),
computed without gradient in float64 on ``z``'s device. Three views of the same embedding are used,
each where the papers measure it:

- the *squashed* embedding ``ž = Ψ(z)`` in the unit cube (E2MC's map, paper 002 §3.2: sigmoid for
  the hypercube methods, the Gaussian CDF for the hypersphere ones): marginal m-spacings entropy,
  mean |off-diagonal correlation|, log-determinant of the covariance;
- the *raw* embedding: effective rank (RankMe) and the singular-value spectrum;
- the *unit-norm* embedding ``u = z/‖z‖``: von Neumann entropy (paper 001), the centre-vector
  statistics of paper 004 and the nearest-neighbour distances of paper 002 Fig. 3.

``sslboost inspect`` measures the backbone features and the projector output (the embedding the
add-on criterion sees) with the method's Ψ for both, so models of one method compare on equal
terms. Backbone features come after a ReLU and lie in the positive orthant: their centre norm² is
high for every model and is no collapse signal by itself; read it on the projector output.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

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
from e2mc_cli.errors import UserError
from e2mc_cli.io import atomic_path, write_json_atomic

__all__ = [
    "LEVELS",
    "SPACES",
    "TABLE_ROWS",
    "HealthMonitor",
    "default_image_size",
    "effective_rank",
    "effective_rank_of",
    "embed_for_inspection",
    "embedding_stats",
    "histogram_overlap",
    "logdet_per_dim",
    "marginal_entropy",
    "mean_abs_offdiag_corr",
    "model_label",
    "neighbour_distances",
    "ordinal",
    "neighbour_separability",
    "plot_neighbour_histograms",
    "plot_pair_scatter",
    "plot_spectra",
    "run_inspect",
    "singular_spectrum",
    "squash",
    "stability_stats",
]

SPACES = ("hypercube", "hypersphere")
LOGDET_RIDGE = 1e-6
NEIGHBOUR_K = 100
HIST_BINS = 50


def ordinal(k: int) -> str:
    """1st, 2nd, 3rd, 4th, …, 11th, 12th, 13th, 21st, 100th."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


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
    """m-spacings entropy (Vasicek; paper 002 eq. 4) of each dimension of ``Ψ(z)``, ``Tensor[d]``.

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

    A second-order (Gaussian) entropy per dimension, as CorInfoMax's criterion (thesis 003):
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
    """Centre-vector statistics of paper 004 from two augmented views (rows = the same images).

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
    ``√(2 − 2 cos)``, in [0, 2]), as in the nearest-neighbour analysis paper 002 Fig. 3 takes
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
    """Paper 002 Fig. 3 as numbers: distances to the 1st and k-th neighbour, their means and the
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


# ------------------------------------------------------------------------------------ monitor


class HealthMonitor:
    """Cheap collapse watch for the training loop (papers 002 and 004).

    ``update(step, embeddings)`` takes the current batch's views (the embeddings the criterion
    sees) and returns ``{"health/entropy", "health/eff_rank", "health/centre_sq"}``: mean marginal
    entropy of ``Ψ(z)`` and effective rank, averaged over the views, and the centre norm² from the
    first two views (paper 004). It calls ``warn(message)`` once per run, the first time
    ``centre_sq`` rises above ``max(centre_threshold, (1 + start)/2)`` (all images drifting to one
    direction; a base whose embedding already starts above the threshold, e.g. a large common
    offset of unnormalised VICReg outputs, must get half-way from its start to 1), the effective rank
    falls below ``rank_fraction`` × its first measured value, or the embeddings are not finite
    (then the returned values are NaN; the monitor itself never raises on a bad batch).
    ``state_dict``/``load_state_dict`` carry the start rank and the warned flag across a resume.
    Call it on one process only under DDP.
    """

    def __init__(
        self,
        space: str,
        warn: Callable[[str], object] | None = None,
        *,
        centre_threshold: float = 0.9,
        rank_fraction: float = 0.5,
    ):
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, not {space!r}")
        self.space = space
        self.warn = warn if warn is not None else (lambda message: None)
        self.centre_threshold = centre_threshold
        self.rank_fraction = rank_fraction
        self.first_rank: float | None = None
        self.first_centre: float | None = None
        self.warned = False

    @torch.no_grad()
    def update(self, step: int, embeddings: Sequence[torch.Tensor]) -> dict[str, float]:
        views = [e.detach().flatten(1) for e in embeddings]
        if not views:
            raise ValueError("HealthMonitor.update needs at least one embedding tensor")
        if views[0].shape[0] < 2:  # one sample: nothing to measure
            nan = float("nan")
            return {"health/entropy": nan, "health/eff_rank": nan, "health/centre_sq": nan}
        if not all(bool(torch.isfinite(v).all()) for v in views):
            nan = float("nan")
            self._warn_once(f"step {step}: the embeddings contain NaN or infinite values")
            return {"health/entropy": nan, "health/eff_rank": nan, "health/centre_sq": nan}
        entropy = sum(float(marginal_entropy(v, self.space).mean()) for v in views) / len(views)
        rank = sum(effective_rank(v) for v in views) / len(views)
        centre = stability_stats(views[0], views[1] if len(views) > 1 else None)["centre_sq"]
        if self.first_rank is None:
            self.first_rank, self.first_centre = rank, centre
        centre_limit = max(self.centre_threshold, (1.0 + self.first_centre) / 2)
        reasons = []
        if centre > centre_limit:
            reasons.append(f"centre norm² {centre:.3f} > {centre_limit:.3g} (start {self.first_centre:.3f})")
        if rank < self.rank_fraction * self.first_rank:
            reasons.append(
                f"effective rank {rank:.1f} < {self.rank_fraction:g} × its start value {self.first_rank:.1f}"
            )
        if reasons:
            self._warn_once(
                f"step {step}: the embedding may be collapsing: {'; '.join(reasons)} "
                f"(marginal entropy {entropy:.3f})"
            )
        return {"health/entropy": entropy, "health/eff_rank": rank, "health/centre_sq": centre}

    def _warn_once(self, message: str) -> None:
        if not self.warned:
            self.warned = True
            self.warn(message)

    def state_dict(self) -> dict:
        return {"first_rank": self.first_rank, "first_centre": self.first_centre, "warned": self.warned}

    def load_state_dict(self, state: dict) -> None:
        self.first_rank = state.get("first_rank")
        self.first_centre = state.get("first_centre")
        if self.first_rank is not None and self.first_centre is None:
            self.first_centre = 0.0
        self.warned = bool(state.get("warned", False))


# -------------------------------------------------------------------------------------- plots


def _figure(nrows: int, ncols: int, w: float, h: float):
    from matplotlib.figure import Figure  # Agg canvas; no pyplot global state

    fig = Figure(figsize=(w * ncols, h * nrows), dpi=100, layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_neighbour_histograms(
    panels: Sequence[tuple[str, Sequence[tuple[str, dict]]]],
    path: str | os.PathLike,
    bins: int = HIST_BINS,
) -> None:
    """One row per model, one column per embedding level: histograms of the distance to the 1st
    (blue) and k-th (orange) neighbour (paper 002 Fig. 3), overlap in the title.

    ``panels`` = ``[(model label, [(level name, embedding_stats dict), ...]), ...]``.
    """
    ncols = max(len(levels) for _, levels in panels)
    fig, axes = _figure(len(panels), ncols, 4.2, 3.0)
    for r, (label, levels) in enumerate(panels):
        for c, (level, st) in enumerate(levels):
            ax = axes[r, c]
            d1, dk = st["_nn_d1"], st["_nn_dk"]
            edges = np.linspace(min(d1.min(), dk.min()), max(d1.max(), dk.max()) + 1e-12, bins + 1)
            ax.hist(d1, bins=edges, alpha=0.6, color="tab:blue", label="1st neighbour")
            ax.hist(dk, bins=edges, alpha=0.6, color="tab:orange", label=f"{ordinal(st['nn_k'])} neighbour")
            ax.set_title(f"{label}\n{level}: overlap {st['nn_overlap']:.3f}", fontsize=8)
            ax.set_xlabel("distance (unit-norm embeddings)", fontsize=8)
            ax.legend(fontsize=7)
        for c in range(len(levels), ncols):
            axes[r, c].set_visible(False)
    _save(fig, path)


def plot_pair_scatter(
    models: Sequence[tuple[str, np.ndarray]],
    labels: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    path: str | os.PathLike,
) -> None:
    """One row per model, one column per dimension pair: the 2-D marginal of the squashed embedding
    over that pair (paper 002 Fig. 2 c/d). Points are coloured by class label, identically in
    every row (same images, same order)."""
    fig, axes = _figure(len(models), len(pairs), 3.0, 3.0)
    labels = np.asarray(labels)
    n_cls = int(labels.max()) + 1 if labels.size else 1
    cmap = "tab10" if n_cls <= 10 else "tab20" if n_cls <= 20 else "viridis"
    for r, (label, zs) in enumerate(models):
        for c, (i, j) in enumerate(pairs):
            ax = axes[r, c]
            ax.scatter(zs[:, i], zs[:, j], c=labels, cmap=cmap, vmin=0, vmax=max(n_cls - 1, 1), s=3)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_aspect("equal")
            ax.set_title(f"{label}\ndims {i} vs {j}", fontsize=8)
    _save(fig, path)


def plot_spectra(
    panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]],
    path: str | os.PathLike,
) -> None:
    """Normalised singular values ``σ_i / Σσ`` (log scale) against their index, one panel per
    embedding level and one line per model. ``panels`` = ``[(level, [(model label, spectrum)])]``."""
    fig, axes = _figure(1, len(panels), 4.5, 3.2)
    for c, (level, lines) in enumerate(panels):
        ax = axes[0, c]
        for label, spectrum in lines:
            ax.semilogy(np.arange(1, len(spectrum) + 1), np.clip(spectrum, 1e-16, None), label=label)
        ax.set_title(f"{level}: singular-value spectrum", fontsize=9)
        ax.set_xlabel("index", fontsize=8)
        ax.set_ylabel("σ / Σσ", fontsize=8)
        ax.legend(fontsize=7)
    _save(fig, path)


# ------------------------------------------------------------------------------------ inspect

LEVELS = ("backbone", "projector")
# Scalar statistics in table order: (key, label, format).
TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("entropy_mean", "marginal entropy, mean (max 0)", ".3f"),
    ("entropy_worst", "marginal entropy, worst dim", ".3f"),
    ("abs_corr", "mean |off-diag corr|", ".3f"),
    ("logdet_per_dim", "log det(cov) / d", ".3f"),
    ("eff_rank", "effective rank", ".1f"),
    ("vne", "von Neumann entropy", ".3f"),
    ("centre_sq", "centre norm²", ".3f"),
    ("aug_mean_sq", "augmentation-mean norm²", ".3f"),
    ("residual_sq", "residual norm²", ".3f"),
    ("nn_d1_mean", "1st-neighbour distance", ".3f"),
    ("nn_dk_mean", "k-th-neighbour distance", ".3f"),
    ("nn_overlap", "neighbour-histogram overlap", ".3f"),
)


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def model_label(path: str, metadata: dict, names: Sequence[str]) -> str:
    """``file name (base+criterion)``; the parent folder is added when file names repeat."""
    p = os.path.normpath(path)
    name = os.path.basename(p)
    if sum(os.path.basename(os.path.normpath(n)) == name for n in names) > 1:
        name = os.path.join(os.path.basename(os.path.dirname(p)) or ".", name)
    tag = "+".join(x for x in (metadata.get("base", ""), metadata.get("criterion", "")) if x)
    return f"{name} ({tag})" if tag else name


def default_image_size(metadata: dict, native_small: bool = False) -> int:
    """The image size a checkpoint was trained at: the recipe's ``[views] image_size`` when the
    metadata records it, else 28 for the built-in Fashion-MNIST (``native_small``), else 224."""
    try:
        recipe = json.loads(metadata.get("recipe") or "{}")
    except (TypeError, json.JSONDecodeError):
        recipe = {}
    if isinstance(recipe, dict):
        for section in (recipe.get("views"), recipe.get("data"), recipe):
            if isinstance(section, dict) and isinstance(section.get("image_size"), int):
                return section["image_size"]
    return 28 if native_small else 224


class _InspectItems(torch.utils.data.Dataset):
    """``(evaluation view, augmented view a, augmented view b, label)`` for each chosen image."""

    def __init__(self, dataset, indices: Sequence[int], eval_tf, view_tf):
        self.dataset, self.indices, self.eval_tf, self.view_tf = dataset, list(indices), eval_tf, view_tf

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.dataset[self.indices[i]]
        views = self.view_tf(image)
        return self.eval_tf(image), views[0], views[1], int(label)


@torch.no_grad()
def embed_for_inspection(
    model,
    dataset,
    indices: Sequence[int],
    image_size: int,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    seed: int = 0,
    progress: Callable[[int, int], object] | None = None,
) -> dict[str, torch.Tensor]:
    """Backbone features and projector outputs (float32, on the CPU) of the evaluation view and of
    the method's first two augmented views of every image in ``indices``, plus the labels.

    The model runs in eval mode. Augmentations are seeded by ``seed``: every model given the same
    seed and image size sees the same views.
    """
    from e2mc_cli.data.augment import eval_transform
    from e2mc_cli.methods import view_transform

    items = _InspectItems(
        dataset, indices, eval_transform(image_size), view_transform(model.method, image_size)
    )
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    model.eval().to(device)
    keys = ("backbone", "projector", "backbone_a", "projector_a", "backbone_b", "projector_b")
    out: dict[str, list[torch.Tensor]] = {k: [] for k in (*keys, "labels")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for done, (x, va, vb, y) in enumerate(loader, start=1):
            for suffix, images in (("", x), ("_a", va), ("_b", vb)):
                feats = model.backbone(images.to(device, non_blocking=True))
                out["backbone" + suffix].append(feats.float().cpu())
                out["projector" + suffix].append(model.projector(feats).float().cpu())
            out["labels"].append(y)
            if progress is not None:
                progress(done, len(loader))
    return {k: torch.cat(v) for k, v in out.items()}


def _load(spec: str):
    from e2mc_cli.checkpoint import load_checkpoint

    path = Path(spec).expanduser()
    if path.is_file():
        return load_checkpoint(path)
    from e2mc_cli.zoo import resolve_base

    return resolve_base(spec)


def _precheck(spec: str) -> None:
    """Fail before any work on a missing file, a local file that is not a canonical checkpoint,
    or an unknown base name."""
    from e2mc_cli.checkpoint import FORMAT, read_metadata
    from e2mc_cli.zoo import get_spec
    from e2mc_cli.zoo.hf import is_hf

    path = Path(spec).expanduser()
    if path.is_file():
        fmt = read_metadata(path).get("format")
        if fmt != FORMAT:
            raise UserError(
                f"{spec}: not an sslboost checkpoint (metadata format={fmt!r}, expected {FORMAT!r}); "
                "convert official files with `sslboost convert`"
            )
    elif path.suffix in (".safetensors", ".pth", ".pt", ".ckpt") or os.sep in spec:
        raise UserError(f"{spec}: no such checkpoint file")
    elif not is_hf(spec):
        get_spec(spec)


def run_inspect(
    weights: Sequence[str],
    data: str,
    *,
    split: str = "val",
    image_size: int | None = None,
    max_samples: int = 2048,
    batch_size: int = 64,
    device: str = "cpu",
    num_workers: int = 0,
    seed: int = 0,
    k: int = NEIGHBOUR_K,
    bins: int = HIST_BINS,
    n_pairs: int = 3,
    out_dir: str | os.PathLike | None = None,
    progress: Callable[[str, int, int], object] | None = None,
) -> dict:
    """Embed one split with every checkpoint in ``weights`` and measure each embedding.

    Returns the JSON-ready report (``models`` in the order given, each with ``label`` and the
    statistics of its ``backbone`` and ``projector`` embeddings; see :func:`embedding_stats`).
    With ``out_dir``, writes ``inspect.json``, ``neighbours.png`` (paper 002 Fig. 3),
    ``scatter.png`` (Fig. 2 c/d: the same random dimension pairs of the squashed projector output
    for every model, points coloured by class) and ``spectrum.png``, each atomically.
    """
    from e2mc_cli.data.datasets import resolve_dataset
    from e2mc_cli.data.fmnist import FashionMNIST
    from e2mc_cli.methods import get_method_spec

    if not weights:
        raise UserError("give at least one --weights checkpoint")
    if max_samples < 4:
        raise UserError(f"--max-samples must be at least 4, got {max_samples}")
    if image_size is not None and image_size < 8:
        raise UserError(f"--image-size must be at least 8 px, got {image_size}")
    for spec in weights:
        _precheck(spec)
    dataset = resolve_dataset(data, split)
    n_total = len(dataset)
    if n_total < 4:
        raise UserError(f"--data {data}: the {split} split has {n_total} images; inspect needs at least 4")
    gen = torch.Generator().manual_seed(seed)
    if n_total > max_samples:
        indices = sorted(torch.randperm(n_total, generator=gen)[:max_samples].tolist())
    else:
        indices = list(range(n_total))
    n = len(indices)
    scatter_rows = np.random.default_rng(seed).permutation(n)[: min(n, 1000)]

    models: list[dict] = []
    squashed: list[np.ndarray] = []
    labels = None
    for spec in weights:
        ckpt = _load(spec)
        meta = dict(ckpt.metadata)
        label = model_label(spec, meta, weights)
        space = get_method_spec(ckpt.method).space
        px = image_size or default_image_size(meta, native_small=isinstance(dataset, FashionMNIST))
        model = ckpt.build_model()
        del ckpt
        emb = embed_for_inspection(
            model,
            dataset,
            indices,
            px,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            seed=seed,
            progress=None if progress is None else (lambda done, total, _l=label: progress(_l, done, total)),
        )
        del model
        labels = emb["labels"].numpy()
        entry = {
            "label": label,
            "weights": str(spec),
            "method": meta.get("method"),
            "arch": meta.get("arch"),
            "base": meta.get("base", ""),
            "criterion": meta.get("criterion", ""),
            "space": space,
            "image_size": px,
        }
        for level in LEVELS:
            entry[level] = embedding_stats(
                emb[level], space, (emb[level + "_a"], emb[level + "_b"]), k=k, bins=bins
            )
        squashed.append(squash(emb["projector"][scatter_rows].double(), space).float().numpy())
        models.append(entry)
        del emb

    report = {
        "data": str(data),
        "split": split,
        "n_samples": n,
        "seed": seed,
        "neighbour_k": min(k, n - 1),
        "histogram_bins": bins,
        "distance": "euclidean between L2-normalised embeddings",
        "models": [
            {
                key: (
                    {s: _finite_or_none(v) for s, v in value.items() if not s.startswith("_")}
                    if key in LEVELS
                    else value
                )
                for key, value in m.items()
            }
            for m in models
        ],
    }
    if out_dir is not None:
        out = Path(out_dir)
        d_min = min(s.shape[1] for s in squashed)
        perm = np.random.default_rng(seed).permutation(d_min)
        pairs = [(int(perm[2 * i]), int(perm[2 * i + 1])) for i in range(min(n_pairs, d_min // 2))]
        plot_neighbour_histograms(
            [(m["label"], [(level, m[level]) for level in LEVELS]) for m in models],
            out / "neighbours.png",
            bins,
        )
        if pairs:
            plot_pair_scatter(
                [(m["label"], s) for m, s in zip(models, squashed)],
                labels[scatter_rows],
                pairs,
                out / "scatter.png",
            )
        plot_spectra(
            [(level, [(m["label"], m[level]["_spectrum"]) for m in models]) for level in LEVELS],
            out / "spectrum.png",
        )
        report["scatter_pairs"] = pairs
        report["figures"] = ["neighbours.png", *(["scatter.png"] if pairs else []), "spectrum.png"]
        write_json_atomic(out / "inspect.json", report)
    return report
