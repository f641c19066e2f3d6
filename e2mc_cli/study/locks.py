"""Several processes on one study folder share its work instead of repeating it.

The base is evaluated by one process while the others wait for its result (:func:`waiting_for`);
each cell is run by the process that claims it first, and the others skip it and go on
(:func:`claimed`). So ``sslboost study`` started twice on the same folder uses two cores, and a
process started for some criteria (``--criteria e2mc``) beside another never trains a cell twice.
``sslboost tune`` shares the cells of each stage the same way (:mod:`e2mc_cli.tune.run`).

The locks are ``flock`` locks (:mod:`filelock`) on empty files in ``DIR/.locks/``: the operating
system releases them when their process ends, however it ends, so a killed run never leaves a
cell claimed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

LOCKS = ".locks"  # under the study folder


def lock_file(out: str | Path, name: str) -> Path:
    """The lock file of ``name`` (``base``, a cell name, a tuning's ``trials/<slug>``) in the
    folder ``out``."""
    path = Path(out) / LOCKS / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def waiting_for(out: str | Path, name: str, say: Callable[[str], None]) -> Iterator[None]:
    """Hold ``name``'s lock for the block; when another process holds it, say so and wait."""
    lock = FileLock(lock_file(out, name))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"{name}: another process is on it; waiting for it to finish")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextmanager
def claimed(out: str | Path, name: str) -> Iterator[bool]:
    """``True`` with ``name``'s lock held for the block, ``False`` (nothing held) when another
    process holds it."""
    lock = FileLock(lock_file(out, name))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
