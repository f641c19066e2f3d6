"""Downloads into the cache: resumable, atomic, checksummed, with a progress bar.

- ``dest.part`` receives the bytes; an interrupted download continues from its size with an HTTP
  ``Range`` request (automatically a few times, and again on the next call).
- Only after the size and the sha256 are checked (and an optional ``validate`` hook accepts the
  file) is ``dest.part`` renamed onto ``dest``, with its digest recorded in ``dest.sha256``.
- Every later use re-hashes ``dest`` and compares it with that record: a changed file is refused.
- ``SSLBOOST_MIRROR`` replaces the ``https://dl.fbaipublicfiles.com`` prefix of a URL.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
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

MIRROR_ENV = "SSLBOOST_MIRROR"
OFFICIAL_HOST = "https://dl.fbaipublicfiles.com"  # where the official checkpoints and subsets lie
CHUNK = 1 << 20
TIMEOUT_S = 60.0
ATTEMPTS = 3  # tries per call; each continues where the previous one stopped
RETRY_DELAY_S = 1.0


def mirror_url(url: str) -> str:
    """``url`` with the official host replaced by ``$SSLBOOST_MIRROR`` when that is set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror and url.startswith(OFFICIAL_HOST + "/"):
        return mirror.rstrip("/") + url[len(OFFICIAL_HOST) :]
    return url


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def record_path(path: str | os.PathLike) -> Path:
    """Where the sha256 of a cached file is recorded: ``<file>.sha256``."""
    p = Path(path)
    return p.with_name(p.name + ".sha256")


def recorded_sha256(path: str | os.PathLike) -> str | None:
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


def _network_error(url: str, reason: object, resumable: bool = False) -> UserError:
    hint = (
        f"{MIRROR_ENV}={os.environ[MIRROR_ENV]} is in effect"
        if os.environ.get(MIRROR_ENV)
        else f"without access to {OFFICIAL_HOST}, set {MIRROR_ENV} to a mirror of it"
    )
    again = "; run the command again to resume" if resumable else ""
    return UserError(f"could not download {url}: {reason}{again} ({hint})")


def _transfer(url: str, part: Path, progress: Progress) -> tuple[int, int | None]:
    """One request: append to ``part`` (from its current size); return (bytes on disk, total)."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"sslboost/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the part is not a prefix the server can continue
            part.unlink()
            return _transfer(url, part, progress)
        raise
    with response:
        status = response.getcode()
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            total = start + length if length is not None else None
            mode = "ab"
        else:  # 200 (or a file:// URL): the whole file, from the start
            start, total, mode = 0, length, "wb"
        task = progress.add_task(part.name.removesuffix(".part"), total=total, completed=start)
        with open(part, mode) as f:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                progress.advance(task, len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise http.client.IncompleteRead(b"", total - size)
    return size, total


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    progress: bool = True,
    validate: Callable[[Path], None] | None = None,
) -> Path:
    """Fetch ``url`` into ``dest`` (resumable, atomic, checksummed); return ``dest``.

    An existing ``dest`` is verified against its recorded sha256 (and ``sha256``) and reused.
    ``validate(path)`` may inspect the finished download before it is accepted; a
    :class:`UserError` from it rejects the file. Network failures are one :class:`UserError`.
    """
    dest = Path(dest)
    if dest.is_file():
        verify_file(dest, sha256)
        return dest
    url = mirror_url(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _progress(progress) as bar:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                _transfer(url, part, bar)
                break
            except urllib.error.HTTPError as exc:
                raise _network_error(url, f"HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc.__class__.__name__
                if isinstance(exc, http.client.IncompleteRead):
                    reason = "the connection closed before the end of the file"
                if attempt == ATTEMPTS:
                    resumable = part.exists() and part.stat().st_size > 0
                    raise _network_error(url, reason, resumable) from None
                time.sleep(RETRY_DELAY_S * attempt)
    actual = sha256_file(part)
    if sha256 and actual != sha256.lower():
        part.unlink()
        raise UserError(
            f"the download of {url} has sha256 {actual[:16]}…, expected {sha256.lower()[:16]}…: "
            "the file is corrupted and was not kept; try again or check the mirror"
        )
    if validate is not None:
        try:
            validate(part)
        except UserError as exc:
            part.unlink()
            raise UserError(f"the download of {url} was rejected and not kept: {exc}") from None
    write_text_atomic(record_path(dest), f"{actual}  {dest.name}\n")
    os.replace(part, dest)
    return dest
