"""``sslboost bench train``: images/s of a full training step against a bare backbone.

For each method the same views (random tensors shaped as the method's view recipe at
``image_size``: 2 full-resolution views; SwAV 2 + 6 low-resolution crops) go through

- the **full step** of ``sslboost continue``: the method's forward pass (backbone, heads, base
  loss), the add-on criterion with the method's recipe coefficients, the loss terms read back,
  ``backward``, the method's hooks and the recipe's optimiser step (LARS / SGD + LARC / SGD);
- the **bare backbone**: the backbone's forward and backward pass on the same views, called as the
  method calls it (one call per view for VICReg and SimSiam, whose batch norm sees each view
  alone; one call per resolution for SwAV), nothing else.

The two are timed alternately in one process (median over ``steps`` timed steps each, after
``warmup`` untimed ones), so both see the same machine load. Both run in channels_last,
with the tensors already on the device; on CUDA under bf16 autocast. ``ratio`` is full / bare images/s;
``overhead_pct`` is the extra time per step relative to the bare backbone.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from PIL import Image

from e2mc_cli.benchmarks.criteria import device_description
from e2mc_cli.criteria import Criterion, build_criterion
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.features import pick_device
from e2mc_cli.methods import (
    build_method,
    build_model,
    get_method_spec,
    method_config,
    method_names,
    view_transform,
)
from e2mc_cli.methods.base import Method, resolution_groups
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.models import build_backbone
from e2mc_cli.training.optim import build_optimizer
from e2mc_cli.training.recipe import resolve_recipe
from e2mc_cli.training.step import backward_step, forward_step
from e2mc_cli.training.terms import LateRead, term_vector

HEADS = ("scaled", "official")


@dataclass(frozen=True)
class BenchConfig:
    """What every measured method shares (the fields of the report's ``config``, in order)."""

    arch: str
    heads: str  # "scaled" (MethodSpec.scaled_heads) or "official"
    image_size: int
    batch_size: int
    steps: int
    warmup: int
    criterion: str


def view_sizes(method: str, image_size: int) -> list[int]:
    """The side of each of the method's training views at ``image_size`` px (full resolution first),
    read off its view pipeline (applied to a blank image, leaving the random state untouched)."""
    with torch.random.fork_rng(devices=[]):
        views = view_transform(method, image_size)(Image.new("RGB", (image_size, image_size)))
    return [int(v.shape[-1]) for v in views]


def view_counts(sizes: list[int]) -> str:
    """``2×28 + 6×12``: how many views of each side."""
    counts: dict[int, int] = {}
    for s in sizes:
        counts[s] = counts.get(s, 0) + 1
    return " + ".join(f"{n}×{s}" for s, n in counts.items())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def _median_times(full, bare, steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of ``full()`` and ``bare()``, timed alternately so both see the same load."""
    for _ in range(warmup):
        full()
        bare()
    t_full, t_bare = [], []
    for _ in range(steps):
        t_bare.append(_timed(bare, device))
        t_full.append(_timed(full, device))
    return statistics.median(t_full), statistics.median(t_bare)


def build_training(
    spec: MethodSpec, cfg: BenchConfig, device: torch.device
) -> tuple[Method, Criterion, torch.optim.Optimizer, dict, dict]:
    """(method, criterion, optimiser, recipe, head sizes) as ``sslboost continue`` builds them."""
    recipe = resolve_recipe(spec.name, cfg.criterion, batch_size=cfg.batch_size)
    with torch.device("meta"):
        width = build_backbone(cfg.arch).num_features
    head_sizes = spec.scaled_heads(width) if cfg.heads == "scaled" else dict(spec.heads)
    torch.manual_seed(0)
    model = build_model(spec.name, cfg.arch, head_sizes)
    options = method_config(spec.name, recipe["method"], recipe["views"])
    method = build_method(spec.name, model, **options).to(device)
    coefficients = {k: v for k, v in recipe["criterion"].items() if k != "name"}
    crit = build_criterion(cfg.criterion, space=method.space, **coefficients).to(device)
    optimizer = build_optimizer(method.param_groups(), recipe["optim"], cfg.batch_size)
    method.to(memory_format=torch.channels_last)
    return method, crit, optimizer, recipe, head_sizes


def _random_views(sizes: list[int], batch_size: int, device: torch.device) -> list[torch.Tensor]:
    return [
        torch.randn(batch_size, 3, s, s, device=device).contiguous(memory_format=torch.channels_last)
        for s in sizes
    ]


def bench_method(spec: MethodSpec, cfg: BenchConfig, device: torch.device) -> dict:
    """One row of the report: full training step against the bare backbone for one method."""
    method, crit, optimizer, recipe, head_sizes = build_training(spec, cfg, device)
    sizes = view_sizes(spec.name, cfg.image_size)
    views = _random_views(sizes, cfg.batch_size, device)
    step = {"n": 0}

    def full() -> None:
        method.on_step_start(step["n"], 0)
        loss, out, cout = forward_step(method, crit, views, device)
        read = LateRead(term_vector(spec.name, cfg.criterion, loss, out, cout)[1])
        backward_step(method, optimizer, loss, step["n"])
        method.on_after_step(step["n"])
        read.values()
        step["n"] += 1

    backbone = method.model.backbone
    # the backbone calls the method itself makes: one per view (batch-norm statistics per view, as
    # the official VICReg and SimSiam code), or one per resolution (SwAV's multi-crop)
    if spec.backbone_calls == "resolution":
        batches = [torch.cat(views[a:b]) for a, b in resolution_groups(views)]
    else:
        batches = list(views)

    def bare() -> None:
        backbone.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            feats = torch.cat([backbone(b) for b in batches])
        feats.float().mean().backward()

    method.train()
    full_s, bare_s = _median_times(full, bare, cfg.steps, cfg.warmup, device)
    return {
        "method": spec.name,
        "views": view_counts(sizes),
        "heads": head_sizes,
        "optimizer": recipe["optim"]["name"],
        "criterion_coefficients": {k: v for k, v in recipe["criterion"].items() if k != "name"},
        "full_step_s": full_s,
        "bare_step_s": bare_s,
        "full_img_s": cfg.batch_size / full_s,
        "bare_img_s": cfg.batch_size / bare_s,
        "ratio": bare_s / full_s,
        "overhead_pct": (full_s / bare_s - 1.0) * 100.0,
    }


def resolve_methods(methods: str) -> list[str]:
    """``all`` or a comma-separated list of method names, checked."""
    names = list(method_names()) if methods == "all" else [m.strip() for m in methods.split(",")]
    unknown = [m for m in names if m not in method_names()]
    if unknown:
        raise UserError(
            f"--method {', '.join(unknown)}: expected all or some of: {', '.join(method_names())}"
        )
    return names


def bench_setup(methods: str, heads: str, device: str) -> tuple[list[str], torch.device]:
    """The checked method names and the device (cuDNN picks its fastest kernels for the fixed
    shapes on CUDA, as in a training run)."""
    names = resolve_methods(methods)
    if heads not in HEADS:
        raise UserError(f"--heads {heads!r}: expected one of: {', '.join(HEADS)}")
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return names, dev


def bench_config(cfg: BenchConfig, dev: torch.device) -> dict:
    """The report's ``config``: the shared settings, the device, mixed precision and torch."""
    amp = dev.type == "cuda"
    return {**asdict(cfg), "device": device_description(dev), "amp": amp, "torch": torch.__version__}


def bench_train(
    methods: str = "all",
    *,
    arch: str = "resnet-mini",
    image_size: int = 28,
    batch_size: int = 256,
    steps: int = 10,
    warmup: int = 3,
    criterion: str = "e2mc",
    heads: str = "scaled",
    device: str = "auto",
) -> dict:
    """Measure every requested method; return the configuration, one row per method and a note."""
    names, dev = bench_setup(methods, heads, device)
    cfg = BenchConfig(arch, heads, image_size, batch_size, steps, warmup, criterion)
    results = [bench_method(get_method_spec(m), cfg, dev) for m in names]
    note = (
        "full step = method forward (backbone + heads + base loss) + criterion + loss terms read back + "
        "backward + optimiser step (the recipe's); bare = backbone forward + backward on the same views. "
        f"Images/s count images (each with all its views); median of {steps} alternating timed steps "
        f"after {warmup} warm-up steps, on {device_description(dev)}."
    )
    return {"config": bench_config(cfg, dev), "results": results, "note": note}
