"""The optimiser state of an official training checkpoint, mapped to canonical parameter keys.

The official VICReg full checkpoint ``resnet50_fullckpt.pth`` is ``{epoch, model, optimizer}``,
``optimizer`` being the ``state_dict()`` of the LARS of VICReg's ``main_vicreg.py``: its
``param_groups`` (one group, made from ``model.parameters()``) list the parameters by position and
its ``state`` maps each position to ``{"mu": momentum}``. The E2MC authors' VICReg continuation
(``main_vicreg_ent_ft.py``) loads it with ``optimizer.load_state_dict(ckpt["optimizer"])``. Their
SimSiam script leaves the SGD state of SimSiam's checkpoints unloaded (that line is commented out
in ``main_simsiam_ent_ft.py``), and SwAV's files hold the weights alone.

A position becomes a name through the module tree: ``model.parameters()`` and
``model.state_dict()`` visit the modules in the same order, so the k-th position of the groups
(taken in group order) is the k-th entry of the file's state dict that is a parameter rather than
a buffer (BatchNorm's running statistics); which entries are parameters is read off the canonical
model. Each momentum is kept under its parameter's canonical key once its shape is checked.
Whatever cannot be attributed that way is a :class:`~e2mc_cli.errors.UserError`, as for the
model's own tensors: a model tensor the conversion dropped or a head it initialised (positions
would shift), a group that lists more or fewer parameters than the model has, state for a
position no group lists, a slot other than the momentum (Adam's moments), a wrong shape.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping

import torch

from e2mc_cli.checkpoint import OptimizerState
from e2mc_cli.errors import UserError
from e2mc_cli.methods import build_model
from e2mc_cli.zoo.convert import ConversionReport, listing, unwrap_official

# The momentum slot of each optimiser the official code uses, and what it is.
MOMENTUM_SLOTS = {"mu": "LARS momentum", "momentum_buffer": "SGD momentum"}


def optimizer_entry(obj, source: str) -> Mapping:
    """The ``optimizer`` entry of an official container; a file without one is a UserError."""
    entry = obj.get("optimizer") if isinstance(obj, Mapping) else None
    if not isinstance(entry, Mapping):
        raise UserError(
            f"{source}: no optimiser state in this file (only training checkpoints carry one, such as "
            "VICReg's resnet50_fullckpt.pth, the base vicreg)"
        )
    return entry


@functools.cache
def _parameter_names(method: str, arch: str, heads_json: str) -> frozenset[str]:
    with torch.device("meta"):
        model = build_model(method, arch, json.loads(heads_json))
    return frozenset(name for name, _ in model.named_parameters())


def _positions(entry: Mapping, source: str) -> list:
    """The parameter positions of every group, in group order (each at most once)."""
    groups = entry.get("param_groups")
    if not isinstance(groups, list) or not all(
        isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in groups
    ):
        raise UserError(f"{source}: optimizer.param_groups is not a list of groups with their params")
    positions = [p for g in groups for p in g["params"]]
    if len(set(positions)) != len(positions):
        raise UserError(f"{source}: optimizer.param_groups list a parameter twice")
    return positions


def _hyperparameters(entry: Mapping) -> list[dict]:
    """The numeric settings of each saved group (``lr``, ``momentum``, ``weight_decay``, …)."""
    return [
        {k: v for k, v in g.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        for g in entry["param_groups"]
    ]


def _parameters_in_file_order(obj, report: ConversionReport) -> list[tuple[str, torch.Tensor]]:
    """(canonical key, source tensor) of each parameter, in the order of the file's state dict."""
    _, inner, _, _ = unwrap_official(obj, report.source)
    canonical = dict(report.mapped)
    unplaced = [k for k in inner if k not in canonical] + report.new
    if unplaced:
        raise UserError(
            f"{report.source}: the optimiser state names parameters by position, and the converted "
            f"model lacks some of the file's tensors or adds new ones ({listing(unplaced)}), so its "
            "positions cannot be named"
        )
    names = _parameter_names(report.method, report.arch, json.dumps(report.heads, sort_keys=True))
    return [(canonical[k], v) for k, v in inner.items() if canonical[k] in names]


def _momentum(entry, name: str, shape: torch.Size, source: str) -> tuple[str, torch.Tensor] | None:
    """(slot, tensor) of one position's state; ``None`` for a parameter without momentum."""
    if not isinstance(entry, Mapping):
        raise UserError(f"{source}: the optimiser state of {name} is not a table of slots")
    foreign = [str(k) for k in entry if k not in MOMENTUM_SLOTS]
    if foreign or len(entry) > 1:
        raise UserError(
            f"{source}: the optimiser state of {name} holds {', '.join(map(str, entry))}; only a "
            f"momentum ({' or '.join(MOMENTUM_SLOTS)}) can be kept"
        )
    if not entry:
        return None
    slot, value = next(iter(entry.items()))
    if value is None:  # torch.optim.SGD without momentum
        return None
    if not isinstance(value, torch.Tensor) or value.shape != shape:
        found = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise UserError(
            f"{source}: optimiser state {slot} of {name}: expected shape {list(shape)}, found {found}"
        )
    return slot, value


def keep_optimizer_state(obj, report: ConversionReport) -> OptimizerState:
    """The momentum of the official container ``obj``, under the canonical keys of ``report``
    (the report of its conversion, :func:`~e2mc_cli.zoo.convert.convert_state_dict`), which now
    lists the optimiser state as kept instead of dropped."""
    source = report.source
    entry = optimizer_entry(obj, source)
    params = _parameters_in_file_order(obj, report)
    positions = _positions(entry, source)
    if len(positions) != len(params):
        raise UserError(
            f"{source}: the optimiser state lists {len(positions)} parameters, the {report.method} "
            f"model has {len(params)}"
        )
    state = entry.get("state")
    if not isinstance(state, Mapping):
        raise UserError(f"{source}: optimizer.state is not a table of parameter states")
    listed = set(positions)
    orphans = [str(p) for p in state if p not in listed]
    if orphans:
        raise UserError(f"{source}: optimiser state for positions no group lists: {listing(orphans)}")
    tensors, slots = {}, set()
    for position, (name, param) in zip(positions, params):
        found = _momentum(state[position], name, param.shape, source) if position in state else None
        if found is not None:
            slots.add(found[0])
            tensors[name] = found[1]
    if len(slots) != 1:
        what = "no momentum" if not slots else f"both {' and '.join(sorted(slots))}"
        raise UserError(f"{source}: the optimiser state holds {what}; there is nothing to keep")
    slot = slots.pop()
    without = len(params) - len(tensors)
    report.dropped = [d for d in report.dropped if d[0] != "optimizer"]
    report.kept.append(
        (
            "optimizer",
            len(tensors),
            f"{MOMENTUM_SLOTS[slot]} ({slot}) of {len(tensors)}/{len(params)} parameters, under their "
            f"canonical keys" + (f" ({without} never stepped start from zero)" if without else ""),
        )
    )
    metadata = {
        "slot": slot,
        "method": report.method,
        "arch": report.arch,
        "heads": json.dumps(report.heads, sort_keys=True),
        "source": source,
        "epoch": "" if report.epoch is None else str(report.epoch),
        "param_groups": json.dumps(_hyperparameters(entry)),
    }
    return OptimizerState(tensors, metadata, source)
