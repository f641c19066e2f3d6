"""The layout of a run folder (the ``--out`` of ``sslboost continue`` and ``pretrain``): the names
of the files training writes and of those an export adds beside them, so that training, publishing
and ``--overwrite`` agree on what a run folder holds.

Training writes ``model.safetensors`` (the canonical checkpoint), ``recipe.toml``,
``metrics.jsonl``, ``summary.json`` and ``checkpoints/last.pt``; an export adds
``backbone.safetensors``, ``config.json`` and the model card ``README.md``. Evaluations live in
``eval*/`` folders (:mod:`e2mc_cli.evaluate.records`). The trackers of ``--log``
(:mod:`e2mc_cli.trackers`) write ``tensorboard/``, ``wandb/``, ``metrics.csv`` and ``results.csv``
into the folder they log.
"""

from __future__ import annotations

from pathlib import Path

MODEL_FILE = "model.safetensors"
RECIPE_FILE = "recipe.toml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
STATE_FILE = Path("checkpoints") / "last.pt"

BACKBONE_FILE = "backbone.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
EXPORT_FILES = (BACKBONE_FILE, CONFIG_FILE, CARD_FILE)

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
CSV_METRICS_FILE = "metrics.csv"
CSV_RESULTS_FILE = "results.csv"
TRACKER_OUTPUTS = (TENSORBOARD_DIR, WANDB_DIR, CSV_METRICS_FILE, CSV_RESULTS_FILE)

TRAINING_OUTPUTS = (MODEL_FILE, RECIPE_FILE, METRICS_FILE, SUMMARY_FILE, STATE_FILE.parts[0])
