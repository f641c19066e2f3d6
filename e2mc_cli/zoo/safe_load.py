"""Loading official ``.pth`` files without ever executing code from their pickles.

Everything goes through ``torch.load(weights_only=True)``: only tensors, containers and
plain values are rebuilt. The one non-tensor global the official files need is the VICReg full
checkpoint's reference to ``__main__.exclude_bias_and_norm`` (the LARS filter function stored in
its optimiser's ``param_groups``). That name is allowlisted with an inert :class:`StandIn`:
the real function is never looked up, defined or run. One class is rebuilt as itself:
``argparse.Namespace``, the training script's arguments that DINO's full checkpoint stores under
``args`` (a plain attribute holder of strings and numbers; no method of it runs but ``__new__``,
and the attributes are set from the pickled dict). Any other global is refused.

The allowlist is scoped to one load: ``torch.serialization.safe_globals`` (torch ≥ 2.5), else,
on torch 2.4, ``add_safe_globals`` with the stand-ins taken out again afterwards
(:func:`allowed_stand_ins`). torch 2.4 is the floor: earlier versions have no allowlist, so a
weights-only load cannot read the VICReg full checkpoint at all.

A refusal says what was refused and why, never PyTorch's advice to load without
``weights_only`` (that would run the file's code); files of another kind (safetensors, NumPy
``.npy`` / ``.npz``, text) are named as such.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import struct
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch

from e2mc_cli.errors import UserError


class StandIn:
    """An inert placeholder for a function referenced by name in a checkpoint's pickle.

    It carries the ``__module__``, ``__name__`` and ``__qualname__`` of the name it stands for:
    torch's weights-only unpickler keys an allowlisted object by them (``__name__`` up to torch
    2.5, ``__qualname__`` from 2.6), so one object serves every supported version.
    """

    def __init__(self, qualified_name: str):
        module, _, name = qualified_name.rpartition(".")
        self.qualified_name = qualified_name
        self.__module__, self.__name__, self.__qualname__ = module, name, name

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualified_name} (not loaded)>"

    def __reduce__(self):  # never pickled back under the original name
        raise TypeError(f"{self!r} cannot be pickled")


# Globals the official checkpoints reference, each mapped to an inert stand-in.
ALLOWED_REFERENCES: tuple[str, ...] = ("__main__.exclude_bias_and_norm",)
_STAND_INS = [StandIn(name) for name in ALLOWED_REFERENCES]
# Classes the official checkpoints pickle, rebuilt as themselves: plain attribute holders.
ALLOWED_CLASSES: tuple[type, ...] = (argparse.Namespace,)
_ALLOWED = [*_STAND_INS, *ALLOWED_CLASSES]

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_OPCODE = re.compile(r"Unsupported operand (\d+)")
_REFUSED = "loading never runs code from a checkpoint, and the official files need no such object"
# What a load failure may raise: torch's zip reader, its legacy reader and the pickle machine.
_LOAD_ERRORS = (
    RuntimeError,
    EOFError,
    zipfile.BadZipFile,
    ValueError,
    OSError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    struct.error,
)


def looks_like_safetensors(path: str | os.PathLike) -> bool:
    """Whether the file starts like a safetensors file (a little-endian header size, then JSON)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    header = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header <= size - 8


def other_format(path: str | os.PathLike) -> str | None:
    """What a file is when it is plainly not a PyTorch checkpoint (``None`` when it may be one)."""
    p = Path(path)
    if p.stat().st_size == 0:
        return "an empty file"
    if looks_like_safetensors(p):
        return (
            "a safetensors file (pass it with its .safetensors name: canonical checkpoints are read as such)"
        )
    with open(p, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        return "a NumPy array file (.npy)"
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
        if names and all(n.endswith(".npy") for n in names):
            return "a NumPy archive (.npz)"
        if not any(n.endswith("data.pkl") for n in names):
            return "a zip archive without the data.pkl of a torch.save file"
    return None


@contextmanager
def allowed_stand_ins():
    """The stand-ins and :data:`ALLOWED_CLASSES` allowlisted for one load, whatever the torch version.

    ``torch.serialization.safe_globals`` is a context manager from torch 2.5; torch 2.4 has only
    the process-wide ``add_safe_globals``, so there the stand-ins are added and taken out again
    afterwards (whatever else is on the list stays).
    """
    serialization = torch.serialization
    if hasattr(serialization, "safe_globals"):
        with serialization.safe_globals(_ALLOWED):
            yield
        return
    listed = serialization.get_safe_globals()
    added = [s for s in _ALLOWED if all(s is not g for g in listed)]
    serialization.add_safe_globals(added)
    try:
        yield
    finally:
        remaining = [g for g in serialization.get_safe_globals() if all(g is not a for a in added)]
        serialization.clear_safe_globals()
        serialization.add_safe_globals(remaining)


def safe_torch_load(path: str | os.PathLike):
    """``torch.load(path, map_location="cpu", weights_only=True)`` with the stand-ins allowed.

    Unsupported globals, unreadable and truncated files are one :class:`UserError` each.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    kind = other_format(p)
    if kind:
        raise UserError(f"{p}: {kind}, not a PyTorch checkpoint")
    try:
        with allowed_stand_ins(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # advice for torch users
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{p}: {_refusal(str(exc))}") from None
    except _LOAD_ERRORS as exc:
        garbled = isinstance(exc, KeyError | IndexError | TypeError | AttributeError | struct.error)
        detail = f"{type(exc).__name__} while unpickling" if garbled else _detail(exc)
        raise UserError(
            f"{p}: not a readable PyTorch checkpoint, truncated or corrupted ({detail})"
        ) from None


def _refusal(text: str) -> str:
    """What the weights-only unpickler refused, and why, from its error text."""
    found = _GLOBAL.search(text)
    if found:
        return f"refusing to unpickle {found.group(1)}: {_REFUSED}"
    opcode = _OPCODE.search(text)
    if opcode:
        return (
            f"refusing pickle opcode {opcode.group(1)}: not a torch.save file of tensors and plain values "
            "(a plain pickle, or not a pickle at all); loading never runs code from a checkpoint"
        )
    detail = _detail(text.rsplit("WeightsUnpickler error:", 1)[-1])
    return f"not a readable PyTorch checkpoint, truncated or corrupted ({detail})"


# Where PyTorch's own advice starts in its messages: what follows is cut (it may advise loading
# with ``weights_only=False``, which would run the file's code).
_ADVICE = re.compile(
    r"(weights.only|re-?run|please file an issue|if you are seeing this error|check the documentation)",
    re.IGNORECASE,
)


def _detail(exc: BaseException | str) -> str:
    """The first sentence of an error, without the library's advice."""
    text = " ".join(str(exc).split())
    text = _ADVICE.split(text, maxsplit=1)[0].strip(" .:;,")
    text = re.split(r"(?<=[a-z0-9)])\. ", text, maxsplit=1)[0]
    return text[:160] or type(exc).__name__
