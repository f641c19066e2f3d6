"""The two records a training run starts from: what the command asked for (:class:`TrainOptions`)
and what the run is once everything is resolved (:class:`RunPlan`, made by
:func:`e2mc_cli.training.setup.plan_run`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from e2mc_cli.checkpoint import Checkpoint
from e2mc_cli.data.pipeline import ViewPipeline
from e2mc_cli.training.data import loader_settings


@dataclass
class TrainOptions:
    """What ``sslboost continue`` passes to :func:`e2mc_cli.training.loop.run` (``None``: from the
    recipe / default)."""

    base: str | None = None
    base_file: str | None = None
    method: str | None = None
    allow_new_heads: bool = False  # --allow-new-heads: heads the base lacks start from random weights
    criterion: str | None = None  # None: "e2mc" for a new run, the saved one on --resume
    data: str | None = None
    out: str | None = None
    recipe_file: str | None = None
    epochs: float | None = None  # a fraction trains that share of an epoch's steps
    batch_size: int | None = None
    lr: float | None = None
    image_size: int | None = None
    sets: list[str] = field(default_factory=list)
    max_steps: int | None = None
    snapshot_epochs: list[float] | None = None  # run.snapshot_epochs (training.snapshots); None: the recipe's
    # stop at the run's next snapshot point (sslboost study --epochs evaluates each point as it is reached)
    stop_at_snapshot: bool = False
    workers: int | None = None  # None: training.data.default_workers(), the node's cores shared out
    augment: str | None = None  # None: training.data.DEFAULT_AUGMENT for a new run, the saved one on --resume
    decode: str | None = None  # --decode: where JPEG files are decoded (None: cpu, the loader's workers)
    compile: bool = False
    precision: str | None = None  # --precision; None: the recipe's run.precision (see RunPlan)
    resume: bool = False
    overwrite: bool = False
    device: str = "auto"
    argv: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunPlan:
    """One run, resolved before anything is built or written.

    A new run and a resumed one differ only in these values: a new run has ``base`` (the weights
    it starts from) and ``start_step`` 0; a resumed one has ``saved`` (the training state it
    continues from, :mod:`e2mc_cli.training.state`) and the step it stopped at. The forward pass
    runs in ``precision`` (:mod:`e2mc_cli.precision`; also the recipe's ``run.precision``), in
    channels_last.
    """

    out: Path  # the run folder
    recipe: dict  # the resolved recipe (saved as recipe.toml and in the checkpoint metadata)
    method_name: str
    arch: str
    heads: dict
    base: Checkpoint | None  # the base checkpoint of a new run; None when resuming
    base_name: str  # the base as given (--base, or the --base-file path)
    base_epoch: float  # the base's pre-training epochs (from its metadata)
    saved: dict | None  # the training state a resumed run continues from; None for a new run
    start_step: int
    data: str  # the --data spec
    dataset: Dataset
    device: torch.device
    rank: int
    world: int
    batch_size: int  # global, over all processes
    steps_per_epoch: int
    total_steps: int  # of the recipe's epochs
    end_step: int  # where this invocation stops (total_steps, or --max-steps)
    max_steps: int | None  # the run's --max-steps (kept by a resume that gives none)
    warmup_steps: int
    schedule: str
    final_lr_ratio: float
    log_every: int  # steps between metrics lines (training.progress.metrics_interval of run.log_every)
    checkpoint_every: int
    seed: int
    workers: int  # data-loading processes per training process
    pipeline: ViewPipeline  # how the method's views are made (loader workers and device)
    method_options: dict
    criterion_options: dict
    compile: bool
    precision: str  # bf16 | fp16 | fp32: --precision, else the recipe's on CUDA and fp32 elsewhere
    command: str  # the command line that started the run (recorded in the checkpoint metadata)
    resume_command: str  # the command that continues this run
    notes: tuple[str, ...] = ()  # what the run prints before it starts
    snapshot_steps: tuple[int, ...] = ()  # the steps of run.snapshot_epochs (training.snapshots)

    @property
    def resuming(self) -> bool:
        return self.saved is not None

    @property
    def criterion_name(self) -> str:
        return self.recipe["criterion"]["name"]

    @property
    def is_main(self) -> bool:
        """Whether this process writes the files (rank 0)."""
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def augment(self) -> str:
        """Where the views are made (``--augment``): the pipeline's mode."""
        return self.pipeline.augment

    @property
    def loader(self) -> dict:
        """How the batches are loaded: workers, prefetch, pinned memory, augment mode
        (:func:`~e2mc_cli.training.data.loader_settings`)."""
        return loader_settings(self.workers, self.cuda, self.augment)
