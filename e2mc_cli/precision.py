"""The arithmetic a forward pass runs in: ``--precision bf16 | fp16 | fp32``.

- ``bf16``: autocast to bfloat16 (8-bit exponent, 7-bit mantissa); no gradient scaling needed.
- ``fp16``: autocast to float16 (5-bit exponent, 10-bit mantissa) with a gradient scaler, the
  mixed precision of the official VICReg and SwAV training code (apex / ``torch.cuda.amp``).
- ``fp32``: no autocast (the official SimSiam code).

:func:`resolve_precision` turns what the user asked for (or the recipe's default) into the
precision a device runs: mixed precision is what the authors ran on GPUs, so a recipe's default
``fp16`` / ``bf16`` applies on CUDA, while on a CPU (no fast half-precision kernels) a recipe
default runs in ``fp32`` unless ``--precision`` asks for it explicitly.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from e2mc_cli.errors import unknown_choice

PRECISIONS = ("bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def check_precision(name: str, what: str = "--precision") -> str:
    """``name`` if it is one of :data:`PRECISIONS`, else a UserError naming the closest."""
    if name not in PRECISIONS:
        raise unknown_choice(what, str(name), PRECISIONS)
    return name


def resolve_precision(requested: str | None, recipe_default: str, device: torch.device) -> str:
    """The precision a run on ``device`` uses: ``requested`` (``--precision``) when given, else the
    recipe's default on CUDA and ``fp32`` on other devices (see the module docstring)."""
    if requested is not None:
        return check_precision(requested)
    check_precision(recipe_default, "recipe run.precision")
    return recipe_default if device.type == "cuda" else "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (a no-op context for ``fp32``)."""
    dtype = DTYPES[check_precision(precision)]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def needs_grad_scaler(precision: str) -> bool:
    """Whether training in ``precision`` scales the loss against fp16 gradient underflow."""
    return check_precision(precision) == "fp16"
