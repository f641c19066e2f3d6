"""The hostile corpus: every case runs a command as a hostile user or a failing machine would and
checks the promises of the README's "Exit codes and guarantees": the documented exit code, one
``error:`` line, no traceback, no temporary file left behind, the last good state kept."""

from __future__ import annotations

from pathlib import Path

import pytest

TEMPORARY_PATTERNS = ("*.tmp", ".*.tmp")


def temporaries(folder: Path) -> list[Path]:
    """Temporary files an atomic write left under ``folder`` (none may survive a command)."""
    if not folder.exists():
        return []
    return sorted({p for pattern in TEMPORARY_PATTERNS for p in folder.rglob(pattern)})


def assert_one_line_failure(result, code: int, *, contains: str | None = None, folder: Path | None = None):
    """``result`` (the ``cli`` fixture's) failed with exit ``code`` and one ``error:`` line, no
    traceback anywhere, ``contains`` in that line, and no temporary file under ``folder``."""
    err = result.stderr
    assert result.exit_code == code, (result.exit_code, result.stdout, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err and "Traceback" not in result.stdout
    if contains is not None:
        assert contains in lines[0], lines[0]
    if folder is not None:
        assert temporaries(folder) == [], temporaries(folder)
    return lines[0]


@pytest.fixture
def one_line_failure():
    """:func:`assert_one_line_failure` as a fixture."""
    return assert_one_line_failure


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny training inputs (:mod:`test_train`'s): ``data`` (an image folder) and ``bases`` (one
    resnet-mini checkpoint per method)."""
    from test_train import make_bases, make_data

    root = tmp_path_factory.mktemp("hostile")
    return {"data": make_data(root / "data"), "bases": make_bases(root)}


def train_args(env: dict, out: Path, *extra, method: str = "vicreg") -> list:
    """``sslboost continue`` of ``env``'s ``method`` base into ``out``: tiny batches and images."""
    from test_train import SMALL

    return ["continue", "--base", env["bases"][method], "--data", env["data"], "--out", out, *SMALL, *extra]
