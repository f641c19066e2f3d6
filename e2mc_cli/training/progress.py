"""What a training run reports while it runs: a start-up header, then a live display on a terminal
or plain log lines elsewhere, and the cadence of ``metrics.jsonl``.

- **Header**, printed before the first step: base, method and criterion; data and its size; batch
  and steps; device, precision and data-loading workers; how the batches are loaded (prefetch,
  pinned memory) and where the views are made (``--augment``); output folder and cadences.
- The loss terms a step shows are read from the device one step late
  (:mod:`~e2mc_cli.training.terms`): the display follows the training by at most one step.
- **Live display** (a terminal): a bar with the epoch as the recipe counts it (``epoch 0.25/0.5``
  for a half-epoch recipe), step, elapsed time, ETA, learning rate and images/s, and below it
  every loss term (the method's and the criterion's) in as many lines as the terminal's width needs.
- **Plain lines** (piped or redirected output): one line with the same fields at the first step,
  every ``run.log_every`` steps and at the last step.
- **Metrics cadence** (:func:`metrics_interval`): ``metrics.jsonl`` gets a line every step for
  runs under 200 steps, else every ``steps // 100`` steps, never more than ``run.log_every``
  apart: every run has at least 100 points (or all of its steps) to draw a curve from.

Processes other than rank 0 print nothing.
"""

from __future__ import annotations

import time

from rich.columns import Columns
from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from e2mc_cli.precision import describe as describe_precision
from e2mc_cli.training.plan import RunPlan

CURVE_POINTS = 100  # metrics lines a run has at least (or one per step when it is shorter)


def metrics_interval(steps: int, log_every: int, points: int = CURVE_POINTS) -> int:
    """Steps between two ``metrics.jsonl`` lines of a run of ``steps`` steps: ``steps // points``,
    at least 1 and at most ``log_every``."""
    return max(1, min(int(log_every), int(steps) // points))


def format_terms(terms: dict[str, float]) -> str:
    """``loss 1.234 vicreg.loss 1.1 e2mc.ent 0.5 …``: every term, the total first."""
    return " ".join(f"{k} {v:.4g}" for k, v in terms.items())


def format_duration(seconds: float) -> str:
    """``H:MM:SS``; ``-`` when unknown (NaN)."""
    if seconds != seconds:
        return "-"
    seconds = max(int(seconds), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def format_epoch(step: int, steps_per_epoch: int, epochs: float) -> str:
    """The epoch reached at ``step`` out of the recipe's: ``0.25/0.5``, ``12.00/100``."""
    return f"{step / steps_per_epoch:.2f}/{epochs:g}"


def precision(plan: RunPlan) -> str:
    """How the forward pass computes: the run's precision (``fp16 autocast + gradient scaler (heads'
    last layers and losses in fp32)``, ``bf16 autocast (…)``, ``fp32``), channels_last,
    torch.compile when asked."""
    parts = [describe_precision(plan.precision)]
    parts += ["channels_last"]
    parts += ["torch.compile"] if plan.compile else []
    return ", ".join(parts)


def loading(plan: RunPlan) -> str:
    """How the batches are loaded and where the views are made, for the header."""
    loader = plan.loader
    if loader["workers"]:
        ahead = f"{loader['prefetch_factor']} batches prefetched per worker"
    else:
        ahead = "batches loaded by the training process itself"
    pinned = "pinned memory" if loader["pin_memory"] else "no pinned memory"
    return f"data loading: {ahead}, {pinned}; views: {plan.pipeline.describe()}"


def _every(steps: int) -> str:
    return "every step" if steps == 1 else f"every {steps} steps"


def header_lines(plan: RunPlan) -> list[str]:
    """What the run is, printed before its first step."""
    run = plan.recipe["run"]
    epochs = float(run["epochs"])
    start = f"resuming at step {plan.start_step}" if plan.resuming else "new run"
    until = f", stopping at step {plan.end_step} (--max-steps)" if plan.end_step < plan.total_steps else ""
    processes = f"{plan.world} processes" if plan.world > 1 else "1 process"
    return [
        f"base {plan.base_name} ({plan.method_name}, {plan.arch}) + criterion {plan.criterion_name}",
        f"data {plan.data}: {len(plan.dataset)} images; batch {plan.batch_size} ({processes}), "
        f"{plan.steps_per_epoch} steps per epoch",
        f"{epochs:g} epochs = {plan.total_steps} steps ({start}{until}); "
        f"{plan.warmup_steps} warm-up steps, {plan.schedule} schedule",
        f"device {plan.device}, {precision(plan)}, {plan.workers} data-loading workers per process",
        loading(plan),
        f"output {plan.out} (metrics {_every(plan.log_every)}, checkpoint {_every(plan.checkpoint_every)} "
        "and at each epoch end)",
    ]


def terms_renderable(terms: dict[str, float]) -> Columns:
    """Every ``name value`` pair of :func:`format_terms`, laid out in as many lines as the width needs
    (a pair is never split)."""
    return Columns([Text(f"{k} {v:.4g}", no_wrap=True) for k, v in terms.items()], padding=(0, 2))


class _TermsProgress(Progress):
    """A progress bar with a second renderable below it: the loss terms, wrapped to the width."""

    def __init__(self, *columns, **kwargs):
        self.terms = terms_renderable({})  # before Progress.__init__, which renders once
        super().__init__(*columns, **kwargs)

    def get_renderables(self):
        yield Group(self.make_tasks_table(self.tasks), self.terms)


class TrainProgress:
    """The header on entry, then ``update(step, lr, terms, img_s)`` after each optimiser step: the
    live display on a terminal, plain lines elsewhere (see the module docstring). ``plan.is_main``
    false (processes other than rank 0): nothing is printed."""

    def __init__(self, console: Console, plan: RunPlan):
        self.console, self.plan = console, plan
        self.start, self.total = plan.start_step, plan.end_step
        self.epochs = float(plan.recipe["run"]["epochs"])
        self.print_every = int(plan.recipe["run"]["log_every"])
        self.enabled = plan.is_main
        self.live = self.enabled and console.is_terminal
        self.t0 = time.perf_counter()
        self._progress: _TermsProgress | None = None
        self._task = None

    def _epoch(self, step: int) -> str:
        return format_epoch(step, self.plan.steps_per_epoch, self.epochs)

    def __enter__(self) -> TrainProgress:
        if not self.enabled:
            return self
        for line in header_lines(self.plan):
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        self.t0 = time.perf_counter()
        if self.live:
            self._progress = _TermsProgress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(bar_width=20),
                TextColumn("step {task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("lr {task.fields[lr]}"),
                TextColumn("{task.fields[img_s]} img/s"),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train",
                total=self.total,
                completed=self.start,
                epoch=self._epoch(self.start),
                lr="-",
                img_s="-",
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def eta(self, step: int) -> float:
        """Seconds left to the end step at this invocation's pace (NaN before its first step)."""
        done = step - self.start
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self.t0) / done * (self.total - step)

    def line(self, step: int, lr: float, terms: dict[str, float], img_s: float) -> str:
        """The plain log line of ``step``."""
        elapsed = format_duration(time.perf_counter() - self.t0)
        return (
            f"step {step}/{self.total} epoch {self._epoch(step)} lr {lr:.4g} {format_terms(terms)} "
            f"img/s {img_s:.1f} elapsed {elapsed} eta {format_duration(self.eta(step))}"
        )

    def update(self, step: int, lr: float, terms: dict[str, float], img_s: float) -> None:
        """After optimiser step ``step`` (its learning rate, loss terms and the images/s so far)."""
        if self._progress is not None:
            self._progress.terms = terms_renderable(terms)
            self._progress.update(
                self._task, completed=step, epoch=self._epoch(step), lr=f"{lr:.4g}", img_s=f"{img_s:.1f}"
            )
        elif self.enabled and (step == self.start + 1 or step % self.print_every == 0 or step == self.total):
            self.console.print(
                self.line(step, lr, terms, img_s), highlight=False, markup=False, soft_wrap=True
            )
