"""Command-line entry point: ``sslboost``.

``app`` lives in :mod:`e2mc_cli.cli.app`; each ``*_cmds`` module registers the commands of one
area. Every command runs inside :func:`e2mc_cli.cli.app.fault_boundary`: bad input is one
``error:`` line and exit code 2, a fault of the machine one line and exit code 3, Ctrl-C
``interrupted`` and exit code 130 (:mod:`e2mc_cli.errors`), at start-up too.
"""

from __future__ import annotations

import sys

try:  # Ctrl-C while the commands load is one line too
    from e2mc_cli.cli import (  # noqa: F401  (each module registers its commands)
        criteria_cmds,
        curve_cmds,
        data_cmds,
        eval_cmds,
        hub_cmds,
        inspect_cmds,
        plot_cmds,
        reproduce_cmds,
        study_cmds,
        train_cmds,
        tune_cmds,
        zoo_cmds,
    )
    from e2mc_cli.cli.app import app
except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from None

__all__ = ["app", "main"]


def main() -> None:
    """The ``sslboost`` console script."""
    try:
        app()
    except KeyboardInterrupt:  # outside any command (typer's own start-up)
        sys.stderr.write("interrupted\n")
        sys.exit(130)
