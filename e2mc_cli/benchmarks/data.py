"""``sslboost bench data``: what one loader worker delivers, official views against split views.

On a folder of images (ImageNet layout), side by side in one run and on the same images:

- ``cpu``: the official per-image pipeline (``--augment cpu``): decode, crops, colour jitter,
  grayscale, blur, solarisation, float conversion and normalisation, per image with PIL;
- ``split``: the split pipeline's worker part (``--augment split``): decode, crops, flips as
  uint8 and the drawn parameters; and the device stage that finishes its batches
  (``device_ms_per_image``, on ``--device``; on the CPU with one thread too, per core);
- ``decode_device`` (``--decode device``, where the device can): the workers only read the
  files and draw the parameters; the device decodes, crops and finishes the batch.

The pipelines take turns round by round (``rounds`` batches of ``batch_size`` images, the same
items, so the same crops), so a load that changes during the run slows them alike. Without
``workers`` each pipeline runs in this process with one thread (``torch.set_num_threads(1)``):
the figures are per CPU core. With ``workers`` N, N loader processes per pipeline, and the
per-worker figure is the total divided by N. The load average is reported with the figures.
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from e2mc_cli.benchmarks.criteria import device_description
from e2mc_cli.data.datasets import is_fmnist_spec, resolve_dataset
from e2mc_cli.data.pipeline import ViewPipeline
from e2mc_cli.errors import UserError
from e2mc_cli.methods import get_method_spec, view_pipeline
from e2mc_cli.stop_signals import leave_stop_signals_to_the_main_process

SEED = 0

__all__ = ["bench_data", "load_folder"]


def load_folder(data: str | os.PathLike):
    """The training split of an image folder; a missing folder, the built-in dataset or a folder
    without images is a :class:`UserError`."""
    root = Path(data).expanduser()
    if is_fmnist_spec(str(data)):
        raise UserError(f"--data {data}: bench data reads a folder of photographs, not the built-in dataset")
    if not root.is_dir():
        raise UserError(f"--data {data}: no such folder (expected a folder of class folders of JPEG images)")
    return resolve_dataset(str(root), "train")


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batches(n_items: int, batch_size: int, rounds: int) -> list[list[tuple[int, int]]]:
    """Round ``r``'s batch: items ``(r, index)`` of consecutive indices (wrapping around)."""
    return [[(r, (r * batch_size + k) % n_items) for k in range(batch_size)] for r in range(rounds)]


class _InProcess:
    """One pipeline's batches made in this process, timed."""

    def __init__(self, pipeline: ViewPipeline, base):
        self.pipeline, self.dataset = pipeline, pipeline.dataset(base, SEED)
        self.seconds, self.images, self.last = 0.0, 0, None

    def round(self, batch: list[tuple[int, int]], timed: bool) -> None:
        t0 = time.perf_counter()
        self.last = self.pipeline.collate([self.dataset[key] for key in batch])
        if timed:
            self.seconds += time.perf_counter() - t0
            self.images += len(batch)


class _RoundBatches:
    """A batch sampler whose batches are set before each round (read in the main process)."""

    def __init__(self):
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Workers(_InProcess):
    """One pipeline's batches made by ``workers`` persistent loader processes, timed: each round,
    every worker makes the round's batch twice."""

    def __init__(self, pipeline: ViewPipeline, base, workers: int):
        super().__init__(pipeline, base)
        self.sampler, self.workers = _RoundBatches(), workers
        self.loader = DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=workers,
            collate_fn=pipeline.collate,
            persistent_workers=True,
            prefetch_factor=2,
            worker_init_fn=leave_stop_signals_to_the_main_process,
        )

    def round(self, batch, timed: bool) -> None:
        self.sampler.batches = [batch] * (2 * self.workers)
        t0 = time.perf_counter()
        for b in self.loader:
            self.last = b
        if timed:
            self.seconds += time.perf_counter() - t0
            self.images += len(batch) * len(self.sampler.batches)


def _per_worker(run: _InProcess, workers: int) -> dict:
    rate = run.images / max(run.seconds, 1e-9) / max(workers, 1)
    return {"img_per_s_per_worker": round(rate, 2), "ms_per_image": round(1e3 / max(rate, 1e-9), 3)}


def _device_ms(pipeline: ViewPipeline, batch, device: torch.device, repeats: int) -> float:
    """Median milliseconds per image of ``pipeline.to_device`` on ``device`` (after one warm-up)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for k in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        pipeline.to_device(batch, device)
        sync()
        if k:
            times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3 / len(batch.indices), 4)


def _runs(pipelines: dict[str, ViewPipeline], base, workers: int):
    if workers:
        return {name: _Workers(p, base, workers) for name, p in pipelines.items()}
    return {name: _InProcess(p, base) for name, p in pipelines.items()}


def _pipelines(method: str, image_size: int, decode: str, device: torch.device, base) -> tuple[dict, list]:
    """The pipelines to time (``decode_device`` only where the device can decode) and the notes."""
    pipelines = {
        "cpu": view_pipeline(method, image_size, "cpu"),
        "split": view_pipeline(method, image_size, "split"),
    }
    if decode != "device":
        return pipelines, []
    dec = view_pipeline(method, image_size, "split", decode="device", device=device)
    dec.dataset(base, SEED)
    if dec.note:
        return pipelines, [dec.note]
    return {**pipelines, "decode_device": dec}, []


def bench_data(
    data: str | os.PathLike,
    method: str,
    *,
    image_size: int = 224,
    workers: int | None = None,
    batch_size: int = 32,
    rounds: int = 4,
    device: torch.device | str = "cpu",
    decode: str = "cpu",
    progress=None,
) -> dict:
    """The figures of the module docstring as one JSON-ready dict."""
    spec = get_method_spec(method)
    if batch_size < 1 or rounds < 1:
        raise UserError("--batch-size and --rounds must be at least 1")
    device, n_workers = torch.device(device), int(workers or 0)
    base = load_folder(data)
    pipelines, notes = _pipelines(spec.name, image_size, decode, device, base)
    with _threads(1):
        runs = _runs(pipelines, base, n_workers)
        for r, batch in enumerate(_batches(len(base), batch_size, rounds + 1)):  # round 0 warms up
            for run in runs.values():
                run.round(batch, timed=r > 0)
            if progress is not None:
                progress(f"round {r}/{rounds}")
    out = {
        "method": spec.name,
        "data": str(data),
        "images": len(base),
        "image_size": image_size,
        "batch_size": batch_size,
        "rounds": rounds,
        "workers": n_workers,
    }
    with _threads(1 if device.type == "cpu" else torch.get_num_threads()):
        out["device"] = device_description(device)
        out["device_threads"] = torch.get_num_threads() if device.type == "cpu" else None
        for name, run in runs.items():
            out[name] = _per_worker(run, n_workers)
            if name != "cpu":
                out[name]["device_ms_per_image"] = _device_ms(pipelines[name], run.last, device, 5)
    out["ratio"] = round(out["split"]["img_per_s_per_worker"] / out["cpu"]["img_per_s_per_worker"], 3)
    out.setdefault("decode_device", None)
    out["notes"] = notes
    out["load_average"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    out["cpu_cores"] = os.cpu_count()
    return out
