"""Command-line entry point: ``sslboost``.

``app`` lives in :mod:`e2mc_cli.cli.app`; each ``*_cmds`` module registers the commands of one
area. Errors for people are :class:`e2mc_cli.errors.UserError`: one line, exit code 2.
"""

from __future__ import annotations

from e2mc_cli.cli import (  # noqa: F401  (each module registers its commands)
    criteria_cmds,
    eval_cmds,
    hub_cmds,
    inspect_cmds,
    plot_cmds,
    study_cmds,
    train_cmds,
    zoo_cmds,
)
from e2mc_cli.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
