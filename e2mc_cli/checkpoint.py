"""The canonical checkpoint: one safetensors file with every tensor of an :class:`SSLModel`.

Keys are the model's state-dict keys (``backbone.*``, ``projector.*``, ``prototypes.weight``,
``predictor.*``); string metadata ``format=sslboost/1``, ``method``, ``arch``, ``base``,
``criterion``, ``epoch``, ``recipe`` (JSON) and ``heads`` (JSON head sizes).

The root ``model.safetensors`` of a run folder (or of a Hub repository written by ``sslboost push``)
is the backbone alone, under timm's names, marked ``sslboost=sslboost-backbone/1`` in its metadata;
:func:`load_checkpoint` reads the full checkpoint ``sslboost.safetensors`` beside it.

The optimiser state of an official training checkpoint, when kept (``sslboost convert
--optimizer-state``), is a file of its own beside the canonical one, ``NAME.optimizer.safetensors``
for ``NAME.safetensors`` (:class:`OptimizerState`): the momentum of each parameter under the
parameter's canonical key, metadata ``format=sslboost-optimizer/1``, ``slot`` (``mu``: LARS,
``momentum_buffer``: SGD), ``method``, ``arch``, ``source``, ``epoch`` and ``param_groups`` (JSON:
the numeric hyperparameters each saved group had). The checkpoint itself stays a model file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from e2mc_cli.errors import UserError
from e2mc_cli.io import atomic_path, sort_safetensors_metadata
from e2mc_cli.methods import build_model, get_method_spec, method_names
from e2mc_cli.models import BACKBONES, SSLModel
from e2mc_cli.run_layout import CHECKPOINT_FILE

FORMAT = "sslboost/1"
BACKBONE_FORMAT = "sslboost-backbone/1"  # metadata ``sslboost`` of a run folder's root model.safetensors
OPTIMIZER_FORMAT = "sslboost-optimizer/1"  # metadata ``format`` of a NAME.optimizer.safetensors
OPTIMIZER_SUFFIX = ".optimizer.safetensors"


class ModelMetadata:
    """The model a canonical checkpoint's string ``metadata`` names: ``method`` and ``arch``
    (for any record that carries that metadata)."""

    metadata: dict[str, str]

    @property
    def method(self) -> str:
        return self.metadata["method"]

    @property
    def arch(self) -> str:
        return self.metadata["arch"]


def metadata_json(metadata: Mapping[str, str], key: str, where: str = "checkpoint") -> dict:
    """The JSON object stored as string metadata ``key`` (``{}`` when absent); anything that is
    not a JSON object is one :class:`UserError` line naming ``where`` and the key."""
    text = metadata.get(key)
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise UserError(f"{where}: metadata {key!r} is not JSON ({str(text)[:40]!r})") from None
    if not isinstance(value, dict):
        raise UserError(f"{where}: metadata {key!r} is not a JSON object ({str(text)[:40]!r})")
    return value


def shape_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str | None:
    """``"NAME: expected shape [..], found [..]"`` for the first tensor of ``expected`` (in its
    order) whose shape in ``found`` differs; ``None`` when every shared tensor fits."""
    for name, tensor in expected.items():
        other = found.get(name)
        if isinstance(other, torch.Tensor) and tuple(other.shape) != tuple(tensor.shape):
            return f"{name}: expected shape {list(tensor.shape)}, found {list(other.shape)}"
    return None


@dataclass
class Checkpoint(ModelMetadata):
    """The tensors and string metadata of one canonical checkpoint (``path``: where it was read,
    or the official file it was converted from; ``optimizer_state``: the base's optimiser state
    when the reader asked for it, never part of the model file)."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, str]
    path: str = "checkpoint"
    optimizer_state: OptimizerState | None = field(default=None, repr=False)

    @property
    def heads(self) -> dict:
        """Head sizes: the ``heads`` metadata, else read off the tensors."""
        if "heads" in self.metadata:
            return metadata_json(self.metadata, "heads", self.path)
        return get_method_spec(self.method).infer_heads(self.state_dict)

    def build_model(self) -> SSLModel:
        """The model with every tensor loaded (strict: no key missing, none unexpected, every
        shape that of the architecture)."""
        model = build_model(self.method, self.arch, self.heads)
        mismatch = shape_mismatch(model.state_dict(), self.state_dict)
        if mismatch:
            raise UserError(
                f"{self.path}: tensor {mismatch} "
                f"(a {self.arch} {self.method} model with heads {model.heads})"
            )
        missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        if missing or unexpected:
            raise UserError(
                f"{self.path} does not match a {self.arch} {self.method} model: "
                f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''}"
            )
        return model


def _as_str(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def save_state_dict(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write tensors + string metadata atomically (contiguous, unshared copies on the CPU)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: _as_str(v) for k, v in metadata.items()})
        sort_safetensors_metadata(tmp)


def save_checkpoint(
    path: str | os.PathLike,
    model: SSLModel,
    *,
    base: str = "",
    criterion: str = "",
    epoch: int | float = 0,
    recipe: dict | None = None,
    **extra,
) -> None:
    """Save ``model`` as a canonical checkpoint (atomically)."""
    state = model.state_dict()
    meta = {
        "format": FORMAT,
        "method": model.method,
        "arch": model.arch,
        "base": base,
        "criterion": criterion,
        "epoch": str(epoch),
        "recipe": recipe or {},
        "heads": model.heads,
        **extra,
    }
    save_state_dict(path, state, meta)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (a UserError for anything unreadable)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from None


def checkpoint_path(path: str | os.PathLike) -> Path:
    """The file holding the canonical checkpoint ``path`` stands for: ``path`` itself, or, for the
    backbone-only ``model.safetensors`` of a run folder, the ``sslboost.safetensors`` beside it."""
    p = Path(path)
    if read_metadata(p).get("sslboost") != BACKBONE_FORMAT:
        return p
    full = p.with_name(CHECKPOINT_FILE)
    if not full.is_file():
        raise UserError(
            f"{p}: the backbone alone (for timm and torchvision); sslboost reads the full checkpoint "
            f"{CHECKPOINT_FILE}, which is not beside it"
        )
    return full


def _load_tensors(p: Path) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``p``; an unreadable one is a UserError naming it."""
    try:
        return load_file(str(p))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{p}: not a readable safetensors file ({exc})") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a canonical checkpoint (a run folder's ``model.safetensors``: the full checkpoint beside
    it); anything else is a :class:`UserError`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such checkpoint file")
    p = checkpoint_path(p)
    metadata = read_metadata(p)
    if metadata.get("format") != FORMAT:
        raise UserError(
            f"{p}: not an sslboost checkpoint (metadata format={metadata.get('format')!r}, "
            f"expected {FORMAT!r}); "
            "convert official files with `sslboost convert`"
        )
    if metadata.get("method") not in method_names():
        raise UserError(f"{p}: unknown method {metadata.get('method')!r} in metadata")
    if metadata.get("arch") not in BACKBONES:
        raise UserError(
            f"{p}: unknown arch {metadata.get('arch')!r} in metadata; expected one of: {', '.join(BACKBONES)}"
        )
    return Checkpoint(_load_tensors(p), metadata, str(p))


# -- the optimiser state kept from an official training checkpoint --------------------------------


@dataclass
class OptimizerState(ModelMetadata):
    """The momentum an official optimiser held for each parameter, by canonical parameter key.

    ``slot`` is the optimiser's name for it (``mu`` in VICReg's LARS, ``momentum_buffer`` in
    ``torch.optim.SGD``); ``metadata`` holds ``method``, ``arch``, ``source``, ``epoch`` and
    ``param_groups`` (see the module docstring); ``path`` is where it was read.
    """

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    path: str = "optimizer state"

    @property
    def slot(self) -> str:
        return self.metadata["slot"]

    @property
    def param_groups(self) -> list[dict]:
        """The numeric hyperparameters of each saved group (``lr``, ``momentum``, …)."""
        groups = json.loads(self.metadata.get("param_groups") or "[]")
        return groups if isinstance(groups, list) else []


def optimizer_state_path(checkpoint: str | os.PathLike) -> Path:
    """``NAME.optimizer.safetensors``, where the optimiser state of ``NAME.safetensors`` is kept."""
    p = Path(checkpoint)
    return p.with_name(p.name.removesuffix(".safetensors") + OPTIMIZER_SUFFIX)


def save_optimizer_state(path: str | os.PathLike, state: OptimizerState) -> None:
    """Write ``state`` atomically (its metadata with ``format`` set)."""
    save_state_dict(path, state.tensors, {**state.metadata, "format": OPTIMIZER_FORMAT})


def load_optimizer_state(path: str | os.PathLike) -> OptimizerState:
    """Read a file written by :func:`save_optimizer_state`; anything else is a :class:`UserError`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such optimiser state file")
    metadata = read_metadata(p)
    missing = [k for k in ("slot", "method", "arch") if not metadata.get(k)]
    if metadata.get("format") != OPTIMIZER_FORMAT or missing:
        raise UserError(
            f"{p}: not an sslboost optimiser state (metadata format={metadata.get('format')!r}, "
            f"expected {OPTIMIZER_FORMAT!r} with slot, method and arch)"
        )
    return OptimizerState(_load_tensors(p), metadata, str(p))
