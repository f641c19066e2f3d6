"""Bases published on the Hugging Face Hub by ``sslboost push``: ``hf://ORG/NAME[@REVISION]``.

The download goes through huggingface-hub (its cache, its retries with backoff, each reported live
in its warnings) under the deadlines of :mod:`e2mc_cli.network`:
:data:`~e2mc_cli.network.CONNECT_TIMEOUT_S` to connect, the stall timeout on every read (a server
that trickles counts as stalled; a stall is retried only when the body had moved forward) and at
most :data:`~e2mc_cli.downloads.ATTEMPTS` requests per address. huggingface-hub 2.x resumes a
broken body within the call but keeps no partial file across calls. ``$HF_ENDPOINT`` is read at
each call. Failures are one line naming the HTTP status (403 forbidden, 404 not found, 500 server
error …); "offline" is said only when the Hub cannot be reached at all. Every message,
huggingface-hub's warnings included, goes through :func:`~e2mc_cli.secrets.scrub`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2
import huggingface_hub
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import tqdm as hub_tqdm
from huggingface_hub.utils._http import default_client_factory

from e2mc_cli import downloads, network
from e2mc_cli.errors import UserError
from e2mc_cli.network import NetworkError, StalledError, StallWatch, stall_timeout, status_message
from e2mc_cli.run_layout import CHECKPOINT_FILE, MODEL_FILE
from e2mc_cli.secrets import scrubbing

PREFIX = "hf://"
WEIGHTS_FILE = CHECKPOINT_FILE  # the full checkpoint; MODEL_FILE in repositories of the earlier layout
_AGAIN = "run the command again"
_NO_CONNECTION = ("Name or service not known", "name resolution", "Network is unreachable", "nodename nor")


def is_hf(base: str) -> bool:
    """Whether ``base`` names a Hub repository (``hf://…``)."""
    return base.startswith(PREFIX)


def parse_hf(base: str) -> tuple[str, str | None]:
    """``hf://ORG/NAME[@REV]`` → (``ORG/NAME``, revision or ``None``)."""
    ref = base[len(PREFIX) :]
    repo_id, _, revision = ref.partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or (_ and not revision):
        raise UserError(f"{base!r}: expected hf://ORG/NAME or hf://ORG/NAME@REVISION")
    return repo_id, revision or None


# --- deadlines on huggingface-hub's HTTP client -----------------------------------------------


class GaveUpError(Exception):
    """The attempts allowed for one address were spent."""

    def __init__(self, reason: str, attempts: int):
        super().__init__(reason + (f" (after {attempts} attempts)" if attempts > 1 else ""))


class _Deadlines:
    """The deadlines of one download, and what went wrong with each address so far."""

    def __init__(self, stall: float):
        self.stall = stall
        self.tries: Counter[tuple[str, str]] = Counter()
        self.failure: dict[tuple[str, str], str] = {}
        self.hopeless: set[tuple[str, str]] = set()  # stalled without moving forward: no retry


_active: _Deadlines | None = None  # the download in progress, if any


class _WatchedStream(httpx2.SyncByteStream):
    """A response body that fails as a read timeout once it stalls (silent or trickling)."""

    def __init__(self, inner, deadlines: _Deadlines, key: tuple[str, str]):
        self._inner, self._deadlines, self._key = inner, deadlines, key

    def __iter__(self) -> Iterator[bytes]:
        watch = StallWatch(self._deadlines.stall)
        try:
            for chunk in self._inner:
                watch.seen(len(chunk))
                yield chunk
        except (StalledError, httpx2.TimeoutException):
            self._deadlines.failure[self._key] = str(StalledError(watch.timeout))
            if not watch.moved:
                self._deadlines.hopeless.add(self._key)
            raise httpx2.ReadTimeout(str(StalledError(watch.timeout))) from None
        except httpx2.TransportError:
            self._deadlines.failure[self._key] = "the connection closed before the end of the file"
            raise

    def close(self) -> None:
        self._inner.close()


def _on_request(request: httpx2.Request) -> None:
    deadlines = _active
    if deadlines is None:
        return
    key = (request.method, str(request.url))
    deadlines.tries[key] += 1
    if deadlines.tries[key] > downloads.ATTEMPTS or key in deadlines.hopeless:
        host = request.url.host
        reason = deadlines.failure.get(
            key, f"no answer from {host} (refused, unreachable, or silent for {deadlines.stall:g} s)"
        )
        raise GaveUpError(reason, deadlines.tries[key] - 1)
    connect = network.CONNECT_TIMEOUT_S
    request.extensions["timeout"] = {
        "connect": connect,
        "read": deadlines.stall,
        "write": deadlines.stall,
        "pool": connect,
    }


def _on_response(response: httpx2.Response) -> None:
    deadlines = _active
    if deadlines is None:
        return
    key = (response.request.method, str(response.request.url))
    if response.status_code >= 400:
        deadlines.failure[key] = status_message(response.status_code, response.reason_phrase)
    response.stream = _WatchedStream(response.stream, deadlines, key)


def _client() -> httpx2.Client:
    """huggingface-hub's own client, with the deadline hooks added."""
    client = default_client_factory()
    client.event_hooks["request"].append(_on_request)
    client.event_hooks["response"].append(_on_response)
    return client


_installed = False


@contextlib.contextmanager
def deadlines(stall: float) -> Iterator[None]:
    """Apply the connect and stall timeouts and the attempt budget to huggingface-hub's requests."""
    global _active, _installed
    if not _installed:
        huggingface_hub.set_client_factory(_client)
        _installed = True
    _active = _Deadlines(stall)
    try:
        yield
    finally:
        _active = None


class _TerminalBar(hub_tqdm):
    """huggingface-hub's progress bar, shown only on a terminal (never mixed into piped errors)."""

    def __init__(self, *args, **kwargs):
        if not sys.stderr.isatty():
            kwargs["disable"] = True
        super().__init__(*args, **kwargs)


# --- the download -----------------------------------------------------------------------------

_HUB_ERRORS = (GaveUpError, HfHubHTTPError, LocalEntryNotFoundError, HFValidationError, httpx2.HTTPError)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or huggingface_hub.constants.ENDPOINT


def _status_error(base: str, error: HfHubHTTPError) -> UserError:
    code = error.response.status_code if error.response is not None else 0
    what = status_message(code, error.response.reason_phrase if error.response is not None else "")
    if code >= 500 or code in {408, 429}:
        return NetworkError(f"{base}: the Hub answered {what}; {_AGAIN}")
    return UserError(f"{base}: the Hub answered {what}")


def _unreached(base: str, cause: BaseException | None) -> UserError:
    """The error of a download that got no usable answer from the Hub (``cause``: why not)."""
    if cause is None or isinstance(cause, OfflineModeIsEnabled):
        return UserError(
            f"{base}: {WEIGHTS_FILE} is not in the local Hub cache and HF_HUB_OFFLINE is set; "
            "unset it to download"
        )
    if isinstance(cause, HfHubHTTPError) and cause.response is not None:
        return _status_error(base, cause)
    host = urllib.parse.urlsplit(_endpoint()).netloc
    detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if isinstance(cause, httpx2.TimeoutException):
        stall = _active.stall if _active else stall_timeout()
        return NetworkError(f"{base}: the Hub at {host} stalled (no answer in {stall:g} s); {_AGAIN}")
    if isinstance(cause, httpx2.TransportError):
        offline = " (offline?)" if any(s in detail for s in _NO_CONNECTION) else ""
        return NetworkError(f"{base}: cannot connect to the Hub at {host}{offline} ({detail}); {_AGAIN}")
    return UserError(f"{base}: the Hub at {host} did not answer as the Hub does ({detail})")


def _hub_error(base: str, revision: str | None, exc: Exception) -> UserError:
    """One line for a failed Hub download."""
    where = f"{parse_hf(base)[0]}" + (f"@{revision}" if revision else "")
    if isinstance(exc, GaveUpError):
        return NetworkError(f"{base}: could not download {WEIGHTS_FILE}: {exc}; {_AGAIN}")
    if isinstance(exc, GatedRepoError):
        return UserError(f"{base}: gated repository; accept its terms and log in first")
    if isinstance(exc, RepositoryNotFoundError):
        return UserError(f"{base}: no such repository on the Hub (or private: check the token / access)")
    if isinstance(exc, RevisionNotFoundError):
        return UserError(f"{base}: the repository has no revision {revision!r}")
    if isinstance(exc, RemoteEntryNotFoundError):
        return UserError(f"{base}: {where} has no {WEIGHTS_FILE} (not written by `sslboost push`?)")
    if isinstance(exc, LocalEntryNotFoundError):
        return _unreached(base, exc.__cause__)
    if isinstance(exc, HFValidationError):
        return UserError(f"{base}: invalid repository name ({exc})")
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return _status_error(base, exc)
    return _unreached(base, exc)


def _download(repo_id: str, revision: str | None, stall: float) -> str:
    """The repository's ``sslboost.safetensors``, else the ``model.safetensors`` of a repository
    pushed before the full checkpoint had its own name (the error is the one of the first file)."""
    options = dict(
        revision=revision, local_files_only=_offline(), endpoint=_endpoint(), etag_timeout=stall,
        tqdm_class=_TerminalBar,
    )  # fmt: skip
    try:
        return hf_hub_download(repo_id, WEIGHTS_FILE, **options)
    except RemoteEntryNotFoundError as missing:
        try:
            return hf_hub_download(repo_id, MODEL_FILE, **options)
        except RemoteEntryNotFoundError:
            raise missing from None


def download_hf(base: str, stall_timeout_s: float | None = None) -> Path:
    """Download (or find in the Hub cache) the repository's full checkpoint ``sslboost.safetensors``
    (``model.safetensors`` in a repository of the earlier layout).

    ``stall_timeout_s`` defaults to :func:`~e2mc_cli.network.stall_timeout`.
    """
    repo_id, revision = parse_hf(base)
    stall = stall_timeout(stall_timeout_s)
    with scrubbing(), deadlines(stall):  # the errors below are scrubbed on their way out
        try:
            path = _download(repo_id, revision, stall)
        except _HUB_ERRORS as exc:
            raise _hub_error(base, revision, exc) from None
        except OSError as exc:
            if exc.errno is not None:  # a fault of this machine (disk full, read-only cache …)
                raise
            raise NetworkError(f"{base}: the download from the Hub failed ({exc})") from None
    return Path(path)
