"""Publish a run folder: timm config, model card, export, and the push to the Hugging Face Hub.

- :mod:`~e2mc_cli.publish.run_folder`: :class:`RunInfo`, what a run folder says about itself
  (:func:`read_run`; the file names are :mod:`e2mc_cli.run_layout`'s).
- :mod:`~e2mc_cli.publish.datasets`: the Hub names of the datasets and of the split evaluated.
- :mod:`~e2mc_cli.publish.config_json`: ``config.json``, what timm reads.
- :mod:`~e2mc_cli.publish.usage`: the card's loading snippets.
- :mod:`~e2mc_cli.publish.card`: the model card ``README.md``.
- :mod:`~e2mc_cli.publish.export`: :func:`export_run` writes the three export files.
- :mod:`~e2mc_cli.publish.hub`: :func:`push_run`, one commit to a Hub repository.
"""

from e2mc_cli.publish.card import build_model_card
from e2mc_cli.publish.config_json import timm_config
from e2mc_cli.publish.export import ExportResult, backbone_state_dict, export_run, stale_exports
from e2mc_cli.publish.hub import (
    PUBLISHABLE,
    PushResult,
    UploadFile,
    publishable_files,
    push_run,
    resolve_token,
)
from e2mc_cli.publish.run_folder import (
    TIMM_ARCHS,
    RunInfo,
    check_run_dir,
    checkpoint_file,
    eval_files,
    read_run,
)
from e2mc_cli.run_layout import CARD_FILE, CHECKPOINT_FILE, CONFIG_FILE, EXPORT_FILES, MODEL_FILE

__all__ = [
    "CARD_FILE",
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "EXPORT_FILES",
    "MODEL_FILE",
    "PUBLISHABLE",
    "TIMM_ARCHS",
    "ExportResult",
    "PushResult",
    "RunInfo",
    "UploadFile",
    "backbone_state_dict",
    "build_model_card",
    "check_run_dir",
    "checkpoint_file",
    "eval_files",
    "export_run",
    "publishable_files",
    "push_run",
    "read_run",
    "resolve_token",
    "stale_exports",
    "timm_config",
]
