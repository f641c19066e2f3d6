"""``config.json``: the configuration ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` and
``timm.create_model("local-dir:RUN", pretrained=True)`` read.

timm's hub layout: ``architecture``, ``num_classes`` (0: no classifier), ``num_features``,
``global_pool`` and ``pretrained_cfg`` with the evaluation preprocessing and, for a backbone that
is timm's own model, ``hf_hub_filename = "model.safetensors"`` (the backbone alone; ``local-dir:``
reads that file by its name). An ``sslboost`` section records the provenance: base, method, arch,
criterion, epoch(s), heads, recipe, command, the two weight files and whether timm can load them.
"""

from __future__ import annotations

import math

from e2mc_cli.data.transforms import PHOTOS, EvalPreprocessing, dataset_kind, eval_preprocessing
from e2mc_cli.publish.run_folder import TIMM_ARCHS, RunInfo
from e2mc_cli.run_layout import CHECKPOINT_FILE, MODEL_FILE
from e2mc_cli.zoo.registry import builtin_data


def training_data(info: RunInfo) -> str | None:
    """The data the run trained on, as far as the run folder says: its ``summary.json`` ``data``,
    else the built-in base's dataset; None when unknown."""
    spec = info.summary.get("data") or builtin_data(info.base)
    return spec if isinstance(spec, str) and spec else None


def training_data_kind(info: RunInfo) -> str:
    """The kind of data the run trained on (:func:`training_data`), which decides the evaluation
    preprocessing; photographs when unknown."""
    spec = training_data(info)
    return dataset_kind(spec) if spec else PHOTOS


def run_preprocessing(info: RunInfo) -> EvalPreprocessing:
    """The preprocessing ``sslboost eval`` applies to this run's model on its training data."""
    return eval_preprocessing(info.metadata, training_data_kind(info))


def _pretrained_cfg(info: RunInfo, prep: EvalPreprocessing) -> dict:
    cfg = {
        "tag": f"sslboost-{info.method}-{info.criterion}",
        "custom_load": False,
        **prep.timm_fields(),
        "fixed_input_size": False,
        "num_classes": 0,
        "first_conv": "conv1",
        "classifier": "fc",
    }
    if info.timm_compatible:
        cfg["pool_size"] = [math.ceil(prep.image_size / 32)] * 2
        cfg["hf_hub_filename"] = MODEL_FILE
    return cfg


def _provenance(info: RunInfo) -> dict:
    return {
        "format": info.metadata.get("format"),
        "timm_compatible": info.timm_compatible,
        "weights": MODEL_FILE,
        "checkpoint": CHECKPOINT_FILE,
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
    return {
        "architecture": TIMM_ARCHS.get(info.arch, info.arch),
        "num_classes": 0,
        "num_features": info.num_features,
        "global_pool": "avg",
        "pretrained_cfg": _pretrained_cfg(info, run_preprocessing(info)),
        "sslboost": _provenance(info),
    }
