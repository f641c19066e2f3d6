"""Loading official ``.pth`` files without ever executing code from their pickles.

Everything goes through ``torch.load(weights_only=True)``: only tensors, containers and
plain values are rebuilt. The one non-tensor global the official files need is the VICReg full
checkpoint's reference to ``__main__.exclude_bias_and_norm`` (the LARS filter function stored in
its optimiser's ``param_groups``). That name is allowlisted with an inert :class:`StandIn`:
the real function is never looked up, defined or run. Any other global is refused.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from e2mc_cli.errors import UserError


class StandIn:
    """An inert placeholder for a function referenced by name in a checkpoint's pickle."""

    __slots__ = ("qualified_name",)

    def __init__(self, qualified_name: str):
        self.qualified_name = qualified_name

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualified_name} (not loaded)>"

    def __reduce__(self):  # never pickled back under the original name
        raise TypeError(f"{self!r} cannot be pickled")


# Globals the official checkpoints reference, each mapped to an inert stand-in.
ALLOWED_REFERENCES: tuple[str, ...] = ("__main__.exclude_bias_and_norm",)
_STAND_INS = [(StandIn(name), name) for name in ALLOWED_REFERENCES]

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def safe_torch_load(path: str | os.PathLike):
    """``torch.load(path, map_location="cpu", weights_only=True)`` with the stand-ins allowed.

    Unsupported globals, unreadable and truncated files are one :class:`UserError` each.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    try:
        with torch.serialization.safe_globals(_STAND_INS):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        if found:
            raise UserError(
                f"{p}: refusing to unpickle {found.group(1)}: loading never runs code from a "
                "checkpoint, and the official files need no such object"
            ) from None
        detail = str(exc).rsplit("WeightsUnpickler error:", 1)[-1]
        raise UserError(f"{p}: not a readable PyTorch checkpoint ({_first_line(detail)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UserError(
            f"{p}: not a readable PyTorch checkpoint, truncated or corrupted ({_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
