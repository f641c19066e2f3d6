"""SIGINT and SIGTERM: the command's main process reacts, once, the way Ctrl-C does.

A signal sent to every process of a command (Ctrl-C in a terminal, ``kill -TERM -- -PGID``,
``pkill -f``, ``timeout``, a cluster scheduler) also reaches its data-loading workers. Left to
themselves, the workers die of it and the main process fails on a dead worker with PyTorch's
``DataLoader worker … is killed by signal`` traceback. So every loader's workers ignore both
signals (:func:`leave_stop_signals_to_the_main_process`), and the main process stops cleanly:

- during training, the run finishes its step, saves and stops (:mod:`e2mc_cli.training.loop`);
- anywhere else, SIGTERM raises :class:`Terminated` — a ``KeyboardInterrupt``, so the clean-up
  of Ctrl-C runs (temporary files removed, nothing half-written) — and the command ends with one
  line and exit code 143 (:func:`sigterm_interrupts`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the command outside training."""


def _raise_terminated(_signum, _frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within: SIGTERM raises :class:`Terminated` in the main thread (training installs its own
    handler over this one, and puts it back); the previous handler after. Off the main thread,
    where handlers cannot be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def leave_stop_signals_to_the_main_process(_worker_id: int) -> None:
    """A loader worker's start (``worker_init_fn``): it ignores SIGINT and SIGTERM, which the main
    process handles; it stops its workers itself when it stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
