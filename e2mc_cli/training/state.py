"""Training state: everything a run needs to continue exactly where it stopped.

``checkpoints/last.pt`` (``torch.save``, written to a temporary name and renamed) holds the
method's state dict (the model and, for SwAV, the queue), the criterion's (running statistics),
the optimiser's (momentum buffers), the position (optimiser step, epoch, batch within the epoch),
the random-number generators of torch (CPU and CUDA), numpy and Python, the set of skipped files,
the health monitor's state, the resolved recipe and the model's description (method, arch, heads,
base), so that ``--resume`` needs nothing but the run folder.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from e2mc_cli.errors import UserError
from e2mc_cli.io import atomic_path

STATE_VERSION = 1


def _numpy_state() -> tuple:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))


def rng_state() -> dict:
    """The states of every random-number generator a training step may draw from."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": _numpy_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def save_training_state(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (plus the RNG states) atomically to ``path``."""
    payload = {"version": STATE_VERSION, **state, "rng": rng_state()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_training_state(path: str | os.PathLike) -> dict:
    """Read a state written by :func:`save_training_state` (tensors on the CPU)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no training state to resume from")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise UserError(f"{p}: unreadable training state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise UserError(f"{p}: not a training state of this version of sslboost")
    return state
