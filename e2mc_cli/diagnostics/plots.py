"""The figures of ``sslboost inspect``: neighbour-distance histograms (Fig. 3 of the E2MC paper,
Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931), pair scatters of the
squashed embedding (Fig. 2 c/d) and singular-value spectra.

Each figure is drawn on its own Agg canvas (no pyplot global state) and written atomically as PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from e2mc_cli.diagnostics.stats import HIST_BINS
from e2mc_cli.io import atomic_path


def ordinal(k: int) -> str:
    """1st, 2nd, 3rd, 4th, …, 11th, 12th, 13th, 21st, 100th."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _figure(nrows: int, ncols: int, w: float, h: float):
    # Agg canvas, no pyplot global state; matplotlib loads with the first figure only (the training
    # loop imports this package for its statistics)
    from matplotlib.figure import Figure

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
    (blue) and k-th (orange) neighbour (the E2MC paper Fig. 3), overlap in the title.

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
    over that pair (the E2MC paper Fig. 2 c/d). Points are coloured by class label, identically in
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

