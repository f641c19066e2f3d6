"""The continued pre-training loop behind ``sslboost continue``.

:func:`run` plans the run (:mod:`~e2mc_cli.training.setup`), builds its state
(:mod:`~e2mc_cli.training.state`), prepares the run folder (:mod:`~e2mc_cli.training.outputs`) and
iterates: one loader for the whole run (:func:`~e2mc_cli.training.data.run_loader`, its workers
started once), one :func:`~e2mc_cli.training.step.train_step` per batch, metrics every
``log_every`` steps, the training state every ``checkpoint_every`` steps and at every epoch end,
the state and a snapshot of the model at each point of ``run.snapshot_epochs``
(:mod:`~e2mc_cli.training.snapshots`), and at the end ``sslboost.safetensors`` and
``summary.json``. Exporting the run folder (root
``model.safetensors``, config, model card) is the command's business, after the run.

The host does not stop the device's queue to look at a step: each step's loss terms are read
once the next step is queued (:mod:`~e2mc_cli.training.terms`), and the progress display, the
metrics lines and the non-finite check use them then; the health monitor's statistics (which do
read the device) are computed on logging steps only. Under DDP the stop signals are agreed every
:data:`STOP_CHECK_EVERY` steps (every step in one process: a flag of the host).

Never losing a run: the state written when the run stops lets ``--resume`` continue bit for bit
(data order and augmentations depend only on seed, epoch and index). SIGINT/SIGTERM finish the
current step, save and return ``"interrupted"``; a fault of the machine (a full disk) or a second
Ctrl-C keeps the last checkpoint and records the step to continue from on the exception. A
non-finite loss raises :class:`~e2mc_cli.training.step.NonFiniteLoss` naming the step that went
bad and its bad terms, when that step's terms are read: by then the bad step (and the one queued
after it) may have changed the weights, but the terms of every step are read before a checkpoint
is written, so no bad step is ever saved and the last checkpoint stays as it was.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the method runs in DistributedDataParallel (NCCL on
GPU, gloo on CPU) with every BatchNorm synchronised over the global batch, as the official code;
only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from rich.markup import escape

from e2mc_cli import distributed as D
from e2mc_cli.errors import add_next_step
from e2mc_cli.run_layout import STATE_FILE
from e2mc_cli.trackers import Trackers
from e2mc_cli.training.data import run_loader
from e2mc_cli.training.outputs import append_metrics, prepare_folder, write_final
from e2mc_cli.training.plan import RunPlan, TrainOptions
from e2mc_cli.training.progress import TrainProgress
from e2mc_cli.training.setup import plan_run
from e2mc_cli.training.snapshots import snapshot_summary, write_snapshot
from e2mc_cli.training.state import TrainState, build_state
from e2mc_cli.training.step import NonFiniteLoss, StepRecord, nonfinite_message, train_step

__all__ = ["STOP_CHECK_EVERY", "Loop", "RunResult", "StopSignals", "how_to_continue", "run"]

STOP_CHECK_EVERY = 10  # steps between two agreements on the stop signals under DDP


@dataclass
class RunResult:
    """How a run ended: ``status`` is ``"finished"``, ``"max_steps"`` or ``"interrupted"``."""

    status: str
    out: Path
    summary: dict
    resume_command: str
    is_main: bool  # whether this process wrote the files (rank 0)


class StopSignals:
    """SIGINT/SIGTERM while a run trains: the first asks it to stop after the current step, a second
    quits at once. A context manager; the previous handlers come back on exit."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.signum: int | None = None
        self._pid = os.getpid()
        self._handlers: dict = {}

    def __enter__(self) -> StopSignals:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._handlers[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread: no signal handling
            self._handlers = {}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a forked data-loader worker: the main process decides
            return
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        self.say(
            f"\n[yellow]{signal.Signals(signum).name}:[/] finishing the current step and saving "
            "(press Ctrl-C again to quit at once)"
        )

    def requested(self, device: torch.device, step: int = 0) -> bool:
        """Whether to stop after optimiser step ``step``: in one process, whether a signal came;
        under DDP, whether any process got one, agreed by all of them (a collective, so every
        process calls this after every step) on the steps that are multiples of
        :data:`STOP_CHECK_EVERY`, and ``False`` on the others."""
        stop = self.signum is not None
        if not D.is_distributed():
            return stop
        if step % STOP_CHECK_EVERY:
            return False
        t = torch.tensor([float(stop)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t[0])


class Loop:
    """Iterates one planned run over its state: loader, steps, logging, checkpoints, signals."""

    def __init__(
        self,
        plan: RunPlan,
        state: TrainState,
        console: Console,
        say: Callable[[str], None],
        trackers: Trackers,
    ):
        self.plan, self.state, self.say, self.trackers = plan, state, say, trackers
        self.t_start = time.perf_counter()
        self.saved_step = state.step
        self.last_log = (self.t_start, state.step)
        self.progress = TrainProgress(console, plan)
        self.pending: StepRecord | None = None  # the last step queued, its terms not read yet

    def wall(self) -> float:
        """Training seconds so far, earlier invocations of a resumed run included."""
        return self.state.wall_before + (time.perf_counter() - self.t_start)

    def save(self) -> None:
        """Read the pending step's terms (a bad step is never saved), then write the state."""
        self.settle()
        self.state.save(self.plan.out / STATE_FILE, self.plan, self.wall())
        self.saved_step = self.state.step

    def kept(self) -> str:
        """Which checkpoint a failed run leaves."""
        path = self.plan.out / STATE_FILE
        if path.exists():
            return f"the last good checkpoint is {path} (step {self.saved_step})"
        return "no checkpoint was written yet"

    def logging_step(self, step: int) -> bool:
        """Whether optimiser step ``step`` gets a metrics line (and the health monitor)."""
        return step % self.plan.log_every == 0 or step == self.plan.end_step

    def step(self, views: list[torch.Tensor]) -> StepRecord:
        """Queue the next step; if it fails, the step before it is read first: a non-finite step
        (which made the weights NaN, say, for a decomposition to refuse) is named rather than the
        error it caused."""
        epoch = self.state.step // self.plan.steps_per_epoch
        try:
            return train_step(self.state, self.plan, views, epoch)
        except RuntimeError:
            # under DDP the step may have failed on this process alone: no metrics line, whose
            # write is a collective the others, already in the next step, would not meet
            self.settle(write=not D.is_distributed())
            raise

    def queue(self, record: StepRecord) -> None:
        """The step just queued becomes the pending one, once the one before it is read (its
        embeddings are kept only for a logging step's health monitor)."""
        if not self.logging_step(record.step):
            record = dataclasses.replace(record, embeddings=())
        self.settle()
        self.pending = record

    def settle(self, write: bool = True) -> None:
        """Read the pending step's terms: a non-finite loss raises :class:`NonFiniteLoss` naming the
        step and its bad terms; else the step is logged (:meth:`log`; not with ``write=False``)."""
        record, self.pending = self.pending, None
        if record is None:
            return
        nonfinite, terms = record.read()
        if nonfinite:
            raise NonFiniteLoss(f"{nonfinite_message(terms, record.step, record.epoch + 1)}; {self.kept()}")
        if write:
            self.log(record, terms)

    def log(self, record: StepRecord, terms: dict[str, float]) -> None:
        """The progress display after every step; a metrics line (and health) on logging steps."""
        plan, state = self.plan, self.state
        state.last_terms = terms
        now = time.perf_counter()
        img_s = (record.step - self.last_log[1]) * plan.batch_size / max(now - self.last_log[0], 1e-9)
        self.progress.update(record.step, record.lr, terms, img_s)
        if not self.logging_step(record.step):
            return
        line = {"step": record.step, "epoch": round(record.step / plan.steps_per_epoch, 6)}
        line.update({**terms, "lr": record.lr, "img_s": round(img_s, 3)})

        def write() -> None:
            line.update(state.health.update(record.step, [e.float() for e in record.embeddings]))
            append_metrics(plan.out, line)
            self.trackers.log_metrics(line)

        D.on_main_process(write)
        self.last_log = (now, record.step)

    def iterate(self, signals: StopSignals) -> bool:
        """Train up to the plan's end step through one loader; ``True`` when a signal stopped it."""
        plan, state = self.plan, self.state
        write_snapshot(plan, state, self.wall())  # resumed on a point whose snapshot is missing
        if state.step >= plan.end_step:
            return False
        for batch in run_loader(plan, state.step, plan.end_step):
            state.failed_indices.update(int(i) for i in batch.failed)
            self.queue(self.step(plan.pipeline.to_device(batch, plan.device)))
            point = state.step in plan.snapshot_steps
            if point:  # the state first: a stop from here on resumes at or after the point
                self.save()
                write_snapshot(plan, state, self.wall())
            if signals.requested(plan.device, state.step):
                return True
            if state.step >= plan.end_step:
                break
            due = state.step % plan.checkpoint_every == 0 or state.step % plan.steps_per_epoch == 0
            if due and not point:
                self.save()
        return False

    def run(self) -> tuple[str, dict]:
        """Train, save the state and write the final outputs; ``(status, summary)``."""
        with StopSignals(self.say) as signals:
            with self.progress:
                stopped = self.iterate(signals)
                self.settle()
            if stopped:
                status = "interrupted"
            elif self.state.step < self.plan.total_steps:
                status = "max_steps"
            else:
                status = "finished"
            self.save()
            summary = write_final(self.plan, self.state, status, self.wall(), snapshot_summary(self.plan))
            D.barrier()
        return status, summary


def how_to_continue(plan: RunPlan, saved_step: int) -> str:
    """How to carry on after a fault or Ctrl-C: resume from the checkpoint kept, else start again."""
    if (plan.out / STATE_FILE).is_file():
        return f"continue from step {saved_step} with: {plan.resume_command}"
    return "run the command again"


def _train(plan: RunPlan, console: Console, trackers: Trackers) -> tuple[str, dict]:
    """Build the state, prepare the folder (rank 0) and train; a fault or Ctrl-C carries the step to
    continue from (:func:`e2mc_cli.errors.add_next_step`)."""

    def say(text: str) -> None:
        if plan.is_main:
            console.print(text, highlight=False, soft_wrap=True)

    loop = None
    try:
        for note in plan.notes:
            say(escape(note))
        state = build_state(plan, say)
        D.barrier()  # every process has checked --out before rank 0 writes into it

        def prepare() -> None:
            prepare_folder(plan)
            for where in trackers.start(
                plan.out, plan.recipe, resume_step=plan.start_step if plan.resuming else None
            ):
                say(escape(where))

        D.on_main_process(prepare)  # the others wait for it, and stop with it if it fails
        loop = Loop(plan, state, console, say, trackers)
        return loop.run()
    except (OSError, KeyboardInterrupt) as exc:
        add_next_step(exc, how_to_continue(plan, plan.start_step if loop is None else loop.saved_step))
        raise


def run(opts: TrainOptions, console: Console | None = None, trackers: Trackers | None = None) -> RunResult:
    """Plan, set up and train one run (see the module docstring); ``trackers`` (started here on the
    run folder, closed by the caller) get the recipe and every metrics line."""
    trackers = trackers or Trackers()
    console = console or Console(emoji=False)
    device = D.pick_device(opts.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same shapes
    started = D.join_process_group(device)
    try:
        plan = plan_run(opts, device, D.rank(), D.world_size())
        status, summary = _train(plan, console, trackers)
    finally:
        D.leave(started)
    return RunResult(status, plan.out, summary, plan.resume_command, plan.is_main)
