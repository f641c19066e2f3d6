"""``sslboost tune``: choose a criterion's coefficients and learning rate on a validation split.

The paper's coefficients need not transfer to other heads and data. The E2MC paper (Chakraborty
et al., AISTATS 2025, https://arxiv.org/abs/2411.15931) leaves β and γ as the hyperparameters to
tune (Sec. 5), sets them per base (App. B.1), chose the coefficients of its ablation criteria by a
search on a validation split scored with a linear classifier on 1 % of the labels (App. B.1.2),
and varies β and γ in App. D.2. A tuning starts from the values of the recipe ``sslboost
continue`` picks for the base and the criterion (the paper's coefficients, the recipe's
``optim.lr``) and moves them in three stages
(:mod:`~e2mc_cli.tune.plan`): the scale of all coefficients at their ratio, then the ratio of the
others to the first, then the learning rate. Every run is one study cell evaluated on ``--holdout``
images held out of the training split (the test split is never read); each trial is compared
with ``continued`` at the same learning rate: Δ top-1 and McNemar's exact p on each label column.
The highest Δ on the first label column is chosen in each stage, if it beats the stage's ``×1``
point with p < ``alpha`` (the exact test of the two gains); else the ``×1`` point stays.

Layout: ``DIR/trials/<slug>/`` (one study cell of the criterion), ``DIR/controls/lr-<x>/`` (the
``continued`` cell at that learning rate, shared by its trials), ``DIR/tuning.json`` (format
``sslboost-tune/1``: every trial, each stage's choice, the chosen point, the command that reads
the test split) and ``DIR/tuning.md`` (a validation table per stage), rewritten after every new
cell. Resumable: finished cells are read back, and the stages are recomputed from them.

Modules: :mod:`~e2mc_cli.tune.plan` (the grids and the choice, pure),
:mod:`~e2mc_cli.tune.config` (the configuration, its checks, the starting point, the test
command), :mod:`~e2mc_cli.tune.document` (Δ, p, rows, ``tuning.json``),
:mod:`~e2mc_cli.tune.render` (``tuning.md``) and :mod:`~e2mc_cli.tune.run` (the invocation).
"""

from __future__ import annotations

from e2mc_cli.tune.config import (
    Start,
    TuneConfig,
    check_criterion,
    check_tune,
    control_key,
    start_point,
    test_command,
    trial_key,
    trial_sets,
)
from e2mc_cli.tune.document import TUNE_FORMAT, Outcome, paired, summarise_tuning, tune_columns
from e2mc_cli.tune.plan import (
    DEFAULT_LR_SCALES,
    DEFAULT_RATIOS,
    DEFAULT_SCALES,
    STAGES,
    Point,
    choose,
    lr_grid,
    parse_factors,
    ratio_grid,
    scale_grid,
    trial_slug,
)
from e2mc_cli.tune.render import render_tuning_markdown, row_cells, table_header
from e2mc_cli.tune.run import TuneRun, run_tune

__all__ = [
    "DEFAULT_LR_SCALES",
    "DEFAULT_RATIOS",
    "DEFAULT_SCALES",
    "STAGES",
    "TUNE_FORMAT",
    "Outcome",
    "Point",
    "Start",
    "TuneConfig",
    "TuneRun",
    "check_criterion",
    "check_tune",
    "choose",
    "control_key",
    "lr_grid",
    "paired",
    "parse_factors",
    "ratio_grid",
    "render_tuning_markdown",
    "row_cells",
    "run_tune",
    "scale_grid",
    "start_point",
    "summarise_tuning",
    "table_header",
    "test_command",
    "trial_key",
    "trial_sets",
    "trial_slug",
    "tune_columns",
]
