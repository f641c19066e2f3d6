"""Export a run folder for use elsewhere: it becomes a Hub model repository.

``export_run(run_dir)`` reads the canonical checkpoint ``sslboost.safetensors`` of a run folder and
writes, each atomically (:mod:`e2mc_cli.io`) and only after everything was computed in memory:

- ``model.safetensors``: the ResNet alone, keys with torchvision/timm names (``backbone.``
  stripped, no ``fc``), so that ``torchvision.models.resnet50().load_state_dict(..., strict=False)``
  misses only ``fc.*`` and ``timm.create_model("local-dir:RUN", pretrained=True)`` (or
  ``hf-hub:ORG/NAME`` once pushed) loads it; its metadata names the checkpoint's provenance and
  sends sslboost's own readers to ``sslboost.safetensors``;
- ``config.json``: timm's hub layout plus an ``sslboost`` provenance section
  (:mod:`e2mc_cli.publish.config_json`);
- ``README.md``: the model card (:mod:`e2mc_cli.publish.card`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from e2mc_cli.checkpoint import BACKBONE_FORMAT, load_checkpoint, save_state_dict
from e2mc_cli.errors import UserError
from e2mc_cli.io import write_json_atomic, write_text_atomic
from e2mc_cli.models import build_backbone
from e2mc_cli.publish.card import build_model_card
from e2mc_cli.publish.config_json import timm_config
from e2mc_cli.publish.run_folder import RunInfo, checkpoint_file, eval_files, read_run
from e2mc_cli.run_layout import (
    CARD_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EXPORT_FILES,
    LEGACY_FILES,
    MODEL_FILE,
    RECIPE_FILE,
    SUMMARY_FILE,
)


def backbone_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone tensors of a canonical state dict under torchvision/timm names.

    ``backbone.`` is stripped; heads and any ``fc.*`` are dropped. BatchNorm's
    ``num_batches_tracked`` buffers stay: torchvision's and timm's ResNets both have them.
    """
    out = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    return {k: v for k, v in out.items() if not k.startswith("fc.")}


def _check_backbone(tensors: dict[str, torch.Tensor], arch: str, source: Path) -> None:
    """A UserError unless ``tensors`` load strictly into a fresh ``arch`` backbone."""
    probe = build_backbone(arch)
    try:
        missing, unexpected = probe.load_state_dict(tensors, strict=False)
        problem = f"missing {missing[:3]}, unexpected {unexpected[:3]}" if missing or unexpected else ""
    except RuntimeError:  # same names, other shapes
        problem = "tensor shapes differ"
    if problem:
        raise UserError(f"{source}: its backbone does not match a {arch} ({problem})")


def backbone_metadata(info: RunInfo) -> dict[str, str]:
    """The root ``model.safetensors``' metadata: ``format = pt`` (what the Hub's loaders expect),
    the mark by which :func:`~e2mc_cli.checkpoint.load_checkpoint` reads the full checkpoint beside
    it, and the checkpoint's provenance (method, arch, base, criterion, epoch, steps, recipe)."""
    keys = ("method", "arch", "base", "criterion", "epoch", "steps", "recipe")
    return {
        "format": "pt",
        "sslboost": BACKBONE_FORMAT,
        **{k: info.metadata[k] for k in keys if k in info.metadata},
    }


def stale_exports(run_dir: str | Path) -> list[str]:
    """Export files that are missing or older than what they are built from (all of them for a
    folder of the earlier layout, whose root ``model.safetensors`` is the full checkpoint)."""
    run = Path(run_dir)
    checkpoint = checkpoint_file(run)
    if checkpoint.name != CHECKPOINT_FILE:
        return list(EXPORT_FILES)
    model_mtime = checkpoint.stat().st_mtime
    sources = [checkpoint, run / RECIPE_FILE, run / SUMMARY_FILE, *eval_files(run)]
    card_sources = max(p.stat().st_mtime for p in sources if p.is_file())
    out = []
    for name in EXPORT_FILES:
        p = run / name
        newest = card_sources if name == CARD_FILE else model_mtime
        if not p.is_file() or p.stat().st_mtime < newest:
            out.append(name)
    return out


def _adopt_layout(info: RunInfo) -> list[str]:
    """Give a folder of the earlier layout today's: its full checkpoint (the root
    ``model.safetensors``) moves to ``sslboost.safetensors``; an earlier export's
    ``backbone.safetensors`` goes (the root file replaces it). A warning for the move."""
    run = info.run_dir
    for name in LEGACY_FILES:
        (run / name).unlink(missing_ok=True)
    if not info.legacy_layout:
        return []
    os.replace(info.checkpoint, run / CHECKPOINT_FILE)
    return [
        f"{MODEL_FILE} was the full checkpoint (a run folder of the earlier layout): moved to "
        f"{CHECKPOINT_FILE}; {MODEL_FILE} is now the backbone alone"
    ]


@dataclass
class ExportResult:
    """The files an export wrote, and what it left out of the card and why."""

    files: list[Path]
    warnings: list[str]


def export_run(run_dir: str | Path, *, repo_id: str | None = None) -> ExportResult:
    """Write the root ``model.safetensors``, ``config.json`` and ``README.md`` into a run folder.

    Everything is computed (and the backbone checked by a strict load into a fresh backbone) before
    the first file is written; each file is written atomically. A folder of the earlier layout is
    given today's first (:func:`_adopt_layout`).
    """
    info = read_run(run_dir)
    run = info.run_dir
    tensors = backbone_state_dict(load_checkpoint(info.checkpoint).state_dict)
    _check_backbone(tensors, info.arch, info.checkpoint)
    config = timm_config(info)
    card = str(build_model_card(info, repo_id))
    warnings = [*info.warnings, *_adopt_layout(info)]
    save_state_dict(run / MODEL_FILE, tensors, backbone_metadata(info))
    write_json_atomic(run / CONFIG_FILE, config)
    write_text_atomic(run / CARD_FILE, card)
    return ExportResult([run / name for name in EXPORT_FILES], warnings)
