"""``optim.keep_base_state``: a new run's optimiser starts from the momentum of its base's optimiser.

The E2MC authors' VICReg continuation (``main_vicreg_ent_ft.py``) builds VICReg's LARS and calls
``optimizer.load_state_dict(ckpt["optimizer"])`` on the official ``resnet50_fullckpt.pth``, so
its first update is ``w ← w − lr·(0.9·μ_base + q·d)`` rather than ``w ← w − lr·q·d``. With the
key set, sslboost does the same: the base's :class:`~e2mc_cli.checkpoint.OptimizerState` (one
momentum per parameter, under its canonical key; :func:`e2mc_cli.zoo.base_optimizer_state`)
goes into the state of the parameter of that name and shape (``mu`` for :class:`LARS`,
``momentum_buffer`` for ``torch.optim.SGD``, also under :class:`LARC`), on the parameter's device,
dtype and memory format. The hyperparameters stay the recipe's: ``load_state_dict`` would also
take the saved group's, which for VICReg's file are the recipe's (momentum 0.9, weight decay
1e-6, η 0.001), the learning rate being set at every step anyway.

It is off by default (the VICReg recipes say why). A resumed run has its own optimiser state and
never reads the base's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from rich.markup import escape
from torch import nn

from e2mc_cli.checkpoint import OptimizerState
from e2mc_cli.errors import UserError
from e2mc_cli.training.optim import LARC, LARS
from e2mc_cli.training.plan import RunPlan
from e2mc_cli.zoo import base_optimizer_state
from e2mc_cli.zoo.convert import listing
from e2mc_cli.zoo.optimizer_state import MOMENTUM_SLOTS


def momentum_slot(optimizer) -> str:
    """The state key under which ``optimizer`` keeps each parameter's momentum."""
    inner = optimizer.optim if isinstance(optimizer, LARC) else optimizer
    if isinstance(inner, LARS):
        return "mu"
    if isinstance(inner, torch.optim.SGD):
        return "momentum_buffer"
    raise UserError(f"optim.keep_base_state: {type(inner).__name__} keeps no momentum to load")


def load_momentum(
    optimizer, named_parameters: Iterable[tuple[str, nn.Parameter]], base: OptimizerState
) -> list[str]:
    """Put each momentum of ``base`` into the state of the optimised parameter of that name.

    Returns the names of the optimised parameters ``base`` has no momentum for (they start from
    zero, as after ``load_state_dict``). A momentum of another kind than ``optimizer``'s, for a
    parameter it does not optimise, or of another shape is a :class:`UserError`; nothing is
    loaded then.
    """
    slot = momentum_slot(optimizer)
    if base.slot != slot:
        raise UserError(
            f"{base.path}: {MOMENTUM_SLOTS.get(base.slot, base.slot)} ({base.slot}), but this run's "
            f"optimizer keeps {MOMENTUM_SLOTS[slot]} ({slot}); the recipe's optim.name must be the base's"
        )
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    params = {name: p for name, p in named_parameters if id(p) in optimised}
    foreign = [name for name in base.tensors if name not in params]
    if foreign:
        raise UserError(f"{base.path}: momentum for parameters this run does not train: {listing(foreign)}")
    wrong = [
        f"{name} {list(t.shape)} (expected {list(params[name].shape)})"
        for name, t in base.tensors.items()
        if t.shape != params[name].shape
    ]
    if wrong:
        raise UserError(f"{base.path}: momentum of another shape than its parameter: {listing(wrong)}")
    for name, momentum in base.tensors.items():
        param = params[name]
        optimizer.state[param][slot] = torch.empty_like(param).copy_(momentum)
    return [name for name in params if name not in base.tensors]


def keep_base_state(optimizer, model: nn.Module, plan: RunPlan, say: Callable[[str], None]) -> None:
    """Load the base's momentum into ``optimizer`` when the recipe asks for it (a new run only)."""
    if plan.saved is not None or not plan.recipe["optim"].get("keep_base_state", False):
        return
    if plan.base is None:
        raise UserError("recipe optim.keep_base_state = true, but this run starts from no base")
    base = base_optimizer_state(plan.base)
    without = load_momentum(optimizer, model.named_parameters(), base)
    loaded = len(base.tensors)
    rest = f"; {len(without)} start from zero ({listing(without)})" if without else ""
    text = (
        f"note: optim.keep_base_state: the {MOMENTUM_SLOTS[base.slot]} of {loaded} parameters comes from "
        f"the base's optimiser ({base.metadata.get('source') or base.path}){rest}"
    )
    say(escape(text))
