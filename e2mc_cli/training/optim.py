"""Optimisers and learning-rate schedules of the three base methods.

- **LARS** (VICReg, ``main_vicreg.py``): the update direction ``g + wd·w`` is rescaled per tensor by
  ``η‖w‖ / ‖g + wd·w‖`` (η = 0.001), then SGD momentum ``μ ← m·μ + g'``, ``w ← w − lr·μ``. Biases
  and normalisation weights (every 1-d tensor) get neither weight decay nor the rescaling
  (``exclude_bias_and_norm``).
- **LARC** around SGD (SwAV, apex ``LARC(trust_coefficient=0.001, clip=False)``): the gradient of
  every tensor with non-zero weight and gradient becomes ``(g + wd·w) · η‖w‖ / (‖g‖ + wd‖w‖ + ε)``;
  the wrapped SGD (momentum 0.9) then steps with weight decay switched off for that step.
- **SGD** (SimSiam, ``main_simsiam.py``): momentum 0.9, weight decay 1e-4; with ``fix_predictor_lr``
  the predictor keeps its own constant learning rate while the schedule moves the rest.

Learning rates may be scaled by ``batch_size / 256`` as the VICReg and SimSiam code do
(``lr_batch_scaling``); SwAV's code uses its learning rate as given.
"""

from __future__ import annotations

import math

import torch

from e2mc_cli.errors import UserError

OPTIMIZERS = ("lars", "sgd-larc", "sgd")
SCHEDULES = ("constant", "cosine")


def exclude_bias_and_norm(p: torch.Tensor) -> bool:
    """True for the tensors LARS leaves alone: biases and normalisation parameters (1-d)."""
    return p.ndim == 1


def by_device_and_dtype(*lists: list[torch.Tensor]) -> list[tuple[list[torch.Tensor], ...]]:
    """The parallel tensor ``lists`` split into groups of one device and dtype each (the unit a
    multi-tensor ``torch._foreach_*`` kernel takes), in their order within each group."""
    groups: dict[tuple, tuple[list[torch.Tensor], ...]] = {}
    for items in zip(*lists, strict=True):
        key = (items[0].device, items[0].dtype)
        for into, t in zip(groups.setdefault(key, tuple([] for _ in lists)), items, strict=True):
            into.append(t)
    return list(groups.values())


def lars_trust_ratio(param_norm: torch.Tensor, update_norm: torch.Tensor, eta: float) -> torch.Tensor:
    """VICReg's LARS factor per tensor: ``η‖w‖/‖d‖`` where both norms are positive, else 1."""
    one = torch.ones_like(param_norm)
    return torch.where(
        param_norm > 0.0, torch.where(update_norm > 0, eta * param_norm / update_norm, one), one
    )


def larc_factors(
    param_norm: torch.Tensor,
    grad_norm: torch.Tensor,
    weight_decay: float,
    trust_coefficient: float,
    eps: float,
    clip: bool,
    lr: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apex LARC's ``(scale, decay)`` per tensor: where ``‖w‖ ≠ 0`` and ``‖g‖ ≠ 0``,
    ``scale = η‖w‖ / (‖g‖ + wd‖w‖ + ε)`` (with ``clip``: ``min(scale / lr, 1)``) and ``decay = wd``;
    elsewhere 1 and 0 (the gradient is left as it is)."""
    adapt = (param_norm != 0) & (grad_norm != 0)
    adaptive = trust_coefficient * param_norm / (grad_norm + param_norm * weight_decay + eps)
    if clip:
        adaptive = torch.clamp(adaptive / lr, max=1.0)
    scale = torch.where(adapt, adaptive, torch.ones_like(adaptive))
    decay = torch.where(adapt, torch.full_like(param_norm, weight_decay), torch.zeros_like(param_norm))
    return scale, decay


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling as in VICReg's ``main_vicreg.py``.

    For each tensor ``w`` with gradient ``g``: ``d = g + wd·w`` (unless excluded),
    ``q = η‖w‖/‖d‖`` when both norms are positive (else 1; not for excluded tensors),
    ``μ ← momentum·μ + q·d``, ``w ← w − lr·μ``. The step runs on all tensors of one device and
    dtype at once (``torch._foreach_*`` norms, scaling and momentum update): the same numbers as
    the official per-tensor loop, without a Python loop over the parameters on the device.
    """

    def __init__(
        self,
        params,
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
        exclude_bias_and_norm: bool = True,
    ):
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            eta=eta,
            exclude_bias_and_norm=exclude_bias_and_norm,
        )
        super().__init__(params, defaults)

    def _momentum(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "mu" not in state:
            state["mu"] = torch.zeros_like(p)
        return state["mu"]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            adapted = [not (g["exclude_bias_and_norm"] and exclude_bias_and_norm(p)) for p in params]
            for adapt in (True, False):
                chosen = [p for p, a in zip(params, adapted, strict=True) if a == adapt]
                grads, mus = [p.grad for p in chosen], [self._momentum(p) for p in chosen]
                for ps, gs, ms in by_device_and_dtype(chosen, grads, mus):
                    self._update(g, ps, gs, ms, adapt=adapt)
        return loss

    @staticmethod
    def _update(g: dict, params: list, grads: list, mus: list, *, adapt: bool) -> None:
        """One device's and dtype's tensors of group ``g``: LARS direction, momentum, update."""
        updates = grads
        if adapt:
            updates = torch._foreach_add(grads, params, alpha=g["weight_decay"])
            param_norm = torch.stack(torch._foreach_norm(params))
            update_norm = torch.stack(torch._foreach_norm(updates))
            q = lars_trust_ratio(param_norm, update_norm, g["eta"])
            torch._foreach_mul_(updates, list(q.unbind()))
        torch._foreach_mul_(mus, g["momentum"])
        torch._foreach_add_(mus, updates)
        torch._foreach_add_(params, mus, alpha=-g["lr"])


class LARC:
    """Apex's LARC wrapper around an optimiser (scaling mode with ``clip=False``, as SwAV uses it).

    Before the wrapped step, each gradient with ``‖w‖ > 0`` and ``‖g‖ > 0`` becomes
    ``(g + wd·w) · η‖w‖ / (‖g‖ + wd‖w‖ + ε)``; with ``clip=True`` the factor is capped at 1/lr so
    the effective rate is ``min(η‖w‖/(…), lr)``. The wrapped optimiser steps with its weight
    decay set to 0 (it has already been folded into the gradient), then gets it back. Norms and
    rescaling run on all tensors of one device and dtype at once (``torch._foreach_*``), with no
    host synchronisation (apex compares the norms on the host, one transfer per tensor).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        trust_coefficient: float = 0.001,
        clip: bool = False,
        eps: float = 1e-8,
    ):
        self.optim = optimizer
        self.trust_coefficient = trust_coefficient
        self.clip = clip
        self.eps = eps

    @property
    def param_groups(self) -> list[dict]:
        return self.optim.param_groups

    @property
    def state(self):
        return self.optim.state

    def state_dict(self) -> dict:
        return self.optim.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optim.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optim.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def _rescale(self, group: dict, wd: float) -> None:
        """Fold the weight decay into the gradients of ``group`` and rescale them (in place)."""
        params = [p for p in group["params"] if p.grad is not None]
        for ps, gs in by_device_and_dtype(params, [p.grad for p in params]):
            scale, decay = larc_factors(
                torch.stack(torch._foreach_norm(ps)),
                torch.stack(torch._foreach_norm(gs)),
                wd,
                self.trust_coefficient,
                self.eps,
                self.clip,
                group["lr"],
            )
            torch._foreach_add_(gs, torch._foreach_mul(ps, list(decay.unbind())))
            torch._foreach_mul_(gs, list(scale.unbind()))

    @torch.no_grad()
    def step(self) -> None:
        saved = []
        for group in self.optim.param_groups:
            wd = group.get("weight_decay", 0.0)
            saved.append(wd)
            group["weight_decay"] = 0.0
            self._rescale(group, wd)
        try:
            self.optim.step()
        finally:
            for group, wd in zip(self.optim.param_groups, saved):
                group["weight_decay"] = wd


def base_lr(cfg: dict, batch_size: int, key: str = "lr") -> float:
    """The learning rate of ``cfg[key]`` after the optional ``batch_size / 256`` scaling."""
    lr = float(cfg[key])
    return lr * batch_size / 256 if cfg.get("lr_batch_scaling", False) else lr


def build_optimizer(groups: list[dict], cfg: dict, batch_size: int):
    """The optimiser named by ``cfg["name"]`` over parameter ``groups``.

    ``groups`` are a method's ``param_groups()`` (``{"name", "params", "fix_lr"}``, optionally
    ``"lr_key"``). Each group gets ``base_lr`` and ``fixed_lr``: :func:`apply_lr` moves only the
    scheduled groups; a group with ``fix_lr`` (SimSiam's predictor) stays at ``predictor_lr``
    (scaled like ``lr``; ``lr`` when the recipe has none); a group naming an ``lr_key`` starts at
    that recipe key's learning rate (scaled like ``lr``; ``lr`` when the recipe has none) and
    follows the schedule like ``lr``.
    """
    name = cfg.get("name", "sgd")
    if name not in OPTIMIZERS:
        raise UserError(
            f"unknown optimizer {name!r} in recipe [optim]; expected one of: {', '.join(OPTIMIZERS)}"
        )
    lr = base_lr(cfg, batch_size)
    fixed = base_lr(cfg, batch_size, "predictor_lr") if "predictor_lr" in cfg else lr
    param_groups = []
    for g in groups:
        params = [p for p in g["params"] if p.requires_grad]
        if not params:
            continue
        group_lr = lr
        if g.get("fix_lr", False):
            group_lr = fixed
        elif g.get("lr_key") in cfg:
            group_lr = base_lr(cfg, batch_size, g["lr_key"])
        param_groups.append(
            {
                "params": params,
                "name": g.get("name", ""),
                "lr": group_lr,
                "base_lr": group_lr,
                "fixed_lr": bool(g.get("fix_lr", False)),
            }
        )
    wd = float(cfg.get("weight_decay", 0.0))
    momentum = float(cfg.get("momentum", 0.9))
    if name == "lars":
        return LARS(
            param_groups,
            lr=lr,
            weight_decay=wd,
            momentum=momentum,
            eta=float(cfg.get("eta", 0.001)),
            exclude_bias_and_norm=bool(cfg.get("exclude_bias_and_norm", True)),
        )
    sgd = torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=wd)
    if name == "sgd-larc":
        return LARC(
            sgd,
            trust_coefficient=float(cfg.get("trust_coefficient", 0.001)),
            clip=bool(cfg.get("clip", False)),
        )
    return sgd


def lr_factor(
    step: int, total_steps: int, warmup_steps: int, schedule: str, final_ratio: float = 0.0
) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warm-up from 0 over ``warmup_steps`` (VICReg: ``lr·step/warmup``), then either
    constant or a half-cosine from 1 down to ``final_ratio``:
    ``q = ½(1 + cos(π t / T))``, factor ``= q + final_ratio·(1 − q)`` with ``t`` counted after the
    warm-up and ``T = total_steps − warmup_steps``.
    """
    if schedule not in SCHEDULES:
        raise UserError(
            f"unknown schedule {schedule!r} in recipe [optim]; expected one of: {', '.join(SCHEDULES)}"
        )
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    t, span = step - warmup_steps, max(total_steps - warmup_steps, 1)
    q = 0.5 * (1.0 + math.cos(math.pi * min(t, span) / span))
    return q + final_ratio * (1.0 - q)


def apply_lr(optimizer, factor: float) -> float:
    """Set every scheduled group's ``lr`` to ``base_lr · factor``; return the first group's lr."""
    for group in optimizer.param_groups:
        if not group.get("fixed_lr", False):
            group["lr"] = group["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]
