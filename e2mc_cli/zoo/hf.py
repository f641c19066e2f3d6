"""Bases published on the Hugging Face Hub by ``sslboost push``: ``hf://ORG/NAME[@REVISION]``."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.utils import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from e2mc_cli.errors import UserError
from e2mc_cli.run_layout import CHECKPOINT_FILE, MODEL_FILE

PREFIX = "hf://"
WEIGHTS_FILE = CHECKPOINT_FILE


def is_hf(base: str) -> bool:
    return base.startswith(PREFIX)


def parse_hf(base: str) -> tuple[str, str | None]:
    """``hf://ORG/NAME[@REV]`` → (``ORG/NAME``, revision or ``None``)."""
    ref = base[len(PREFIX) :]
    repo_id, _, revision = ref.partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or (_ and not revision):
        raise UserError(f"{base!r}: expected hf://ORG/NAME or hf://ORG/NAME@REVISION")
    return repo_id, revision or None


def _download(repo_id: str, revision: str | None, offline: bool) -> str:
    """The repository's ``sslboost.safetensors``; the root ``model.safetensors`` of a repository
    pushed before the full checkpoint had its own name (the error is the one of the first file)."""
    try:
        return hf_hub_download(repo_id, WEIGHTS_FILE, revision=revision, local_files_only=offline)
    except EntryNotFoundError as missing:
        try:
            return hf_hub_download(repo_id, MODEL_FILE, revision=revision, local_files_only=offline)
        except EntryNotFoundError:
            raise missing from None


def download_hf(base: str) -> Path:
    """Download (or find in the Hub cache) the repository's full checkpoint ``sslboost.safetensors``."""
    repo_id, revision = parse_hf(base)
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    try:
        return Path(_download(repo_id, revision, offline))
    except RepositoryNotFoundError:
        raise UserError(f"{base}: no such repository on the Hub (or it is private)") from None
    except RevisionNotFoundError:
        raise UserError(f"{base}: the repository has no revision {revision!r}") from None
    except GatedRepoError:
        raise UserError(f"{base}: gated repository; accept its terms and log in first") from None
    except EntryNotFoundError as exc:
        if isinstance(exc, FileNotFoundError):  # not in the local cache and no connection
            raise UserError(
                f"{base}: {WEIGHTS_FILE} of {where} is not in the local Hub cache and the Hub cannot "
                "be reached (offline, or HF_HUB_OFFLINE is set)"
            ) from None
        raise UserError(f"{base}: {where} has no {WEIGHTS_FILE} (not written by `sslboost push`?)") from None
    except HFValidationError as exc:
        raise UserError(f"{base}: invalid repository name ({exc})") from None
    except (HfHubHTTPError, OSError) as exc:
        raise UserError(f"{base}: could not download from the Hub ({exc})") from None
