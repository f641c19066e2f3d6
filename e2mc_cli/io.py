"""Atomic file writes (nothing half-written is ever left under the final name), appended log lines,
the byte-stable header of a safetensors file, and the cache folder.

A write that fails leaves the previous file untouched and no temporary file behind, and fails
with an :class:`OSError` that names the final path (not the temporary one). Libraries that report
a failed write in their own words are recognised: torch's ``enforce fail … unexpected pos`` /
``PytorchStreamWriter failed`` and safetensors' ``I/O error: … (os error 28)`` become the OSError
they stand for, so that the CLI reports them as a fault of the machine (exit code 3).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "SSLBOOST_CACHE"
# how torch's writer says that a write failed (it keeps no errno)
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed", "iostream error")
OS_ERROR_CODE = re.compile(r"os error (\d+)")  # safetensors (Rust): "I/O error: … (os error 28)"
FULL_BELOW_BYTES = 1 << 20  # a device with less free space than this counts as full


def cache_dir() -> Path:
    """The cache folder every download and derived file shares: ``$SSLBOOST_CACHE``, default
    ``~/.cache/sslboost``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sslboost"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_temporary_of(name: str | bytes | None, final: Path) -> bool:
    """Whether ``name`` is one of :func:`atomic_path`'s temporary files for ``final`` (or unset)."""
    if name is None:
        return True
    p = Path(os.fsdecode(name))
    return p.parent == final.parent and p.name.startswith(f".{final.name}.") and p.name.endswith(".tmp")


def _device_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < FULL_BELOW_BYTES
    except OSError:
        return False


def write_failure(final: Path, exc: BaseException) -> OSError | None:
    """The OSError naming ``final`` that a failed write ``exc`` stands for, or ``None`` when ``exc``
    is not a failed write (a bug or bad input, which keeps its own type)."""
    if isinstance(exc, OSError):
        if exc.errno is None or not _is_temporary_of(exc.filename, final):
            return None  # already names its own path (a folder, the source of a copy)
        code = exc.errno
    elif (m := OS_ERROR_CODE.search(str(exc))) is not None:
        code = int(m.group(1))
    elif isinstance(exc, RuntimeError) and any(s in str(exc) for s in TORCH_WRITE_FAILURES):
        code = errno.ENOSPC if _device_full(final.parent) else errno.EIO
    else:
        return None
    return OSError(code, os.strerror(code), str(final))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    On any failure the temporary file is removed and ``path`` keeps its previous contents; a failed
    write is raised as an OSError naming ``path`` (:func:`write_failure`).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp_path, final)
    except Exception as exc:
        fault = write_failure(final, exc)
        if fault is None:
            raise
        raise fault from exc
    finally:
        if tmp_path is not None and (tmp_path.exists() or tmp_path.is_symlink()):
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` and a newline to ``path``, flushed at once (a log that a resume trims); a
    failed write is an OSError naming ``path``."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc


def sort_safetensors_metadata(path: str | os.PathLike) -> None:
    """Rewrite the header of the safetensors file ``path`` in place with its metadata keys sorted.

    safetensors writes the metadata in an order that changes from one process to the next; sorted,
    the same tensors and metadata always give the same bytes (a resumed run's files equal an
    uninterrupted run's). The header keeps its length, so the tensors do not move.
    """
    with open(path, "r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        metadata = header.pop("__metadata__", None)
        if metadata is not None:
            header = {"__metadata__": dict(sorted(metadata.items())), **header}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:
            raise ValueError(f"{path}: the sorted safetensors header does not fit its {size} bytes")
        f.seek(8)
        f.write(text.ljust(size, b" "))
