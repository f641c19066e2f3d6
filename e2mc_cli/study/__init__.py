"""``sslboost study``: does an add-on criterion really help, beyond continuing the base loss?

A study continues the pre-training of one base with each criterion and each seed, evaluates every
result with the linear probe (``--mode cached``; ``--probe-mode standard`` for the paper's) at
each label fraction and with kNN, and tabulates them like Tables 1 and 3 of the E2MC paper
(Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931).

Cells. ``(criterion, seed k)`` is one cell, kept in ``DIR/cells/<criterion>-seed<k>/``:
``train/`` (the run folder of :mod:`e2mc_cli.training`, trained with ``run.seed = k``, so every
criterion sees the same images in the same order and the same augmentations for a given seed),
``eval/linear-<labels>/`` and ``eval/knn/`` (the outputs of :mod:`e2mc_cli.evaluate`, label subset
drawn with seed ``k``) and ``result.json``, written atomically last. A cell whose ``result.json``
exists is finished and skipped, so an interrupted study resumes where it stopped (a training run
cut short is resumed from its last checkpoint; finished evaluations are read back). Evaluations
made under an older evaluation protocol (``protocol_version`` of ``eval.json``) are made again,
keeping the trained models. The base is evaluated once, in ``DIR/base/``, with seeds ``0 … S−1``.

Statistics. Each table cell is the mean ± standard error (``s/√n``) over seeds of the top-1 (%).
McNemar's test (:func:`e2mc_cli.evaluate.stats.mcnemar`) compares each criterion with
``continued`` on paired per-sample correctness, **pooling the predictions of all seeds**: the
correctness vectors of seed ``k`` of both criteria (same label subset) are concatenated over
``k``. Per-seed p-values (as ``sslboost compare`` gives) are kept in ``study.json`` too.

Tuning. ``--holdout N`` evaluates every cell on ``N`` images held out from the training split
instead of the test split (:func:`e2mc_cli.data.subsets.carve_validation`), so coefficients and
learning rates can be chosen without reading the test split. ``--set CRITERION:section.key=value``
applies an override to the runs of one criterion only (``--set e2mc:criterion.beta=100`` next to
``continued``, which has no ``beta``); an unscoped ``--set`` applies to every run.

A cell that cannot run with this base (a criterion's own limit, e.g. CorInfoMax's log-determinant
needs more samples per step than dimensions) is reported with its reason in ``study.json``
(``cannot_run``) and under the tables, and the study goes on; the next invocation tries it again.

Outputs: ``DIR/study.json`` (every number), ``DIR/study.md`` (the tables) and ``DIR/study.png``
(grouped bars with standard-error bars).

Continuation lengths. ``--epochs 1,3,10`` (a list; one value is a one-length study as above)
makes the analogue of Figure 4 of the paper: each cell trains one run to the largest value with a
snapshot of the model at every value, and every snapshot is evaluated as a cell is. ``study.json``
holds every point, ``study.md`` the tables of each point and the sign of (criterion − continued)
per seed at each, ``study.png`` the top-1 at the first label fraction against the epochs of
continued pre-training, the base at 0 (:mod:`~e2mc_cli.study.points`,
:mod:`~e2mc_cli.study.render_points`).

Modules: :mod:`~e2mc_cli.study.config` (the configuration and its checks),
:mod:`~e2mc_cli.study.cells` (one cell, the base, reading stored evaluations),
:mod:`~e2mc_cli.study.summary` (statistics), :mod:`~e2mc_cli.study.render` (markdown, figure),
:mod:`~e2mc_cli.study.points` and :mod:`~e2mc_cli.study.render_points` (a list of ``--epochs``),
:mod:`~e2mc_cli.study.run` (the whole study), :mod:`~e2mc_cli.study.before_after` (the
before/after rows of ``sslboost continue --eval-after``) and :mod:`~e2mc_cli.study.reference`
(a recipe's study reference, ``recipes/<recipe>.study.json``: the seed spread quoted under those
rows when the run is that recipe unchanged).
"""


from __future__ import annotations

from e2mc_cli.study.before_after import before_after
from e2mc_cli.study.cells import (
    EVAL_DIR,
    KNN,
    RESULT_FILE,
    StudyInterrupted,
    cell_name,
    collect,
    column_name,
    evaluate_checkpoint,
    read_correctness,
    read_current_result,
    run_base,
    run_cell,
    run_training,
    train_cell,
    train_done,
)
from e2mc_cli.study.config import (
    CONTROL,
    DEFAULT_CRITERIA,
    DEFAULT_LABELS,
    StudyConfig,
    check_config,
    default_data,
    epoch_points,
    parse_list,
    sets_for,
    split_scoped_set,
)
from e2mc_cli.study.points import STUDY_EPOCHS_FORMAT, collect_points, run_point_cell, summarise_points
from e2mc_cli.study.render import fmt_mean_se, fmt_p, render_markdown, render_png
from e2mc_cli.study.render_points import render_points_markdown, render_points_png
from e2mc_cli.study.run import StudyRun, run_study, write_outputs
from e2mc_cli.study.summary import STUDY_FORMAT, mcnemar_vs_control, summarise

__all__ = [
    "CONTROL",
    "DEFAULT_CRITERIA",
    "DEFAULT_LABELS",
    "KNN",
    "EVAL_DIR",
    "RESULT_FILE",
    "STUDY_EPOCHS_FORMAT",
    "STUDY_FORMAT",
    "StudyConfig",
    "StudyInterrupted",
    "StudyRun",
    "before_after",
    "cell_name",
    "check_config",
    "collect",
    "collect_points",
    "column_name",
    "default_data",
    "epoch_points",
    "evaluate_checkpoint",
    "fmt_mean_se",
    "fmt_p",
    "mcnemar_vs_control",
    "parse_list",
    "read_correctness",
    "read_current_result",
    "render_markdown",
    "render_png",
    "render_points_markdown",
    "render_points_png",
    "run_base",
    "run_cell",
    "run_point_cell",
    "run_study",
    "run_training",
    "sets_for",
    "split_scoped_set",
    "summarise",
    "summarise_points",
    "train_cell",
    "train_done",
    "write_outputs",
]
