"""Progress display of a training run: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def format_terms(terms: dict[str, float], limit: int = 6) -> str:
    """``loss 1.234 e2mc.ent 0.5 …`` with the total first and at most ``limit`` terms."""
    items = list(terms.items())[:limit]
    return " ".join(f"{k} {v:.4g}" for k, v in items)


def format_duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class TrainProgress:
    """``update(step, epoch, terms, img_s)`` after each optimiser step; ``log_line(...)`` on
    logging steps. On a terminal the bar shows epoch, step, img/s, loss terms and the ETA and
    log lines are not printed; elsewhere each logging step prints one line with the same fields.
    ``enabled=False`` (processes other than rank 0) prints nothing."""

    def __init__(
        self,
        console: Console,
        *,
        total_steps: int,
        start_step: int,
        steps_per_epoch: int,
        epochs: int,
        enabled: bool = True,
    ):
        self.console = console
        self.total, self.start = total_steps, start_step
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self.t0 = time.perf_counter()
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> TrainProgress:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("{task.fields[img_s]} img/s"),
                TextColumn("{task.fields[terms]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train",
                total=self.total,
                completed=self.start,
                epoch=f"{self.start // self.steps_per_epoch + 1}/{self.epochs}",
                img_s="-",
                terms="",
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def eta(self, step: int) -> float:
        done = step - self.start
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self.t0) / done * (self.total - step)

    def update(self, step: int, epoch: int, terms: dict[str, float], img_s: float) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=step,
                epoch=f"{epoch + 1}/{self.epochs}",
                img_s=f"{img_s:.1f}",
                terms=format_terms(terms, limit=2),
            )

    def log_line(self, step: int, epoch: int, lr: float, terms: dict[str, float], img_s: float) -> None:
        if not self.enabled or self.live:
            return
        eta = self.eta(step)
        eta_text = format_duration(eta) if eta == eta else "-"
        self.console.print(
            f"epoch {epoch + 1}/{self.epochs} step {step}/{self.total} lr {lr:.4g} "
            f"{format_terms(terms, limit=12)} img/s {img_s:.1f} eta {eta_text}",
            highlight=False,
            soft_wrap=True,
        )

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False, soft_wrap=True)
