"""The one exception type that reaches users as a single clear line (exit code 2), and the one
"did you mean" suggester every unknown-name message uses."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: a wrong name, a missing file, an unusable checkpoint.

    The CLI prints ``error: <message>`` on stderr and exits with code 2, without a traceback.
    """


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
