"""``config.json``: the configuration ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` reads.

timm's hub layout: ``architecture``, ``num_classes`` (0: no classifier), ``num_features``,
``global_pool`` and ``pretrained_cfg`` with the evaluation preprocessing and, for a backbone that
is timm's own model, ``hf_hub_filename = "backbone.safetensors"`` (so timm loads the backbone
alone, not the canonical checkpoint). An ``sslboost`` section records the provenance: base,
method, arch, criterion, epoch(s), heads, recipe, command and whether timm can load it.
"""

from __future__ import annotations

import math

from e2mc_cli.publish.run_folder import BACKBONE_FILE, MODEL_FILE, TIMM_ARCHS, RunInfo

# Preprocessing of the official linear evaluations and of `sslboost eval`: resize the short side to
# PX·256/224, centre-crop PX (crop_pct 0.875), bilinear, ImageNet mean / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pretrained_cfg(info: RunInfo, size: int) -> dict:
    cfg = {
        "tag": f"sslboost-{info.method}-{info.criterion}",
        "custom_load": False,
        "input_size": [3, size, size],
        "fixed_input_size": False,
        "interpolation": "bilinear",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "num_classes": 0,
        "first_conv": "conv1",
        "classifier": "fc",
    }
    if info.timm_compatible:
        cfg["pool_size"] = [math.ceil(size / 32)] * 2
        cfg["hf_hub_filename"] = BACKBONE_FILE
    return cfg


def _provenance(info: RunInfo) -> dict:
    return {
        "format": info.metadata.get("format"),
        "timm_compatible": info.timm_compatible,
        "weights": BACKBONE_FILE,
        "checkpoint": MODEL_FILE,
        "base": info.base,
        "method": info.method,
        "arch": info.arch,
        "criterion": info.criterion,
        "epoch": info.epoch,
        "epochs": info.epochs,
        "heads": info.heads,
        "recipe": info.recipe,
        "command": info.command,
    }


def timm_config(info: RunInfo) -> dict:
    """``config.json``: timm's layout (what ``timm.create_model("hf-hub:...")`` reads) + ``sslboost``."""
    size = info.image_size or (224 if info.arch in TIMM_ARCHS else 32)
    return {
        "architecture": TIMM_ARCHS.get(info.arch, info.arch),
        "num_classes": 0,
        "num_features": info.num_features,
        "global_pool": "avg",
        "pretrained_cfg": _pretrained_cfg(info, size),
        "sslboost": _provenance(info),
    }
