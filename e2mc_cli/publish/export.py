"""Export a run folder for use elsewhere: the backbone alone, a timm config and a model card.

``export_run(run_dir)`` reads the canonical checkpoint ``model.safetensors`` of a run folder and
writes, each atomically (:mod:`e2mc_cli.io`) and only after everything was computed in memory:

- ``backbone.safetensors``: the ResNet alone, keys with torchvision/timm names (``backbone.``
  stripped, no ``fc``), so that ``torchvision.models.resnet50().load_state_dict(..., strict=False)``
  misses only ``fc.*`` and ``timm.create_model("resnet50", pretrained=True,
  pretrained_cfg_overlay=dict(file=...), num_classes=0)`` loads it;
- ``config.json``: timm's hub layout plus an ``sslboost`` provenance section
  (:mod:`e2mc_cli.publish.config_json`);
- ``README.md``: the model card (:mod:`e2mc_cli.publish.card`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from e2mc_cli.checkpoint import load_checkpoint, save_state_dict
from e2mc_cli.errors import UserError
from e2mc_cli.io import write_json_atomic, write_text_atomic
from e2mc_cli.models import build_backbone
from e2mc_cli.publish.card import build_model_card
from e2mc_cli.publish.config_json import timm_config
from e2mc_cli.publish.run_folder import eval_files, read_run
from e2mc_cli.run_layout import BACKBONE_FILE, CARD_FILE, CONFIG_FILE, EXPORT_FILES, MODEL_FILE


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


def stale_exports(run_dir: str | Path) -> list[str]:
    """Export files that are missing or older than what they are built from."""
    run = Path(run_dir)
    model_mtime = (run / MODEL_FILE).stat().st_mtime
    sources = [run / MODEL_FILE, run / "recipe.toml", run / "summary.json", *eval_files(run)]
    card_sources = max(p.stat().st_mtime for p in sources if p.is_file())
    out = []
    for name in EXPORT_FILES:
        p = run / name
        newest = card_sources if name == CARD_FILE else model_mtime
        if not p.is_file() or p.stat().st_mtime < newest:
            out.append(name)
    return out


@dataclass
class ExportResult:
    """The files an export wrote, and what it left out of the card and why."""

    files: list[Path]
    warnings: list[str]


def export_run(run_dir: str | Path, *, repo_id: str | None = None) -> ExportResult:
    """Write ``backbone.safetensors``, ``config.json`` and ``README.md`` into a run folder.

    Everything is computed (and the backbone checked by a strict load into a fresh backbone) before
    the first file is written; each file is written atomically.
    """
    info = read_run(run_dir)
    run = info.run_dir
    tensors = backbone_state_dict(load_checkpoint(run / MODEL_FILE).state_dict)
    _check_backbone(tensors, info.arch, run / MODEL_FILE)
    config = timm_config(info)
    card = str(build_model_card(info, repo_id))
    meta = {
        "format": "pt",
        "source": "sslboost",
        **{k: str(config["sslboost"][k]) for k in ("arch", "method", "base", "criterion", "epoch")},
    }
    save_state_dict(run / BACKBONE_FILE, tensors, meta)
    write_json_atomic(run / CONFIG_FILE, config)
    write_text_atomic(run / CARD_FILE, card)
    return ExportResult([run / BACKBONE_FILE, run / CONFIG_FILE, run / CARD_FILE], info.warnings)
