"""Embedding health: the statistics the papers use to tell a spread-out embedding from a collapsing
one (:mod:`~e2mc_cli.diagnostics.stats`, pure), the figures (:mod:`~e2mc_cli.diagnostics.plots`)
and the ``sslboost inspect`` workflow (:mod:`~e2mc_cli.diagnostics.inspect`).

The live collapse alarm of the training loop is :class:`e2mc_cli.training.health.HealthMonitor`.
"""

from __future__ import annotations

from e2mc_cli.diagnostics.inspect import (
    LEVELS,
    TABLE_ROWS,
    embed_for_inspection,
    inspection_preprocessing,
    model_label,
    run_inspect,
    sample_indices,
    scatter_pairs,
)
from e2mc_cli.diagnostics.plots import ordinal, plot_neighbour_histograms, plot_pair_scatter, plot_spectra
from e2mc_cli.diagnostics.stats import (
    SPACES,
    effective_rank,
    effective_rank_of,
    embedding_stats,
    histogram_overlap,
    logdet_per_dim,
    marginal_entropy,
    mean_abs_offdiag_corr,
    neighbour_distances,
    neighbour_separability,
    singular_spectrum,
    squash,
    stability_stats,
)

__all__ = [
    "LEVELS",
    "SPACES",
    "TABLE_ROWS",
    "effective_rank",
    "effective_rank_of",
    "embed_for_inspection",
    "embedding_stats",
    "histogram_overlap",
    "inspection_preprocessing",
    "logdet_per_dim",
    "marginal_entropy",
    "mean_abs_offdiag_corr",
    "model_label",
    "neighbour_distances",
    "neighbour_separability",
    "ordinal",
    "plot_neighbour_histograms",
    "plot_pair_scatter",
    "plot_spectra",
    "run_inspect",
    "sample_indices",
    "scatter_pairs",
    "singular_spectrum",
    "squash",
    "stability_stats",
]
