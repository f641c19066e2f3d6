"""The options every command shares, defined once: ``--device`` and ``--workers``.

``--device`` is ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. It
is checked while the command line is parsed (:func:`parse_device`): a malformed name, or a CUDA
device this machine does not have, is one ``error:`` line and exit code 2. In a training run
``cuda:N`` is device N of a single process; under ``torchrun`` each process takes its
``LOCAL_RANK``.

``--workers`` defaults to ``None``: the library picks the number for the data at hand (training:
:func:`e2mc_cli.training.data.default_workers`; evaluation:
:func:`e2mc_cli.evaluate.features.default_workers`).

``torch`` is imported only to check a CUDA device, so ``sslboost --help`` stays fast.
"""

from __future__ import annotations

import re

import typer

from e2mc_cli.errors import UserError

DEVICE_HELP = "auto, cpu, cuda or cuda:N."
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def parse_device(value: str) -> str:
    """``value`` if it names a device this machine has (``auto``, ``cpu``, ``cuda``, ``cuda:N``),
    else a :class:`UserError` saying what was expected."""
    if not _DEVICE.fullmatch(value):
        raise UserError(f"--device {value}: expected auto, cpu, cuda or cuda:N")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {value}: CUDA is not available on this machine")
        index, count = int(value.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise UserError(
                f"--device {value}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    return value


def resolve_device(value: str) -> str:
    """A checked ``--device`` with ``auto`` replaced by ``cuda`` or ``cpu``."""
    if value != "auto":
        return value
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_option(help: str = DEVICE_HELP):
    """``--device`` (default ``auto``), checked by :func:`parse_device` when the line is parsed."""
    return typer.Option("auto", "--device", help=help, callback=parse_device)


def workers_option(help: str = "Data-loading worker processes (default: chosen for the data and machine)."):
    """``--workers N`` (N ≥ 0); the default ``None`` lets the library choose (see the module docstring)."""
    return typer.Option(None, "--workers", min=0, help=help)
