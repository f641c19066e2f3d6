"""Deadlines, statuses and failures of HTTP transfers: what :mod:`e2mc_cli.downloads` and the Hub
path (:mod:`e2mc_cli.zoo.hf`) share.

- :data:`CONNECT_TIMEOUT_S` to connect; then a transfer fails as *stalled* when less than
  :data:`STALL_MIN_BYTES` arrive in the stall timeout (:func:`stall_timeout`:
  ``$SSLBOOST_STALL_TIMEOUT`` seconds, default 60), whether the server is silent or trickles
  (:class:`StallWatch`). Reads take what has arrived, in pieces of at most :data:`PIECE` bytes.
- A failed try is a :class:`TransferError` naming the cause: the HTTP status
  (:func:`status_message`: 403 forbidden, 404 not found, 500 server error …), a refused or
  unresolvable connection ("offline" only when there is no connection at all), a stall.
- A fault of the network or the server reaches the user as a :class:`NetworkError` (exit code 3),
  a bad address or status as a :class:`~e2mc_cli.errors.UserError` (exit code 2).
"""

from __future__ import annotations

import errno
import http.client
import math
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

from e2mc_cli.errors import UserError

STALL_ENV = "SSLBOOST_STALL_TIMEOUT"
PIECE = 1 << 16  # the most one read waits for
CONNECT_TIMEOUT_S = 20.0
DEFAULT_STALL_TIMEOUT_S = 60.0
STALL_MIN_BYTES = 1024  # less than this in a stall timeout is a stalled transfer
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_STATUS_ADVICE = {
    401: "unauthorized: check the token / access",
    403: "forbidden: check the token / access",
    404: "not found: check the name and the address",
    410: "gone: the file was removed from the server",
    429: "too many requests: the server limits the rate",
}


class NetworkError(UserError):
    """A download that failed for a fault of the network or the server, not of the command.

    One line like every :class:`UserError`, with exit code 3: run the command again once the
    fault is cleared (the download resumes where it stopped).
    """

    exit_code = 3


class StalledError(Exception):
    """Less than :data:`STALL_MIN_BYTES` arrived within the stall timeout."""

    def __init__(self, timeout: float):
        super().__init__(
            f"the transfer stalled: less than 1 KiB arrived in {timeout:g} s "
            f"(${STALL_ENV} or `fetch --stall-timeout` sets the limit)"
        )


class StallWatch:
    """Raises :class:`StalledError` once less than :data:`STALL_MIN_BYTES` arrived in ``timeout``
    seconds: a silent server and one that trickles a byte at a time alike."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.total = 0  # bytes seen in all
        self._since = time.monotonic()
        self._bytes = 0

    @property
    def moved(self) -> bool:
        """Whether the transfer moved forward (at least :data:`STALL_MIN_BYTES` arrived)."""
        return self.total >= STALL_MIN_BYTES

    def seen(self, n: int) -> None:
        """Count ``n`` bytes that just arrived (checked against the deadline)."""
        now = time.monotonic()
        self.total += n
        self._bytes += n
        if self._bytes >= STALL_MIN_BYTES:
            self._since, self._bytes = now, 0
        elif now - self._since > self.timeout:
            raise StalledError(self.timeout)


class TransferError(Exception):
    """One failed try: what failed, whether another try may help, and whether it is a fault of the
    network or the server (exit code 3) rather than of the address (exit code 2)."""

    def __init__(self, reason: str, retryable: bool, fault: bool, status: int | None = None):
        super().__init__(reason)
        self.reason, self.retryable, self.fault, self.status = reason, retryable, fault, status


def stall_timeout(seconds: float | None = None) -> float:
    """``seconds``, else ``$SSLBOOST_STALL_TIMEOUT``, else 60: a finite number of seconds > 0."""
    if seconds is None:
        text = os.environ.get(STALL_ENV, "").strip()
        if not text:
            return DEFAULT_STALL_TIMEOUT_S
        try:
            seconds = float(text)
        except ValueError:
            raise UserError(f"{STALL_ENV}={text!r}: expected a number of seconds > 0") from None
        where = f"{STALL_ENV}={text!r}"
    else:
        where = f"--stall-timeout {seconds:g}"
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"{where}: expected a number of seconds > 0")
    return float(seconds)


def status_message(code: int, reason: str = "") -> str:
    """``HTTP 403 forbidden: check the token / access``: the status and what it means."""
    if code in _STATUS_ADVICE:
        return f"HTTP {code} {_STATUS_ADVICE[code]}"
    if code >= 500:
        return f"HTTP {code} server error ({reason or 'no reason given'})"
    return f"HTTP {code} {reason}".rstrip()


# --- HTTP with a connect timeout, then the stall timeout on every read -------------------------


class _StallTimeoutAfterConnect:
    """Connects within the request's (connect) timeout, then waits at most the stall timeout for
    each read."""

    def __init__(self, *args, stall_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.stall_timeout = stall_timeout

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.stall_timeout)


class _HTTPConnection(_StallTimeoutAfterConnect, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_StallTimeoutAfterConnect, http.client.HTTPSConnection):
    pass


class _StallTimeoutHandler:
    """A urllib handler whose connections apply the stall timeout after connecting."""

    def __init__(self, stall: float):
        super().__init__()
        self.stall = stall


class _HTTPHandler(_StallTimeoutHandler, urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_HTTPConnection, req, stall_timeout=self.stall)


class _HTTPSHandler(_StallTimeoutHandler, urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_HTTPSConnection, req, context=self._context, stall_timeout=self.stall)


def _connection_failure(reason: object, url: str) -> TransferError:
    """What a failed connection means: no connection at all is the only "offline"."""
    host = urllib.parse.urlsplit(url).hostname or url
    unreachable = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN)
    if isinstance(reason, socket.gaierror):
        return TransferError(f"cannot resolve {host}: no connection (offline?) or no such host", True, True)
    if isinstance(reason, OSError) and reason.errno in unreachable:
        return TransferError(f"the network is unreachable: no connection (offline?) to {host}", True, True)
    if isinstance(reason, ConnectionRefusedError):
        return TransferError(f"{host} refused the connection (no server listens there)", True, True)
    if isinstance(reason, TimeoutError):
        return TransferError(f"{host} did not accept a connection within {CONNECT_TIMEOUT_S:g} s", True, True)
    if isinstance(reason, ssl.SSLError):
        return TransferError(f"the TLS connection to {host} failed ({reason.reason or reason})", False, True)
    if isinstance(reason, FileNotFoundError):
        return TransferError(f"no such file {reason.filename}", False, False)
    return TransferError(f"the connection to {host} failed ({reason})", True, True)


def open_url(opener, request: urllib.request.Request, stall: float):
    """The response to ``request``, or a :class:`TransferError` saying what failed."""
    try:
        return opener.open(request, timeout=CONNECT_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        retry = exc.code in RETRY_STATUSES
        raise TransferError(status_message(exc.code, str(exc.reason)), retry, retry, exc.code) from None
    except urllib.error.URLError as exc:
        raise _connection_failure(exc.reason, request.full_url) from None
    except TimeoutError:  # connected, but the status line did not come
        raise TransferError(str(StalledError(stall)), False, True) from None
    except (http.client.HTTPException, ConnectionError) as exc:
        raise TransferError(f"the server broke the exchange ({type(exc).__name__})", True, True) from None


def read_piece(response, watch: StallWatch) -> bytes:
    """The next piece of the body (``b""`` at its end), or a :class:`TransferError`."""
    try:
        piece = response.read1(PIECE)
        if piece:
            watch.seen(len(piece))
        return piece
    except (TimeoutError, StalledError):  # retried only when this try had moved forward
        raise TransferError(str(StalledError(watch.timeout)), watch.moved, True) from None
    except (http.client.HTTPException, ConnectionError, ssl.SSLError):
        raise TransferError("the connection closed before the end of the file", True, True) from None


def build_opener(stall: float) -> urllib.request.OpenerDirector:
    """A urllib opener whose HTTP(S) connections apply the stall timeout after connecting."""
    return urllib.request.build_opener(_HTTPHandler(stall), _HTTPSHandler(stall))
