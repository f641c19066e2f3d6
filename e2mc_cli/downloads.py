"""Downloads into the cache: resumable, atomic, checksummed, with deadlines and a progress bar.

- ``dest.part`` receives the bytes; an interrupted download continues from its size with an HTTP
  ``Range`` request (automatically, up to :data:`ATTEMPTS` tries with a doubling pause, each retry
  reported on one line of stderr; and again on the next call). Refused or unresolved connections,
  server errors (5xx, 408, 429) and dropped connections are retried; a stall only when that try
  had moved forward, so a server that sends nothing fails within one stall timeout.
- The deadlines and the failures are those of :mod:`e2mc_cli.network`: a connect timeout, the
  stall timeout, one line naming the HTTP status or the connection fault; a bad address or status
  is a :class:`~e2mc_cli.errors.UserError` (exit code 2), a fault of the network or the server a
  :class:`~e2mc_cli.network.NetworkError` (exit code 3: run the command again once it is cleared,
  the download resumes). Every message goes through :func:`~e2mc_cli.secrets.scrub`.
- Only after the size and the sha256 are checked (and an optional ``validate`` hook accepts the
  file) is ``dest.part`` renamed onto ``dest``, with its digest recorded in ``dest.sha256``.
- Every later use re-hashes ``dest`` and compares it with that record: a changed file is refused.
- ``SSLBOOST_MIRROR`` replaces the ``https://dl.fbaipublicfiles.com`` prefix of a URL.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from e2mc_cli import __version__
from e2mc_cli.errors import UserError
from e2mc_cli.io import write_text_atomic
from e2mc_cli.network import (
    NetworkError,
    StallWatch,
    TransferError,
    build_opener,
    open_url,
    read_piece,
    stall_timeout,
)
from e2mc_cli.secrets import scrub

MIRROR_ENV = "SSLBOOST_MIRROR"
OFFICIAL_HOST = "https://dl.fbaipublicfiles.com"  # where the official checkpoints and subsets lie
HASH_BLOCK = 1 << 20
ATTEMPTS = 4  # tries per call; each continues where the previous one stopped
RETRY_DELAY_S = 1.0  # the pause before the first retry; doubled before each next one


def mirror_url(url: str) -> str:
    """``url`` with the official host replaced by ``$SSLBOOST_MIRROR`` when that is set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror and url.startswith(OFFICIAL_HOST + "/"):
        return mirror.rstrip("/") + url[len(OFFICIAL_HOST) :]
    return url


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def record_path(path: str | os.PathLike) -> Path:
    """Where the sha256 of a cached file is recorded: ``<file>.sha256``."""
    p = Path(path)
    return p.with_name(p.name + ".sha256")


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 recorded for a cached file, or ``None``."""
    rec = record_path(path)
    if not rec.is_file():
        return None
    text = rec.read_text().split()
    return text[0].lower() if text else None


def verify_file(path: str | os.PathLike, sha256: str | None = None, hint: str = "") -> str:
    """Check ``path`` against its recorded (and the pinned) sha256; return the digest.

    A file without a record gets one (its first verified use). A mismatch is a :class:`UserError`
    naming the file and what to do.
    """
    p = Path(path)
    actual = sha256_file(p)
    redo = hint or "download it again"
    for expected, what in ((recorded_sha256(p), "recorded"), (sha256, "pinned")):
        if expected and expected.lower() != actual:
            raise UserError(
                f"{p}: sha256 {actual[:16]}… does not match the {what} {expected.lower()[:16]}…; "
                f"the file is corrupted or was changed: delete it and {redo}"
            )
    if recorded_sha256(p) is None:
        write_text_atomic(record_path(p), f"{actual}  {p.name}\n")
    return actual


def _transfer(opener, url: str, part: Path, progress: Progress, stall: float) -> None:
    """One request: append to ``part`` (from its current size) until the body ends."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"sslboost/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = open_url(opener, urllib.request.Request(url, headers=headers), stall)
    except TransferError as exc:
        if start and exc.status == 416:  # the part is no prefix the server can continue
            part.unlink()
            return _transfer(opener, url, part, progress, stall)
        raise
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if response.getcode() == 206:
            total = start + length if length is not None else None
            mode = "ab"
        else:  # 200 (or a file:// URL): the whole file, from the start
            start, total, mode = 0, length, "wb"
        task = progress.add_task(part.name.removesuffix(".part"), total=total, completed=start)
        watch = StallWatch(stall)
        with open(part, mode) as f:
            while piece := read_piece(response, watch):
                f.write(piece)
                progress.advance(task, len(piece))
    if total is not None and part.stat().st_size < total:
        raise TransferError("the connection closed before the end of the file", True, True)


# --- the download ---------------------------------------------------------------------------


def _progress(enabled: bool) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    )


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} bytes"


def _kept(part: Path) -> int:
    return part.stat().st_size if part.exists() else 0


def _where() -> str:
    if os.environ.get(MIRROR_ENV):
        return f"{MIRROR_ENV}={os.environ[MIRROR_ENV]} is in effect"
    return f"without access to {OFFICIAL_HOST}, set {MIRROR_ENV} to a mirror of it"


def _failed(url: str, failure: TransferError, attempts: int, part: Path) -> UserError:
    """The one line of a download that failed ``attempts`` times."""
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    again = ""
    if failure.fault:
        kept = _kept(part)
        again = f"; {_size(kept)} kept: run the command again to resume" if kept else "; try again later"
    error = NetworkError if failure.fault else UserError
    return error(scrub(f"could not download {url}: {failure.reason}{tries}{again} ({_where()})"))


def _fetch_part(url: str, part: Path, progress: Progress, stall: float) -> None:
    """Fill ``part`` with the whole file, retrying with a doubling pause; each retry on one line."""
    opener = build_opener(stall)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(opener, url, part, progress, stall)
            return
        except TransferError as exc:
            failure = exc
        if not failure.retryable or attempt == ATTEMPTS:
            raise _failed(url, failure, attempt, part)
        delay = RETRY_DELAY_S * 2 ** (attempt - 1)
        kept = f", {_size(_kept(part))} kept" if _kept(part) else ""
        line = f"{url}: {failure.reason}; retrying in {delay:g} s (attempt {attempt + 1} of {ATTEMPTS}{kept})"
        progress.console.print(scrub(line), markup=False, highlight=False, emoji=False, soft_wrap=True)
        time.sleep(delay)


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    progress: bool = True,
    validate: Callable[[Path], None] | None = None,
    stall_timeout_s: float | None = None,
) -> Path:
    """Fetch ``url`` into ``dest`` (resumable, atomic, checksummed); return ``dest``.

    An existing ``dest`` is verified against its recorded sha256 (and ``sha256``) and reused.
    ``validate(path)`` may inspect the finished download before it is accepted; a
    :class:`UserError` from it rejects the file. ``stall_timeout_s`` defaults to
    :func:`~e2mc_cli.network.stall_timeout`. Failures are one :class:`UserError` or :class:`NetworkError`.
    """
    dest = Path(dest)
    if dest.is_file():
        verify_file(dest, sha256)
        return dest
    stall = stall_timeout(stall_timeout_s)
    url = mirror_url(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _progress(progress) as bar:
        _fetch_part(url, part, bar, stall)
    actual = sha256_file(part)
    if sha256 and actual != sha256.lower():
        part.unlink()
        raise UserError(
            scrub(
                f"the download of {url} has sha256 {actual[:16]}…, expected {sha256.lower()[:16]}…: "
                "the file is corrupted and was not kept; try again or check the mirror"
            )
        )
    if validate is not None:
        try:
            validate(part)
        except UserError as exc:
            part.unlink()
            raise UserError(scrub(f"the download of {url} was rejected and not kept: {exc}")) from None
    write_text_atomic(record_path(dest), f"{actual}  {dest.name}\n")
    os.replace(part, dest)
    return dest
