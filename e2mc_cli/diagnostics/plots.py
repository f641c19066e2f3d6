"""The figures of ``sslboost inspect``: neighbour-distance histograms (Fig. 3 of the E2MC paper,
Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931), pair scatters of the
squashed embedding (Fig. 2 c/d) and singular-value spectra; and what every figure of sslboost
shares: the canvas (:func:`figure`), the atomic PNG write (:func:`save_png`) and the names of the
runs it compares (:func:`short_names`).

Each figure is drawn on its own Agg canvas (no pyplot global state) and written atomically as PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from e2mc_cli.diagnostics.stats import HIST_BINS
from e2mc_cli.io import atomic_path


def ordinal(k: int) -> str:
    """1st, 2nd, 3rd, 4th, …, 11th, 12th, 13th, 21st, 100th."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


# The map Ψ onto the unit cube of each embedding space (e2mc_cli.criteria.functional.to_unit_cube).
SQUASH_NAMES = {"hypercube": "sigmoid", "hypersphere": "Gaussian CDF"}
LEGEND_MAX_CLASSES = 20  # more classes than this get a colour bar instead of a legend


def short_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The last part of each path, with as many parent folders as make the names unique
    (``train``, ``train`` → ``e2mc-seed0/train``, ``vne-seed0/train``)."""
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    depth = [1] * len(parts)
    while True:
        names = [os.path.join(*ps[-d:]) for ps, d in zip(parts, depth)]
        clash = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(parts[i])]
        if not clash:
            return names
        for i in clash:
            depth[i] += 1


def figure(nrows: int, ncols: int, w: float, h: float):
    """A figure of ``nrows`` × ``ncols`` panels of ``w`` × ``h`` inches and its 2-D array of axes."""
    # Agg canvas, no pyplot global state; matplotlib loads with the first figure only (the training
    # loop imports this package for its statistics)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h * nrows), dpi=100, layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def save_png(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG, atomically; the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


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
    fig, axes = figure(len(panels), ncols, 4.2, 3.0)
    for r, (label, levels) in enumerate(panels):
        for c, (level, st) in enumerate(levels):
            ax = axes[r, c]
            d1, dk = st["_nn_d1"], st["_nn_dk"]
            edges = np.linspace(min(d1.min(), dk.min()), max(d1.max(), dk.max()) + 1e-12, bins + 1)
            ax.hist(d1, bins=edges, alpha=0.6, color="tab:blue", label="1st neighbour")
            ax.hist(dk, bins=edges, alpha=0.6, color="tab:orange", label=f"{ordinal(st['nn_k'])} neighbour")
            ax.set_title(f"{label}\n{level}: overlap {st['nn_overlap']:.3f}", fontsize=8)
            ax.set_xlabel("distance (unit-norm embeddings)", fontsize=8)
            ax.set_ylabel("images", fontsize=8)
            ax.legend(fontsize=7)
        for c in range(len(levels), ncols):
            axes[r, c].set_visible(False)
    save_png(fig, path)


def _class_key(fig, axes, cmap: str, n_cls: int, class_names: Sequence[str] | None) -> None:
    """A legend of the class colours (a colour bar of class indices beyond 20 classes)."""
    import matplotlib
    from matplotlib.lines import Line2D

    colours = matplotlib.colormaps[cmap]
    norm = matplotlib.colors.Normalize(0, max(n_cls - 1, 1))
    if n_cls > LEGEND_MAX_CLASSES:
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm, colours), ax=axes, shrink=0.6)
        bar.set_label("class index", fontsize=8)
        return
    names = list(class_names or [])
    handles = [
        Line2D(
            [], [], marker="o", ls="", color=colours(norm(k)), label=names[k] if k < len(names) else str(k)
        )
        for k in range(n_cls)
    ]
    fig.legend(handles=handles, title="class", fontsize=7, title_fontsize=8, loc="outside right upper")


def plot_pair_scatter(
    models: Sequence[tuple[str, np.ndarray]],
    labels: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    path: str | os.PathLike,
    *,
    spaces: Sequence[str | None] | None = None,
    class_names: Sequence[str] | None = None,
) -> None:
    """One row per model, one column per dimension pair: the 2-D marginal of the squashed projector
    output Ψ(z) over that pair (the E2MC paper Fig. 2 c/d). ``models`` = ``[(label, Ψ(z))]``;
    ``spaces`` (one per model) names each Ψ (sigmoid on the hypercube, Gaussian CDF on the
    hypersphere). Points are coloured by class label, identically in every row (same images, same
    order), with a legend of ``class_names``."""
    fig, axes = figure(len(models), len(pairs), 3.0, 3.0)
    labels = np.asarray(labels)
    n_cls = int(labels.max()) + 1 if labels.size else 1
    cmap = "tab10" if n_cls <= 10 else "tab20" if n_cls <= 20 else "viridis"
    for r, ((label, zs), space) in enumerate(zip(models, spaces or [None] * len(models))):
        psi = f", Ψ = {SQUASH_NAMES.get(space, space)}" if space else ""
        for c, (i, j) in enumerate(pairs):
            ax = axes[r, c]
            ax.scatter(zs[:, i], zs[:, j], c=labels, cmap=cmap, vmin=0, vmax=max(n_cls - 1, 1), s=3)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_aspect("equal")
            ax.set_title(f"{label}\nprojector output{psi}", fontsize=8)
            ax.set_xlabel(f"Ψ(z) dim {i}", fontsize=8)
            ax.set_ylabel(f"Ψ(z) dim {j}", fontsize=8)
    _class_key(fig, axes, cmap, n_cls, class_names)
    fig.suptitle("projector output z mapped onto [0, 1] by E2MC's Ψ, pairs of dimensions", fontsize=9)
    save_png(fig, path)


def plot_spectra(
    panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]],
    path: str | os.PathLike,
) -> None:
    """Normalised singular values ``σ_i / Σσ`` (log scale) against their index, one panel per
    embedding level and one line per model. ``panels`` = ``[(level, [(model label, spectrum)])]``."""
    fig, axes = figure(1, len(panels), 4.5, 3.2)
    for c, (level, lines) in enumerate(panels):
        ax = axes[0, c]
        for label, spectrum in lines:
            ax.semilogy(np.arange(1, len(spectrum) + 1), np.clip(spectrum, 1e-16, None), label=label)
        ax.set_title(f"{level}: singular-value spectrum", fontsize=9)
        ax.set_xlabel("index", fontsize=8)
        ax.set_ylabel("σ / Σσ", fontsize=8)
        ax.legend(fontsize=7)
    save_png(fig, path)
