"""Secrets never printed: one scrubber for every message that may carry a Hub or HTTP error.

:func:`scrub` masks, in any text, the Hugging Face token (``$HF_TOKEN``,
``$HUGGING_FACE_HUB_TOKEN``, the huggingface-hub login), anything shaped like a token
(``hf_…``), the value of a ``Bearer …`` or ``Authorization:`` header, and the password of a
``scheme://user:password@host`` address.

:func:`scrubbing` applies it, for the duration of a command or a call, to every log record created
(huggingface-hub's retry and server warnings included), every warning shown, and the message of
any exception passing through it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterable, Iterator

import huggingface_hub

TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
MASK = "***"
MIN_SECRET_LENGTH = 6  # shorter values are not masked literally (they would mask ordinary words)

# Shapes of credentials, masked whatever their value: the group before the secret is kept.
_SHAPES = (
    re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;}\]]+"),
    re.compile(r"(?i)(\bbearer\s+)[^\s\"',;}\]]+"),
    re.compile(r"()\bhf_[A-Za-z0-9][A-Za-z0-9_-]{19,}"),
    re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+(?=@)"),
)


_reading = threading.local()  # set while the login is read (a record logged meanwhile must not recurse)


def known_secrets() -> list[str]:
    """The tokens this process may send: the environment's and the huggingface-hub login's."""
    found = [os.environ.get(name, "") for name in TOKEN_VARIABLES]
    if not getattr(_reading, "login", False):
        _reading.login = True
        try:
            with contextlib.suppress(OSError):  # an unreadable token file holds nothing to mask
                found.append(huggingface_hub.get_token() or "")
        finally:
            _reading.login = False
    return [s.strip() for s in found if len(s.strip()) >= MIN_SECRET_LENGTH]


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every known secret, every ``secrets`` given and every credential shape masked."""
    values = {s for s in (*secrets, *known_secrets()) if s and len(s) >= MIN_SECRET_LENGTH}
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    for shape in _SHAPES:
        text = shape.sub(lambda m: m.group(1) + MASK, text)
    return text


def _scrubbed_record_factory(make_record, secrets: Iterable[str]):
    """A log-record factory whose records carry the scrubbed message, exception and stack."""

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: logging reports it when emitted
            return record
        record.msg, record.args = scrub(message, *secrets), ()
        if record.exc_info:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info), *secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, *secrets)
        return record

    return factory


def _scrubbed_showwarning(show, secrets: Iterable[str]):
    """``warnings.showwarning`` with the message and the quoted source line scrubbed."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        line = scrub(line, *secrets) if line else line
        show(scrub(str(message), *secrets), category, filename, lineno, file, line)

    return showwarning


@contextlib.contextmanager
def scrubbing(*secrets: str | None) -> Iterator[None]:
    """Scrub, while active, every log record and warning, and the exception that ends the block.

    Usable as ``with scrubbing():`` or as a decorator ``@scrubbing()``; ``secrets`` are masked in
    addition to :func:`known_secrets`.
    """
    given = [s for s in secrets if s]
    make_record, show = logging.getLogRecordFactory(), warnings.showwarning
    logging.setLogRecordFactory(_scrubbed_record_factory(make_record, given))
    warnings.showwarning = _scrubbed_showwarning(show, given)
    try:
        yield
    except Exception as exc:
        exc.args = tuple(scrub(a, *given) if isinstance(a, str) else a for a in exc.args)
        raise
    finally:
        logging.setLogRecordFactory(make_record)
        warnings.showwarning = show
