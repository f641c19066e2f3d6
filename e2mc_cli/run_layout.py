"""The layout of a run folder (the ``--out`` of ``sslboost continue`` and ``pretrain``): the names
of the files training writes and of those an export adds beside them, so that training, publishing
and ``--overwrite`` agree on what a run folder holds.

A run folder is laid out as a Hugging Face Hub model repository. Training writes
``sslboost.safetensors`` (the canonical checkpoint: backbone and every head), ``recipe.toml``,
``metrics.jsonl``, ``summary.json``, ``checkpoints/last.pt`` and, for a recipe with
``run.snapshot_epochs``, ``snapshots/epoch-<e>/`` (:mod:`e2mc_cli.training.snapshots`); an export
adds, at the root, ``model.safetensors`` (the backbone alone, under timm's and torchvision's names, which
``timm.create_model("local-dir:RUN")`` and ``torchvision.models.resnet50().load_state_dict``
read), ``config.json`` (timm's configuration) and the model card ``README.md``. Evaluations live
anywhere below the run folder (``eval*/eval.json``, ``eval-after/linear-1pct/eval.json``;
:mod:`e2mc_cli.evaluate.records`).

Run folders written before the full checkpoint had its own name hold it as ``model.safetensors``
(beside an exported ``backbone.safetensors``); an export moves it to ``sslboost.safetensors``.

The trackers of ``--log`` (:mod:`e2mc_cli.trackers`) write ``tensorboard/``, ``wandb/``,
``metrics.csv`` and ``results.csv`` into the folder they log.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_FILE = "sslboost.safetensors"
RECIPE_FILE = "recipe.toml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
STATE_FILE = Path("checkpoints") / "last.pt"
SNAPSHOTS_DIR = "snapshots"  # snapshots/epoch-<e>/sslboost.safetensors: the model at chosen epochs
RECORD_FILES = (RECIPE_FILE, SUMMARY_FILE, METRICS_FILE)  # the run's record, published beside the weights

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
EXPORT_FILES = (MODEL_FILE, CONFIG_FILE, CARD_FILE)

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
CSV_METRICS_FILE = "metrics.csv"
CSV_RESULTS_FILE = "results.csv"
TRACKER_OUTPUTS = (TENSORBOARD_DIR, WANDB_DIR, CSV_METRICS_FILE, CSV_RESULTS_FILE)

TRAINING_OUTPUTS = (CHECKPOINT_FILE, RECIPE_FILE, METRICS_FILE, SUMMARY_FILE, STATE_FILE.parts[0])

LEGACY_BACKBONE_FILE = "backbone.safetensors"
LEGACY_FILES = (LEGACY_BACKBONE_FILE,)  # what an export of the earlier layout wrote; export removes it


def run_folder_of(path: Path) -> Path | None:
    """The run folder a weights file belongs to (the folder of a ``model.safetensors`` or an
    ``sslboost.safetensors``), else None: what a figure names a run by."""
    return path.parent if path.name in (MODEL_FILE, CHECKPOINT_FILE) else None
