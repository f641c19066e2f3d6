"""``sslboost curve``: how far a pre-training from scratch is from its plateau.

One ``sslboost pretrain`` per epoch budget (``--epochs 2,4,8,16,32``), each a full run of that
many epochs with the recipe's schedule, each evaluated with kNN and the cached linear probe on
images held out of the training split (``--holdout``; the test split is never read). The verdict
(:func:`~e2mc_cli.curve.verdict.plateau_verdict`): the plateau is reached when kNN gains less
than 0.3 points over the last doubling of epochs. Resumable: a finished budget is skipped, an
interrupted one resumes from its last checkpoint.

Modules: :mod:`~e2mc_cli.curve.run` (the budgets, their evaluations, the document),
:mod:`~e2mc_cli.curve.document` (``curve.json``'s format, budgets from an earlier curve),
:mod:`~e2mc_cli.curve.verdict` (the plateau rule, pure) and :mod:`~e2mc_cli.curve.render`
(``curve.md``, ``curve.png``).
"""

from __future__ import annotations

from e2mc_cli.curve.document import CURVE_FORMAT, earlier_results, read_curve_document
from e2mc_cli.curve.render import render_curve_markdown, render_curve_png
from e2mc_cli.curve.run import (
    CurveConfig,
    CurveRun,
    budget_folder,
    check_curve,
    run_budget,
    run_curve,
    summarise_curve,
    write_curve,
)
from e2mc_cli.curve.verdict import PLATEAU_GAIN, Verdict, doubling_gain, plateau_verdict

__all__ = [
    "CURVE_FORMAT",
    "PLATEAU_GAIN",
    "CurveConfig",
    "CurveRun",
    "Verdict",
    "budget_folder",
    "check_curve",
    "doubling_gain",
    "earlier_results",
    "plateau_verdict",
    "read_curve_document",
    "render_curve_markdown",
    "render_curve_png",
    "run_budget",
    "run_curve",
    "summarise_curve",
    "write_curve",
]
