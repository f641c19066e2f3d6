"""Publish a run folder on the Hugging Face Hub: one commit with every publishable file.

Publishable: ``sslboost.safetensors``, ``model.safetensors``, ``config.json``, ``README.md``,
``recipe.toml``, ``summary.json``, ``metrics.jsonl``, the ``eval.json`` of every evaluation below
the run folder (``eval-after/linear-1pct/eval.json`` included) and, beside each, its
``predictions.npz`` when it is small (at most :data:`MAX_PREDICTIONS_BYTES`: what ``sslboost
compare`` needs), and what ``--log tensorboard`` and ``--log csv`` wrote into the run folder and
into those evaluation folders (``tensorboard/`` event files, which the Hub shows in the model's
*Training metrics* tab; ``metrics.csv``, ``results.csv``). Never ``checkpoints/`` (training state,
optimiser included), ``wandb/`` (a W&B run goes to W&B with ``wandb sync``) or anything else.

The token comes from ``HF_TOKEN`` or the huggingface-hub login (``hf auth login``); it is handed
to :class:`huggingface_hub.HfApi` and to nothing else: never printed, logged or written (every
message and warning of a push goes through :func:`~e2mc_cli.secrets.scrub`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.utils import HfHubHTTPError, HFValidationError, validate_repo_id

from e2mc_cli import __version__
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.records import PREDICTIONS_FILE
from e2mc_cli.io import write_text_atomic
from e2mc_cli.network import NetworkError
from e2mc_cli.publish.card import build_model_card
from e2mc_cli.publish.export import export_run, stale_exports
from e2mc_cli.publish.run_folder import check_run_dir, eval_files, read_run
from e2mc_cli.run_layout import (
    CARD_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CSV_METRICS_FILE,
    CSV_RESULTS_FILE,
    MODEL_FILE,
    RECORD_FILES,
    TENSORBOARD_DIR,
)
from e2mc_cli.secrets import scrub, scrubbing

__all__ = ["PUBLISHABLE", "PushResult", "UploadFile", "publishable_files", "push_run", "resolve_token"]

PUBLISHABLE = (CHECKPOINT_FILE, MODEL_FILE, CONFIG_FILE, CARD_FILE, *RECORD_FILES)
REQUIRED = (CHECKPOINT_FILE, MODEL_FILE, CONFIG_FILE, CARD_FILE)
MAX_PREDICTIONS_BYTES = 10 * 1024 * 1024  # an evaluation's predictions.npz is pushed up to this size

# What a failed Hub call raises: the Hub's HTTP errors, the HTTP library's own (its transport
# errors included; huggingface-hub's HTTP error derives from it), connection errors, bad arguments.
_HUB_ERRORS = (
    *(c for c in HfHubHTTPError.__mro__ if c.__module__ != "builtins"),
    OSError,
    ValueError,
)


@dataclass(frozen=True)
class UploadFile:
    """One file of a push: its path in the repository, on disk, and its size in bytes."""

    path_in_repo: str
    local: Path
    size: int


@dataclass
class PushResult:
    """What a push sent (or, with ``dry_run``, would send) and where it went."""

    repo_id: str
    revision: str | None
    private: bool
    message: str
    files: list[UploadFile]
    dry_run: bool
    exported: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    repo_url: str | None = None
    commit_url: str | None = None

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def resolve_token(token: str | None = None) -> str | None:
    """``token``, else ``HF_TOKEN``, else the huggingface-hub login; None when there is none."""
    return token or os.environ.get("HF_TOKEN") or huggingface_hub.get_token() or None


def publishable_files(run_dir: str | Path) -> list[UploadFile]:
    """The files of a run folder that a push uploads, in upload order."""
    run = Path(run_dir)
    paths = [run / name for name in PUBLISHABLE if (run / name).is_file()]
    paths += tracker_files(run)
    for record in eval_files(run):
        predictions = record.with_name(PREDICTIONS_FILE)
        small = predictions.is_file() and predictions.stat().st_size <= MAX_PREDICTIONS_BYTES
        paths += [record, predictions] if small else [record]
        paths += tracker_files(record.parent)
    return [UploadFile(p.relative_to(run).as_posix(), p, p.stat().st_size) for p in paths]


def tracker_files(folder: Path) -> list[Path]:
    """What the TensorBoard and CSV trackers wrote into ``folder``: every file under
    ``tensorboard/`` (sorted), then ``metrics.csv`` and ``results.csv`` where they are."""
    board = folder / TENSORBOARD_DIR
    events = sorted(p for p in board.rglob("*") if p.is_file()) if board.is_dir() else []
    return events + [folder / n for n in (CSV_METRICS_FILE, CSV_RESULTS_FILE) if (folder / n).is_file()]


def _check_repo_id(repo: str) -> str:
    if repo.count("/") != 1:
        raise UserError(f"--repo {repo!r}: expected ORG/NAME (for example me/swav800-e2mc)")
    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise UserError(
            f"--repo {repo!r}: not a valid Hub repository id (letters, digits, '-', '_', '.'; ORG/NAME)"
        ) from None
    return repo


def default_message(run_dir: str | Path) -> str:
    """The commit message of a push without ``--message``: method, base, criterion and epoch."""
    info = read_run(run_dir)
    epoch = f", epoch {info.epoch}" if info.epoch is not None else ""
    return f"sslboost: {info.method} from {info.base} + {info.criterion}{epoch}"


def _prepare(run_dir: Path, repo_id: str) -> tuple[list[str], list[str]]:
    """Export what is missing or stale; give an unedited card the repository's load snippets.

    Returns (files written, warnings). A card that was edited by hand is kept as it is.
    """
    stale = stale_exports(run_dir)
    if MODEL_FILE in stale or CONFIG_FILE in stale:
        result = export_run(run_dir, repo_id=repo_id)
        return [p.name for p in result.files], result.warnings
    info = read_run(run_dir)
    wanted = str(build_model_card(info, repo_id))
    card = run_dir / CARD_FILE
    current = card.read_text() if card.is_file() else None
    generic = str(build_model_card(info, None))
    if CARD_FILE in stale or (current == generic and current != wanted):
        write_text_atomic(card, wanted)
        return [CARD_FILE], info.warnings
    return [], info.warnings


@scrubbing()
def _push_error(repo_id: str, exc: Exception, token: str | None) -> UserError:
    """One scrubbed line for a failed push: a fault of the Hub or the network (5xx, 408, 429, no
    connection) is a :class:`~e2mc_cli.network.NetworkError` (exit 3: push again later)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    message = scrub(f"push to {repo_id} failed: {first}", token)
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    transient = code is None and not isinstance(exc, (HfHubHTTPError, OfflineModeIsEnabled))
    if transient or (code is not None and (code >= 500 or code in (408, 429))):
        return NetworkError(message)
    return UserError(message)


def push_run(
    run_dir: str | Path,
    repo: str,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    message: str | None = None,
    token: str | None = None,
) -> PushResult:
    """Upload a run folder to ``repo`` in one commit (creating the repository and branch if needed).

    The exports are written first when missing or older than ``sslboost.safetensors``. With
    ``dry_run`` nothing is sent and no token is needed: the result lists the files and message.
    """
    run = check_run_dir(run_dir)
    repo_id = _check_repo_id(repo)
    revision = revision or None
    if not dry_run:
        token = resolve_token(token)
        if not token:
            raise UserError(
                "no Hugging Face token: set HF_TOKEN or log in with `hf auth login` (or use --dry-run)"
            )
    exported, warnings = _prepare(run, repo_id)
    files = publishable_files(run)
    absent = [name for name in REQUIRED if name not in {f.path_in_repo for f in files}]
    if absent:  # pragma: no cover - export writes them
        raise UserError(f"{run}: missing {', '.join(absent)} after export")
    message = message or default_message(run)
    result = PushResult(repo_id, revision, private, message, files, dry_run, exported, warnings)
    if dry_run:
        return result

    api = HfApi(token=token, library_name="sslboost", library_version=__version__)
    try:
        result.repo_url = str(api.create_repo(repo_id, private=True if private else None, exist_ok=True))
        if revision and revision != "main" and not revision.startswith("refs/"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local)) for f in files
        ]
        info = api.create_commit(repo_id, operations, commit_message=message, revision=revision)
    except _HUB_ERRORS as exc:
        raise _push_error(repo_id, exc, token) from None
    result.commit_url = getattr(info, "commit_url", None)
    return result
