"""``sslboost reproduce``: every run of Table 1 or Table 3 of the E2MC paper (Chakraborty et al.,
AISTATS 2025, https://arxiv.org/abs/2411.15931), evaluated as the paper did and tabulated beside
its figures.

Modules: :mod:`~e2mc_cli.reproduce.paper` (the two tables as data: rows, bases, criteria,
figures), :mod:`~e2mc_cli.reproduce.estimate` (GPU hours from the paper's own timings),
:mod:`~e2mc_cli.reproduce.plan` (the plan: rows, recipes, evaluations, the study of each base and
the equivalent ``sslboost`` commands), :mod:`~e2mc_cli.reproduce.run` (running it through
:mod:`e2mc_cli.study`, resumable) and :mod:`~e2mc_cli.reproduce.results` (paper beside ours).
"""

from __future__ import annotations

from e2mc_cli.reproduce.estimate import assumptions, eval_gpu_hours, train_gpu_hours, view_equivalents
from e2mc_cli.reproduce.paper import BASE, TABLE1, TABLE3, TABLES, Figure, PaperRow, PaperTable, get_table
from e2mc_cli.reproduce.plan import (
    DEFAULT_OUT,
    PLAN_FORMAT,
    GroupPlan,
    Plan,
    PlannedRow,
    ReproduceOptions,
    build_plan,
)
from e2mc_cli.reproduce.results import RESULTS_FORMAT, render_markdown, tabulate
from e2mc_cli.reproduce.run import ReproduceRun, run_reproduction

__all__ = [
    "BASE",
    "DEFAULT_OUT",
    "PLAN_FORMAT",
    "RESULTS_FORMAT",
    "TABLE1",
    "TABLE3",
    "TABLES",
    "Figure",
    "GroupPlan",
    "PaperRow",
    "PaperTable",
    "Plan",
    "PlannedRow",
    "ReproduceOptions",
    "ReproduceRun",
    "assumptions",
    "build_plan",
    "eval_gpu_hours",
    "get_table",
    "render_markdown",
    "run_reproduction",
    "tabulate",
    "train_gpu_hours",
    "view_equivalents",
]
