"""The exit codes, the one exception type that reaches users as a single clear line (exit code 2),
what the CLI says about a fault of the machine (exit code 3), and the one "did you mean"
suggester every unknown-name message uses.

Exit codes: 0 done; 1 training stopped on a non-finite loss (the last good checkpoint is kept);
2 bad input; 3 a fault of the machine (no space, read-only, permission, a file where a folder
should be); 130 interrupted.
"""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable
from pathlib import Path

EXIT_NONFINITE = 1
EXIT_BAD_INPUT = 2
EXIT_FAULT = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a command it ended

# errno → (what happened, what to do about it) for the faults of the machine (exit code 3)
MACHINE_FAULTS = {
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space or raise the quota"),
    errno.EROFS: ("the file system is read-only", "write to another folder"),
    errno.EACCES: ("permission denied", "fix the permissions or write to another folder"),
    errno.EPERM: ("operation not permitted", "fix the permissions or write to another folder"),
    errno.ENOTDIR: ("a file stands where a folder should be", "move that file away or pick another path"),
    errno.EEXIST: ("it already exists", "move it away or pick another path"),
    errno.EISDIR: ("it is a folder, not a file", "give the path of a file"),
    errno.EIO: ("the device failed to read or write", "check the disk (and its free space)"),
}
# errno → (what happened, what to do) for paths that are bad input (exit code 2)
BAD_PATHS = {
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENAMETOOLONG: ("the name is too long", "use a shorter path"),
    errno.ELOOP: ("too many levels of symbolic links", "fix the link"),
}
NEXT_STEP = "next: "  # the prefix of the exception note that says how to carry on after a fault


class UserError(Exception):
    """Bad input from the user: a wrong name, a missing file, an unusable checkpoint.

    The CLI prints ``error: <message>`` on stderr and exits with code 2, without a traceback.
    """


class PeerFault(RuntimeError):
    """A bug rank 0 met while writing under DDP, as every other process raises it
    (:func:`e2mc_cli.distributed.on_main_process`): rank 0 keeps its own traceback, the others
    print this one line and exit with code 1."""


def close_matches(value: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` of ``choices`` closest to ``value``, best first (:func:`difflib.get_close_matches`)."""
    return difflib.get_close_matches(value, list(choices), n=n, cutoff=cutoff)


def did_you_mean(value: str, choices: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean 'PREFIXx'?)`` for the closest of ``choices``, or ``""`` when none is close."""
    close = close_matches(value, choices)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> UserError:
    """``unknown KIND 'value' (did you mean 'x'?); valid names: a, b, …`` as an error to raise."""
    names = list(choices)
    return UserError(f"unknown {kind} '{value}'{did_you_mean(value, names)}; valid names: {', '.join(names)}")


def add_next_step(exc: BaseException, text: str) -> None:
    """Record on ``exc`` how the user carries on once the fault is cleared (``continue … --resume``)."""
    exc.add_note(NEXT_STEP + text)


def next_step(exc: BaseException, default: str = "run the command again") -> str:
    """The last step :func:`add_next_step` recorded on ``exc``, else ``default``."""
    steps = [n[len(NEXT_STEP) :] for n in getattr(exc, "__notes__", ()) if n.startswith(NEXT_STEP)]
    return steps[-1] if steps else default


def _blamed_path(exc: OSError) -> str | None:
    """The path an OSError is about; for "not a directory", the file that stands in the way."""
    path = exc.filename2 if exc.filename is None else exc.filename
    if path is None:
        return None
    path = os.fsdecode(path)
    if exc.errno == errno.ENOTDIR:
        for parent in Path(path).parents:
            if parent.is_file():
                return str(parent)
    return path


def describe_fault(exc: OSError) -> tuple[int, str] | None:
    """``(exit code, message)`` for an OSError of the machine (code 3) or a bad path (code 2);
    ``None`` for an OSError without an errno (the caller lets it through)."""
    if exc.errno is None:
        return None
    code = EXIT_BAD_INPUT if exc.errno in BAD_PATHS else EXIT_FAULT
    what, remedy = MACHINE_FAULTS.get(exc.errno) or BAD_PATHS.get(exc.errno) or (
        os.strerror(exc.errno).lower(),
        "fix that",
    )
    path = _blamed_path(exc)
    if exc.errno == errno.EEXIST and path is not None and Path(path).is_file():
        what = "it is a file where a folder should be"
    text = f"{what}; {remedy}, then {next_step(exc)}"
    return code, f"{path}: {text}" if path else text
