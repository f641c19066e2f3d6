"""Training state: what a run changes as it trains, and the file that lets it continue exactly.

:class:`TrainState` holds the method (model and, for SwAV, the queue), the criterion (running
statistics), the optimiser (momentum buffers), the gradient scaler of an ``fp16`` run (its loss
scale and growth counter), the position (optimiser steps done), the health monitor, the set of
skipped files and the last loss terms; :func:`build_state` makes it from a
:class:`~e2mc_cli.training.plan.RunPlan` (from the base, or from the saved state when resuming).

``checkpoints/last.pt`` (``torch.save``, written to a temporary name and renamed) holds all of it
plus the epoch and batch within the epoch, the random-number generators of torch (CPU and CUDA),
numpy and Python, each process's own buffers (SwAV's queue), the resolved recipe and the model's
description (method, arch, heads, base), so that ``--resume`` needs nothing but the run folder.
A state holding a NaN or an infinity (parameters, buffers, optimiser state) is never written:
:meth:`TrainState.save` checks it first, on the device (:func:`nonfinite_tensors`, one transfer
per checkpoint, none in the steps between), and raises :class:`NonFiniteState` naming the last
step saved. Reading a state back checks its entries and its recipe before anything is built.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from e2mc_cli import distributed as D
from e2mc_cli.checkpoint import shape_mismatch
from e2mc_cli.criteria import Criterion, build_criterion
from e2mc_cli.errors import UserError
from e2mc_cli.io import atomic_path
from e2mc_cli.methods import Method, build_method, build_model
from e2mc_cli.models import SSLModel
from e2mc_cli.precision import grad_scaler
from e2mc_cli.run_layout import STATE_FILE
from e2mc_cli.training.base_state import keep_base_state
from e2mc_cli.training.health import HealthMonitor
from e2mc_cli.training.optim import build_optimizer
from e2mc_cli.training.plan import RunPlan
from e2mc_cli.training.recipe import SECTIONS, check_recipe
from e2mc_cli.training.syncbn import convert_sync_batchnorm

STATE_VERSION = 1


class NonFiniteLoss(RuntimeError):
    """Training met a NaN or an infinity; the message names where, and the checkpoint kept.

    The training loop raises it for a non-finite loss term when it reads the step's terms (one step
    late, and always before a checkpoint is written: a bad step is never saved);
    :meth:`TrainState.save` raises :class:`NonFiniteState` for a state it refuses to save.
    """


class NonFiniteState(NonFiniteLoss):
    """A parameter, buffer or optimiser state became non-finite: the state is not saved."""


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of ``tensors`` holding a NaN or an infinity.

    One fused max-norm (``torch._foreach_norm``, ∞-norm: NaN and ∞ propagate, large finite
    values do not overflow) per device on the device, and one transfer of the per-tensor flags.
    """
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, t in tensors.items():
        if t.is_floating_point() and t.numel():
            by_device.setdefault(t.device, []).append((name, t.detach()))
    bad = []
    for items in by_device.values():
        norms = torch._foreach_norm([t for _, t in items], math.inf)
        finite = torch.stack([n.isfinite() for n in norms]).tolist()
        bad += [name for (name, _), ok in zip(items, finite) if not ok]
    return bad


def _any_process(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on any process (a collective under DDP; ``flag`` itself otherwise)."""
    if not D.is_distributed():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t[0])


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
    """Put back the generators :func:`rng_state` recorded."""
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
        raise UserError(f"{p}: unreadable training state ({_load_reason(exc)})") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise UserError(f"{p}: not a training state of this version of sslboost")
    _check_saved(state, p)
    return state


def _load_reason(exc: Exception) -> str:
    """The first line of why ``torch.load`` failed, without its advice to unpickle code."""
    if "weights_only" in str(exc):
        return "it holds Python objects other than tensors and plain values, which are never loaded"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _check_saved(state: dict, path: Path) -> None:
    """The entries a resume reads, of the right kinds, and a recipe that keeps every rule."""
    info, recipe = state.get("model_info"), state.get("recipe")
    kinds = {"step": int, "method": dict, "criterion": dict, "optimizer": dict, "rng": dict}
    bad = [k for k, kind in kinds.items() if not isinstance(state.get(k), kind)]
    if not isinstance(info, dict) or not {"method", "arch", "heads", "base", "base_epoch"} <= set(info):
        bad.append("model_info")
    if not isinstance(recipe, dict) or not all(isinstance(recipe.get(s), dict) for s in SECTIONS):
        bad.append("recipe")
    if bad:
        raise UserError(f"{path}: a damaged training state (no valid {', '.join(bad)})")
    try:
        check_recipe(recipe)
    except UserError as exc:
        raise UserError(f"{path}: its saved {exc}") from None
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"{path}: a damaged training state (no valid recipe)") from None


# -- buffers each process keeps for itself ---------------------------------------------------------


def per_process_buffers(method: Method) -> list[str]:
    """Buffers each process keeps for itself (SwAV's queue), which DDP does not synchronise."""
    return list(getattr(method, "_ddp_params_and_buffers_to_ignore", []))


def gather_per_process(method: Method, world: int) -> dict[str, list[torch.Tensor]]:
    """Every process's copy of its own buffers (a collective: all processes call it)."""
    if not D.is_distributed():
        return {}
    out = {}
    for name in per_process_buffers(method):
        local = getattr(method, name).contiguous()
        copies = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(copies, local)
        out[name] = [c.cpu() for c in copies]
    return out


def restore_per_process(
    method: Method, copies: dict[str, list[torch.Tensor]], rank: int, world: int, say: Callable[[str], None]
) -> None:
    """Give each process back its own buffers; a different process count keeps rank 0's."""
    for name, tensors in copies.items():
        if len(tensors) != world:
            say(
                f"[yellow]warning:[/] the run was saved with {len(tensors)} processes and resumes "
                f"with {world}: every process starts from process 0's {name}"
            )
            continue
        getattr(method, name).copy_(tensors[rank].to(getattr(method, name).device))


# -- the state of a run ----------------------------------------------------------------------------


@dataclass
class TrainState:
    """What changes while a run trains (``module`` is the method or its DDP wrapper)."""

    method: Method
    criterion: Criterion
    optimizer: torch.optim.Optimizer
    health: HealthMonitor
    module: nn.Module
    model_info: dict  # method, arch, heads, base, base_epoch
    step: int = 0  # optimiser steps done
    wall_before: float = 0.0  # training seconds of the earlier invocations of a resumed run
    failed_indices: set[int] = field(default_factory=set)
    last_terms: dict[str, float] = field(default_factory=dict)
    saved_step: int | None = None  # the step of the last state saved (finite); None: none yet
    scaler: torch.amp.GradScaler | None = None  # fp16 runs (e2mc_cli.precision.grad_scaler)

    @property
    def model(self) -> SSLModel:
        return self.method.model

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor the state saves, by name: the method's (model and buffers), the
        criterion's and the optimiser's (``optimizer.<parameter>.<key>``)."""
        out = {f"method.{k}": v for k, v in self.method.state_dict().items()}
        out.update({f"criterion.{k}": v for k, v in self.criterion.state_dict().items()})
        names = {id(p): k for k, p in (*self.method.named_parameters(), *self.criterion.named_parameters())}
        for param, slots in self.optimizer.state.items():
            where = names.get(id(param), "parameter")
            out.update({f"optimizer.{where}.{k}": v for k, v in slots.items() if torch.is_tensor(v)})
        return out

    def check_finite(self, path: Path, device: torch.device) -> None:
        """Raise :class:`NonFiniteState` (on every process) if any tensor of the state is NaN or
        infinite; the message names the first of them and the checkpoint kept at ``path``."""
        bad = nonfinite_tensors(self.tensors())
        if not _any_process(bool(bad), device):
            return
        what = f"{', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}" if bad else "state on another process"
        kept = (
            f"the last good checkpoint is {path} (step {self.saved_step})"
            if self.saved_step is not None and path.exists()
            else "no checkpoint was written yet"
        )
        raise NonFiniteState(
            f"non-finite values in the state after step {self.step} ({what}); not saved; {kept}"
        )

    def payload(self, plan: RunPlan, wall: float, per_process: dict) -> dict:
        """The contents of ``checkpoints/last.pt`` (without version and RNG states)."""
        return {
            "step": self.step,
            "epoch": self.step // plan.steps_per_epoch,
            "batch_in_epoch": self.step % plan.steps_per_epoch,
            "method": self.method.state_dict(),
            "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "recipe": plan.recipe,
            "command": plan.command,
            "max_steps": plan.max_steps,
            "model_info": self.model_info,
            "data": str(plan.data),
            "augment": plan.augment,
            "n_items": len(plan.dataset),
            "wall_time": wall,
            "cpu_threads": torch.get_num_threads(),  # a resume on other threads rounds differently
            "failed_indices": sorted(self.failed_indices),
            "last_terms": self.last_terms,
            "health": self.health.state_dict(),
            "per_process": per_process,
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
        }

    def save(self, path: Path, plan: RunPlan, wall: float) -> None:
        """Write the state (rank 0) after gathering every process's own buffers (all processes
        call it, and all raise if rank 0 could not write it: :func:`e2mc_cli.distributed.
        on_main_process`); a state with a NaN or an infinity is not written (:meth:`check_finite`)."""
        self.check_finite(path, plan.device)
        per_process = gather_per_process(self.method, plan.world)
        D.on_main_process(lambda: save_training_state(path, self.payload(plan, wall, per_process)))
        self.saved_step = self.step

    def restore(self, saved: dict, plan: RunPlan, say: Callable[[str], None]) -> None:
        """Continue from a state :meth:`save` wrote (the random generators included); a state
        that does not fit this run (a tensor of another shape, a missing entry) is one UserError."""
        where = plan.out / STATE_FILE
        own = per_process_buffers(self.method)
        expected = {k: v for k, v in self.method.state_dict().items() if k not in own}
        mismatch = shape_mismatch(expected, saved.get("method") or {})
        if mismatch:
            raise UserError(f"{where}: saved tensor {mismatch}")
        try:
            self._restore(saved, plan, say)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{where}: a training state this run cannot continue from ({reason})") from None

    def _restore(self, saved: dict, plan: RunPlan, say: Callable[[str], None]) -> None:
        self.method.load_state_dict(saved["method"])
        restore_per_process(self.method, saved.get("per_process", {}), plan.rank, plan.world, say)
        self.criterion.load_state_dict(saved["criterion"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.step = int(saved["step"])
        self.saved_step = self.step
        self.wall_before = float(saved.get("wall_time", 0.0))
        self.failed_indices = set(saved.get("failed_indices", []))
        self.last_terms = dict(saved.get("last_terms", {}))
        self.health.load_state_dict(saved.get("health", {}))
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])


def _param_groups(method: Method, criterion: Criterion) -> list[dict]:
    """The method's parameter groups, plus one for a criterion with trainable parameters."""
    groups = method.param_groups()
    crit_params = [p for p in criterion.parameters() if p.requires_grad]
    if crit_params:
        groups.append({"name": "criterion", "params": crit_params, "fix_lr": False})
    return groups


def build_state(plan: RunPlan, say: Callable[[str], None]) -> TrainState:
    """Model, method, criterion, optimiser and health monitor of ``plan`` on its device, from the
    base of a new run or the saved state of a resumed one; ``say`` prints the warnings (rank 0)."""
    if plan.base is not None:
        model = plan.base.build_model()
    else:
        model = build_model(plan.method_name, plan.arch, plan.heads)
    info = {"method": model.method, "arch": model.arch, "heads": model.heads}
    method = build_method(plan.method_name, model, **plan.method_options)
    criterion = build_criterion(plan.criterion_name, space=method.space, **plan.criterion_options)
    if plan.world > 1 and method.global_batchnorm:
        method = convert_sync_batchnorm(method, plan.device.type)
    method.to(plan.device)
    criterion.to(plan.device)
    method.to(memory_format=torch.channels_last)  # faster convolutions on CUDA and on oneDNN CPUs alike
    state = TrainState(
        method=method,
        criterion=criterion,
        optimizer=build_optimizer(_param_groups(method, criterion), plan.recipe["optim"], plan.batch_size),
        health=HealthMonitor(method.space, warn=lambda m: say(f"[yellow]warning:[/] {m}")),
        module=method,
        model_info={**info, "base": plan.base_name, "base_epoch": plan.base_epoch},
        scaler=grad_scaler(plan.precision, plan.device),
    )
    if plan.saved is not None:
        state.restore(plan.saved, plan, say)
    keep_base_state(state.optimizer, state.model, plan, say)  # optim.keep_base_state, new runs only
    method.on_train_start(plan.total_steps, plan.steps_per_epoch)
    if plan.compile:
        state.model.backbone.compile()
        state.model.projector.compile()
    if plan.world > 1:
        state.module = DistributedDataParallel(method, device_ids=[plan.device.index] if plan.cuda else None)
    return state
