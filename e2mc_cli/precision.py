"""The arithmetic a forward pass runs in: ``--precision bf16 | fp16 | fp32``.

- ``bf16``: autocast to bfloat16 (8-bit exponent, 7-bit mantissa); no gradient scaling needed.
- ``fp16``: autocast to float16 (5-bit exponent, 10-bit mantissa) with a gradient scaler, the
  mixed precision of the official VICReg and SwAV training code (apex / ``torch.cuda.amp``).
- ``fp32``: no autocast (the official SimSiam code).

:func:`resolve_precision` turns what the user asked for (or the recipe's default) into the
precision a device runs: mixed precision is what the authors ran on GPUs, so a recipe's default
``fp16`` / ``bf16`` applies on CUDA, while on a CPU (no fast half-precision kernels) a recipe
default runs in ``fp32`` unless ``--precision`` asks for it explicitly.

Whatever the precision, the last layer of every head and every loss run in float32
(:func:`full_precision`, :class:`~e2mc_cli.models.heads.Fp32Linear`): autocast rounds a product's
inputs to half precision even when they are float32 tensors, and at n = 512 one m-spacing of a
squashed embedding dimension is only some 20 bf16 ulps wide.
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


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The gradient scaler of a run in ``precision`` on ``device``: ``torch.amp.GradScaler`` for
    ``fp16`` (the ``GradScaler`` of the official VICReg code and of the E2MC authors' VICReg and
    SimSiam scripts, ``main_vicreg_ent_ft.py`` / ``main_simsiam_ent_ft.py``), ``None`` otherwise."""
    return torch.amp.GradScaler(device.type) if needs_grad_scaler(precision) else None


def full_precision(device: torch.device | str):
    """A context with autocast off on ``device``'s type: what runs inside computes in the dtype of
    its inputs (float32 once they are upcast), whatever autocast the caller is under."""
    kind = device if isinstance(device, str) else device.type
    if not torch.amp.is_autocast_available(kind):
        return nullcontext()
    return torch.autocast(kind, enabled=False)


def describe(precision: str) -> str:
    """How a forward pass in ``precision`` computes, in words: ``fp16 autocast + gradient scaler``,
    ``bf16 autocast``, ``fp32``."""
    check_precision(precision)
    if precision == "fp32":
        return "fp32"
    scaler = " + gradient scaler" if needs_grad_scaler(precision) else ""
    return f"{precision} autocast{scaler} (heads' last layers and losses in fp32)"
