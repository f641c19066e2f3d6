"""``sslboost bench criteria``: forward + backward time of every criterion, and E2MC against the paper.

The paper's Appendix A pseudocode (:mod:`e2mc_cli.criteria.reference`) is timed side by side with
:class:`e2mc_cli.criteria.E2MC` in the same process, on the same inputs, with the ratio of the
times and the largest relative difference of the values. The command's second table, the error of
the m-spacings entropy when the embeddings arrive in bf16 or fp16, is
:mod:`e2mc_cli.benchmarks.entropy_precision`.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from e2mc_cli.criteria import CRITERIA, build_criterion, reference
from e2mc_cli.errors import UserError

__all__ = ["BenchRow", "bench_criteria", "device_description"]


# --- Timing -----------------------------------------------------------------------------------


@dataclass
class BenchRow:
    criterion: str
    d: int
    ms: float | None  # median forward + backward milliseconds; None when not applicable
    note: str = ""
    paper_ms: float | None = None  # E2MC only: the literal pseudocode
    speedup: float | None = None  # paper_ms / ms
    max_rel_diff: float | None = None  # E2MC only: largest |ours − paper| / |paper| over the repeats


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(
    fns: Sequence[Callable[[], torch.Tensor]], device: torch.device, repeats: int, warmup: int
) -> list[tuple[float, list[torch.Tensor]]]:
    """Median wall time (ms) and the returned values of each ``fn()``, after ``warmup`` untimed calls.

    The functions take turns within each repetition, so a machine whose load changes during the
    run slows all of them alike and their ratio stays meaningful.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    values: list[list[torch.Tensor]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            _sync(device)
            t0 = time.perf_counter()
            values[i].append(fn())
            _sync(device)
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [(statistics.median(t), v) for t, v in zip(times, values)]


def _inputs(n: int, d: int, device: torch.device, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g).to(device).requires_grad_() for _ in range(2)]


def cell_bytes(n: int, d: int) -> int:
    """A bound on the memory of one cell, in float32: four ``n × d`` views with their gradients,
    and the ``d × d`` matrices some criteria form (covariance, its gradient, a factorisation)."""
    return 4 * (8 * n * d + 4 * d * d)


def device_bytes(device: torch.device) -> int:
    """What ``device`` can hold: a GPU's memory, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_sizes(n: int, dims: Sequence[int], repeats: int, device: torch.device) -> None:
    """One UserError for the first bad size, before anything is allocated: a cell that needs
    more memory (:func:`cell_bytes`) than the device has (:func:`device_bytes`) included."""
    if n < 4:
        raise UserError(f"--n must be at least 4, got {n}")
    if repeats < 1:
        raise UserError(f"--repeats must be at least 1, got {repeats}")
    if not dims or any(d < 2 for d in dims):
        raise UserError(f"--dims must be integers >= 2, got {list(dims)}")
    have = device_bytes(device)
    for d in dims:
        if cell_bytes(n, d) > have:
            raise UserError(
                f"--n {n} --dims {d}: a cell needs about {cell_bytes(n, d) / 2**30:.3g} GiB, more than "
                f"the {have / 2**30:.3g} GiB of {device}; choose smaller sizes"
            )


def bench_criteria(
    n: int = 512,
    dims: Sequence[int] = (128, 2048, 8192),
    repeats: int = 5,
    warmup: int = 1,
    device: str | torch.device | None = None,
    names: Sequence[str] | None = None,
    space: str = "hypercube",
    progress: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """Forward + backward milliseconds of every criterion at batch ``n`` and each ``d``.

    For ``e2mc`` the paper's literal pseudocode runs on the same inputs in the same process
    (same β, γ, space, and the pseudocode's sum over the views); the row carries both times,
    their ratio and the largest relative difference of the two loss values.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _check_sizes(n, dims, repeats, device)
    names = list(names or CRITERIA)
    rows: list[BenchRow] = []
    for d in dims:
        views = _inputs(n, d, device, seed=d)
        views_all = views + _inputs(n, d, device, seed=d + 1)  # 4 crops for "all"-view criteria
        for name in names:
            if progress:
                progress(f"{name} d={d}")
            # E2MC as the pseudocode writes it (entropy summed over the views), to compare the values.
            options = {"view_reduction": "sum"} if name == "e2mc" else {}
            crit = build_criterion(name, space=space, **options).to(device)
            inp = views_all if crit.views == "all" else views
            if name == "logdet" and n <= d:
                rows.append(BenchRow(name, d, None, note="needs n > d"))
                continue

            def step(crit=crit, inp=inp):
                for v in inp:
                    v.grad = None
                out = crit(inp)
                if out.loss.requires_grad:
                    out.loss.backward()
                return out.loss.detach()

            if name != "e2mc":
                ((ms, _),) = _time_ms([step], device, repeats, warmup)
                rows.append(BenchRow(name, d, ms))
                continue

            def paper_step(inp=inp, beta=crit.beta, gamma=crit.gamma):
                for v in inp:
                    v.grad = None
                loss, _, _ = reference.e2mc_loss(inp[0], inp[1], space, beta, gamma)
                loss.backward()
                return loss.detach()

            (ms, ours), (paper_ms, paper) = _time_ms([step, paper_step], device, repeats, warmup)
            rel = max(float((o - p).abs() / p.abs().clamp_min(1e-30)) for o, p in zip(ours, paper))
            rows.append(BenchRow(name, d, ms, paper_ms=paper_ms, speedup=paper_ms / ms, max_rel_diff=rel))
    return rows


def rows_as_json(rows: list[BenchRow], *, n: int, device: str, repeats: int, precision=()) -> dict:
    """The timing rows and, under ``entropy_precision``, the
    :class:`~e2mc_cli.benchmarks.entropy_precision.PrecisionRow` records (``[]`` when skipped)."""
    return {
        "n": n,
        "device": device,
        "repeats": repeats,
        "rows": [asdict(r) for r in rows],
        "entropy_precision": [asdict(r) for r in precision],
    }
