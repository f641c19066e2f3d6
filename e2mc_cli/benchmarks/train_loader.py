"""``sslboost bench train --data DIR``: the full training step through the run's real loader,
against the same step on batches loaded beforehand.

For each method the images of ``DIR`` (an ImageFolder root, or ``fmnist``) go through the loader
``sslboost continue`` builds (:func:`~e2mc_cli.training.data.make_loader`: the run's sampler, the
method's :class:`~e2mc_cli.data.pipeline.ViewPipeline` for ``--augment``, its workers, prefetch
and pinned memory), then :meth:`~e2mc_cli.data.pipeline.ViewPipeline.to_device`, the method's
forward pass, the criterion, ``backward`` and the recipe's optimiser step, with the loss terms
read one step late as the training loop reads them. The same step then runs on a few of those
batches kept in memory (still moved to the device and finished there by ``to_device`` each step),
which is what the step costs when the loader is never waited for.

Both are timed over ``steps`` steps after ``warmup`` untimed ones (the workers start during the
warm-up), from the first timed step to the device finishing the last. ``wait_share`` is the share
of the loader run's time the training process spent waiting for a batch, ``ratio`` the loader
run's images/s over the pre-loaded run's. The step is **loader-bound** when the training process
waits for batches :data:`LOADER_BOUND_SHARE` of the time or more, or when the loader costs the
step that share of its speed without making it wait (workers that share the training process's
CPU cores: on a CPU-only machine the views are made on the cores the step computes on); else
**compute-bound**: more workers or a cheaper pipeline would not speed it up.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

import torch

from e2mc_cli.benchmarks.criteria import device_description
from e2mc_cli.benchmarks.train import (
    BenchConfig,
    bench_config,
    bench_setup,
    build_training,
    synchronize,
    view_counts,
)
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.errors import UserError, unknown_choice
from e2mc_cli.methods import get_method_spec, view_pipeline
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.training.data import (
    AUGMENT_MODES,
    DEFAULT_AUGMENT,
    StepBatches,
    default_workers,
    loader_settings,
    make_loader,
)
from e2mc_cli.training.step import backward_step, forward_step
from e2mc_cli.training.terms import LateRead, term_vector

LOADER_BOUND_SHARE = 0.1  # waiting for batches this share of the time or more: loader-bound
KEPT_BATCHES = 2  # batches the pre-loaded run cycles through


class _Step:
    """The training step of ``sslboost continue`` on one list of views; the terms of each step are
    read after the next one is queued. ``sizes``: the sides of the views the method last took."""

    def __init__(self, name: str, method, crit, optimizer, criterion: str, device: torch.device):
        self.name, self.method, self.crit, self.optimizer = name, method, crit, optimizer
        self.criterion, self.device = criterion, device
        self.n, self.pending, self.sizes = 0, None, []

    def __call__(self, views: list[torch.Tensor]) -> None:
        self.sizes = [int(v.shape[-1]) for v in views]  # B × C × H × W, as the method takes them
        self.method.on_step_start(self.n, 0)
        loss, out, cout = forward_step(self.method, self.crit, views, self.device)
        read = LateRead(term_vector(self.name, self.criterion, loss, out, cout)[1])
        backward_step(self.method, self.optimizer, loss, self.n)
        self.method.on_after_step(self.n)
        if self.pending is not None:
            self.pending.values()
        self.pending, self.n = read, self.n + 1


def _timed_run(batches: Iterator, step: _Step, pipeline, steps: int, warmup: int, device) -> tuple:
    """``(seconds, seconds waiting for batches)`` of ``steps`` steps after ``warmup``, and the
    last :data:`KEPT_BATCHES` batches."""
    kept: deque = deque(maxlen=KEPT_BATCHES)
    for _ in range(warmup):
        batch = next(batches)
        kept.append(batch)
        step(pipeline.to_device(batch, device))
    synchronize(device)
    waited, t0 = 0.0, time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - t
        kept.append(batch)
        step(pipeline.to_device(batch, device))
    synchronize(device)
    return time.perf_counter() - t0, waited, list(kept)


def bound(wait_share: float, ratio: float) -> str:
    """``"loader"`` when the step waits for batches :data:`LOADER_BOUND_SHARE` of the time or more,
    or runs that much slower through the loader than on pre-loaded batches; else ``"compute"``."""
    loader = wait_share >= LOADER_BOUND_SHARE or ratio <= 1.0 - LOADER_BOUND_SHARE
    return "loader" if loader else "compute"


def _cycle(batches: list) -> Iterator:
    while True:
        yield from batches


def bench_loader_method(
    spec: MethodSpec, cfg: BenchConfig, device: torch.device, dataset, workers: int, augment: str
) -> dict:
    """One row of the report: the full step through the loader and on pre-loaded batches."""
    method, crit, optimizer, recipe, head_sizes = build_training(spec, cfg, device)
    pipeline = view_pipeline(spec.name, cfg.image_size, augment=augment)
    sampler = StepBatches(len(dataset), cfg.batch_size, seed=0, start=0, end=cfg.warmup + cfg.steps)
    cuda = device.type == "cuda"
    loader = make_loader(dataset, sampler, pipeline, workers, pin_memory=cuda, seed=0)
    step = _Step(spec.name, method, crit, optimizer, cfg.criterion, device)
    method.train()
    loader_s, waited, kept = _timed_run(iter(loader), step, pipeline, cfg.steps, cfg.warmup, device)
    del loader  # its workers end here, before the pre-loaded run
    preloaded_s, _, _ = _timed_run(_cycle(kept), step, pipeline, cfg.steps, cfg.warmup, device)
    sizes = step.sizes
    share = waited / loader_s if loader_s > 0 else 0.0
    images = cfg.steps * cfg.batch_size
    return {
        "method": spec.name,
        "views": view_counts(sizes),
        "heads": head_sizes,
        "optimizer": recipe["optim"]["name"],
        "loader_step_s": loader_s / cfg.steps,
        "preloaded_step_s": preloaded_s / cfg.steps,
        "loader_img_s": images / loader_s,
        "preloaded_img_s": images / preloaded_s,
        "ratio": preloaded_s / loader_s,
        "wait_s_per_step": waited / cfg.steps,
        "wait_share": share,
        "bound": bound(share, preloaded_s / loader_s),
    }


def bench_train_loader(
    data: str,
    methods: str = "all",
    *,
    arch: str = "resnet-mini",
    image_size: int = 28,
    batch_size: int = 256,
    steps: int = 10,
    warmup: int = 3,
    criterion: str = "e2mc",
    heads: str = "scaled",
    workers: int | None = None,
    augment: str | None = None,
    device: str = "auto",
) -> dict:
    """Measure every requested method on the images of ``data``; the configuration (with the
    loader's settings), one row per method and a note."""
    names, dev = bench_setup(methods, heads, device)
    workers = default_workers() if workers is None else max(int(workers), 0)
    augment = augment or DEFAULT_AUGMENT
    if augment not in AUGMENT_MODES:
        raise unknown_choice("--augment", augment, AUGMENT_MODES)
    dataset = resolve_dataset(data, "train")
    if len(dataset) < batch_size:
        raise UserError(
            f"--data {data}: {len(dataset)} images, fewer than one batch of {batch_size}; lower --batch-size"
        )
    cfg = BenchConfig(arch, heads, image_size, batch_size, steps, warmup, criterion)
    results = [bench_loader_method(get_method_spec(m), cfg, dev, dataset, workers, augment) for m in names]
    config = {
        **bench_config(cfg, dev),
        "data": str(data),
        "n_images": len(dataset),
        **loader_settings(workers, dev.type == "cuda", augment),
        "pipeline": view_pipeline(names[0], image_size, augment=augment).describe(),
    }
    note = (
        "through the loader = the run's DataLoader (its workers, prefetch and pinned memory) + moving and "
        "finishing the views on the device + method forward + criterion + backward + optimiser step, the "
        "loss terms read one step late; pre-loaded = the same step on batches already in memory. "
        f"{steps} timed steps after {warmup} warm-up steps each, on {device_description(dev)}; "
        f"loader-bound when the training process waits for batches {LOADER_BOUND_SHARE:.0%} of the time "
        "or more, or the loader costs the step that share of its speed."
    )
    return {"config": config, "results": results, "note": note}
