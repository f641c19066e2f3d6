"""Progress of an evaluation's long loops: feature extraction (images) and classifier training
(epochs), with an ETA.

The loops report to the display of the current context: ``with showing(EvalDisplay(console)):``
around :func:`~e2mc_cli.evaluate.run.run_eval` shows them; without a display nothing is shown and
nothing is measured. :class:`EvalDisplay` draws a rich bar per stage on a terminal and plain lines
elsewhere (at the start and the end of a stage, and every :data:`PLAIN_EVERY_S` seconds between).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from e2mc_cli.training.progress import format_duration

Advance = Callable[[int], None]
PLAIN_EVERY_S = 10.0  # plain lines: the start, the end, and between them one line per this many seconds


class EvalDisplay:
    """Stages of an evaluation on ``console``: a rich bar on a terminal, plain lines otherwise."""

    def __init__(self, console: Console):
        self.console = console

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    @contextlib.contextmanager
    def stage(self, description: str, total: int, unit: str) -> Iterator[Advance]:
        """A stage of ``total`` ``unit``; yields ``advance(n)``."""
        if self.console.is_terminal:
            columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TextColumn(unit))
            clocks = (TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
            with Progress(*columns, *clocks, console=self.console) as bar:
                task = bar.add_task(description, total=total)
                yield lambda n=1: bar.advance(task, n)
            return
        t0 = last = time.perf_counter()
        done = 0

        def advance(n: int = 1) -> None:
            nonlocal done, last
            done += n
            now = time.perf_counter()
            if done >= total:
                self._print(f"{description}: {total} {unit} in {format_duration(now - t0)}")
            elif now - last >= PLAIN_EVERY_S:
                eta = (now - t0) / done * (total - done)
                self._print(
                    f"{description}: {done}/{total} {unit}, elapsed {format_duration(now - t0)}, "
                    f"eta {format_duration(eta)}"
                )
                last = now

        self._print(f"{description}: {total} {unit} …")
        yield advance


_DISPLAY: ContextVar[EvalDisplay | None] = ContextVar("evaluation_display", default=None)


@contextlib.contextmanager
def showing(display: EvalDisplay | None) -> Iterator[None]:
    """Show the evaluation stages run inside the block on ``display`` (``None``: show nothing)."""
    token = _DISPLAY.set(display)
    try:
        yield
    finally:
        _DISPLAY.reset(token)


@contextlib.contextmanager
def stage(description: str, total: int, unit: str) -> Iterator[Advance]:
    """A stage of the current display (:func:`showing`); yields ``advance(n)``, a no-op without one."""
    display = _DISPLAY.get()
    if display is None or total <= 0:
        yield lambda n=1: None
        return
    with display.stage(description, total, unit) as advance:
        yield advance
