"""The continued pre-training loop behind ``sslboost continue``.

One optimiser step: the method's views of a global batch (each process its contiguous slice),
``out = method(views)`` (bf16 autocast and channels_last on CUDA), the criterion on
``out.embeddings`` (criteria with ``views = "all"``: ``out.all_embeddings``) — criteria all-gather
across processes themselves — ``loss = out.loss + criterion_out.loss``, a finiteness check of
every term, ``backward``, the method's ``on_after_backward`` hook, the optimiser step. The learning
rate follows the recipe's schedule per step.

Never losing a run: the training state (:mod:`e2mc_cli.training.state`) is written every
``checkpoint_every`` steps, at every epoch end and when the run stops; ``--resume`` continues
bit for bit (data order and augmentations depend only on seed, epoch and index). SIGINT/SIGTERM
finish the current step, save and return ``"interrupted"``. A non-finite loss raises
:class:`NonFiniteLoss` before the bad step changes anything; the last checkpoint stays as it was.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the method runs in DistributedDataParallel (NCCL on
GPU, gloo on CPU) with every BatchNorm synchronised over the global batch, as the official code;
only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from torch.utils.data import DataLoader

from e2mc_cli import distributed as D
from e2mc_cli.checkpoint import Checkpoint, save_checkpoint
from e2mc_cli.errors import UserError
from e2mc_cli.io import write_json_atomic, write_text_atomic
from e2mc_cli.publish import EXPORT_FILES, export_run
from e2mc_cli.training import recipe as R
from e2mc_cli.training import state as S
from e2mc_cli.training.data import EpochBatches, SeededViews, collate_views, default_workers
from e2mc_cli.training.optim import apply_lr, build_optimizer, lr_factor
from e2mc_cli.training.progress import TrainProgress
from e2mc_cli.training.syncbn import convert_sync_batchnorm

OUTPUTS = (
    "model.safetensors",
    "recipe.toml",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
    *EXPORT_FILES,
)
STATE_FILE = Path("checkpoints") / "last.pt"


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the message names the term(s) and the kept checkpoint."""


@dataclass
class TrainOptions:
    """What ``sslboost continue`` passes to :func:`run` (``None``: from the recipe / default)."""

    base: str | None = None
    base_file: str | None = None
    method: str | None = None
    criterion: str | None = None  # None: "e2mc" for a new run, the saved one on --resume
    data: str | None = None
    out: str | None = None
    recipe_file: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    image_size: int | None = None
    sets: list[str] = field(default_factory=list)
    max_steps: int | None = None
    workers: int | None = None  # None: default_workers(), the CPU cores up to 4
    compile: bool = False
    resume: bool = False
    overwrite: bool = False
    device: str = "auto"
    argv: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    status: str  # "finished", "max_steps" or "interrupted"
    out: Path
    summary: dict
    resume_command: str


# -- small helpers ---------------------------------------------------------------------------------


def base_label(base: str | None, base_file: str | None) -> str:
    """A short name for a base, used in the default output folder ``runs/<label>-<criterion>``."""
    text = base or str(base_file or "base")
    if text.startswith("hf://"):
        return text[5:].split("@")[0].rstrip("/").split("/")[-1]
    p = Path(text)
    if p.suffix in (".safetensors", ".pth", ".tar", ".pt"):
        return p.parent.name if p.stem == "model" and p.parent.name else p.stem.split(".")[0]
    return p.name or text


def default_out(base: str | None, base_file: str | None, criterion: str) -> Path:
    return Path("runs") / f"{base_label(base, base_file)}-{criterion}"


def resume_command(argv: list[str]) -> str:
    args = list(argv)
    for flag in ("--overwrite",):
        while flag in args:
            args.remove(flag)
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["sslboost", *args])


def _epoch_text(value: float) -> str:
    value = round(value, 4)
    return str(int(value)) if value == int(value) else str(value)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (out / STATE_FILE).is_file():
            raise UserError(f"{out}: nothing to resume (no {STATE_FILE}); start a run without --resume")
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"--out {out}: folder exists and is not empty; continue that run with --resume, "
            "pick another --out, or replace it with --overwrite"
        )


def _clear_outputs(out: Path) -> None:
    for name in OUTPUTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _remove_temporaries(out: Path) -> None:
    """Temporary files a killed process left behind (``.<name>.<random>.tmp``; never final files)."""
    for folder in (out, out / "checkpoints"):
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)


def _init_distributed(device: str) -> tuple[torch.device, bool]:
    """Join the process group torchrun describes in the environment (if any); pick the device."""
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    started = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if want_cuda else "gloo"
        if want_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
        started = True
    if want_cuda:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))), started
    return torch.device("cpu"), started


def _resolve_base(opts: TrainOptions) -> Checkpoint:
    from e2mc_cli.zoo import resolve_base

    if not opts.base and not opts.base_file:
        raise UserError(
            "no base: pass --base NAME | hf://ORG/NAME | PATH.safetensors, or --base-file PATH --method M"
        )
    return resolve_base(opts.base, base_file=opts.base_file, method=opts.method)


def _bad_terms(terms: dict[str, float]) -> list[str]:
    return [f"{k} = {v}" for k, v in terms.items() if not math.isfinite(v)]


# -- one step (shared with ``sslboost bench train``) ----------------------------------------------


def forward_step(module, criterion, views: list[torch.Tensor], device: torch.device):
    """Views to ``(loss, method_out, criterion_out)``: bf16 autocast and channels_last on CUDA.

    ``module`` is the method (or its DistributedDataParallel wrapper); the criterion gets
    ``out.all_embeddings`` when its ``views`` is ``"all"``, else ``out.embeddings``.
    """
    cuda = device.type == "cuda"
    views = [v.to(device, non_blocking=True) for v in views]
    if cuda:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        out = module(views)
        feed = out.all_embeddings if criterion.views == "all" else out.embeddings
        cout = criterion(list(feed))
    return out.loss.float() + cout.loss.float(), out, cout


def collect_terms(method_name: str, criterion_name: str, loss, out, cout) -> dict[str, float]:
    """Every loss term as a float, prefixed by its source, read from the device in one transfer."""
    tensors = {
        "loss": loss.detach(),
        f"{method_name}.loss": out.loss.detach().float(),
        **{f"{method_name}.{k}": torch.as_tensor(v).detach().float() for k, v in out.terms.items()},
        f"{criterion_name}.loss": cout.loss.detach().float(),
    }
    values = torch.stack([t.to(loss.device).reshape(()) for t in tensors.values()]).tolist()
    terms = dict(zip(tensors, values))
    terms.update({f"{criterion_name}.{k}": float(v) for k, v in cout.terms.items()})
    return terms


def backward_step(method, optimizer, loss: torch.Tensor, step: int) -> None:
    """``backward``, the method's ``on_after_backward`` hook, the optimiser step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    method.on_after_backward(step)
    optimizer.step()


# -- the run ---------------------------------------------------------------------------------------


class Trainer:
    """Sets a run up (base, recipe, data, method, criterion, optimiser, state) and trains it."""

    def __init__(self, opts: TrainOptions, console: Console | None = None):
        self.opts = opts
        self.console = console or Console()
        self.stop_signal: int | None = None

    # ---- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        from e2mc_cli.criteria import build_criterion
        from e2mc_cli.data.datasets import resolve_dataset
        from e2mc_cli.methods import build_method, build_model, view_transform

        opts = self.opts
        self.device, self._started_pg = _init_distributed(opts.device)
        self.rank, self.world = D.rank(), D.world_size()
        self.is_main = self.rank == 0
        saved = None
        if opts.resume:
            if opts.out is None:
                raise UserError("--resume needs --out DIR (the folder of the run to continue)")
            self.out = Path(opts.out)
            _check_out(self.out, True, False)
            saved = S.load_training_state(self.out / STATE_FILE)
            self.recipe = saved["recipe"]
            self.model_info = saved["model_info"]
            criterion = self.recipe["criterion"]["name"]
            if opts.criterion and opts.criterion != criterion:
                raise UserError(f"{self.out}: this run trains with {criterion!r}, not {opts.criterion!r}")
            overrides = [opts.recipe_file, opts.epochs, opts.batch_size, opts.lr, opts.image_size, *opts.sets]
            if any(o is not None for o in overrides):
                self._message(
                    f"note: resuming with the recipe saved in {self.out / 'recipe.toml'}; "
                    "recipe options on the command line are ignored"
                )
            data = opts.data or saved.get("data")
            model = build_model(self.model_info["method"], self.model_info["arch"], self.model_info["heads"])
        else:
            if opts.recipe_file is not None:
                in_file = R.load_toml(Path(opts.recipe_file)).get("criterion", {}).get("name")
                if opts.criterion and in_file and opts.criterion != in_file:
                    raise UserError(
                        f"--recipe {opts.recipe_file} trains with {in_file!r}, "
                        f"not --criterion {opts.criterion}"
                    )
                opts.criterion = opts.criterion or in_file
            opts.criterion = opts.criterion or "e2mc"
            R._check_criterion(opts.criterion)
            self.out = Path(opts.out) if opts.out else default_out(opts.base, opts.base_file, opts.criterion)
            _check_out(self.out, False, opts.overwrite)
            from e2mc_cli.zoo import builtin_data

            data = opts.data or builtin_data(opts.base)
            if not data:
                raise UserError("--data is required: an ImageFolder root or a built-in dataset (fmnist)")
            self.dataset = resolve_dataset(data, "train")
            ckpt = _resolve_base(opts)
            recipe_file, extra_sets = opts.recipe_file, []
            if recipe_file is None:
                recipe_file, extra_sets = R.base_recipe_file(opts.base, opts.criterion)
            model = ckpt.build_model()
            self.recipe = R.resolve_recipe(
                ckpt.method,
                opts.criterion,
                recipe_file=recipe_file,
                epochs=opts.epochs,
                batch_size=opts.batch_size,
                lr=opts.lr,
                image_size=opts.image_size,
                sets=[*extra_sets, *opts.sets],
            )
            try:
                base_epoch = float(ckpt.metadata.get("epoch", "0") or 0)
            except ValueError:
                base_epoch = 0.0
            self.model_info = {
                "method": model.method,
                "arch": model.arch,
                "heads": model.heads,
                "base": opts.base or str(opts.base_file),
                "base_epoch": base_epoch,
            }
        self.data_spec = data
        if saved is not None:
            self.dataset = resolve_dataset(data, "train")
            if len(self.dataset) != saved.get("n_items"):
                raise UserError(
                    f"--data {data}: {len(self.dataset)} images, but the run started with "
                    f"{saved.get('n_items')}; resume with the same data"
                )
        self.method_name = self.model_info["method"]
        run, views_cfg = self.recipe["run"], dict(self.recipe["views"])
        self.batch_size = int(run["batch_size"])
        if self.batch_size % self.world:
            raise UserError(f"batch size {self.batch_size} is not divisible by the {self.world} processes")
        n = len(self.dataset)
        self.steps_per_epoch = EpochBatches.steps_per_epoch(n, self.batch_size)
        if self.steps_per_epoch == 0:
            raise UserError(
                f"--data {data}: {n} images, fewer than one batch of {self.batch_size}; lower --batch-size"
            )
        self.total_steps = max(1, round(float(run["epochs"]) * self.steps_per_epoch))
        self.end_step = self.total_steps if opts.max_steps is None else min(self.total_steps, opts.max_steps)

        image_size = int(views_cfg.pop("image_size", 224))
        self.transform = view_transform(self.method_name, image_size, **views_cfg)
        method_cfg = dict(self.recipe["method"])
        if self.method_name == "swav" and "nmb_crops" in views_cfg:
            given = method_cfg.setdefault("nmb_crops", views_cfg["nmb_crops"])
            if list(given) != list(views_cfg["nmb_crops"]):
                raise UserError("recipe method.nmb_crops and views.nmb_crops differ")
        self.method = build_method(self.method_name, model, **method_cfg)
        crit_cfg = {k: v for k, v in self.recipe["criterion"].items() if k != "name"}
        self.criterion_name = self.recipe["criterion"]["name"]
        self.criterion = build_criterion(self.criterion_name, space=self.method.space, **crit_cfg)

        if self.world > 1:
            self.method = convert_sync_batchnorm(self.method, self.device.type)
        self.model = self.method.model
        self.method.to(self.device)
        self.criterion.to(self.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            self.method.to(memory_format=torch.channels_last)

        groups = self.method.param_groups()
        crit_params = [p for p in self.criterion.parameters() if p.requires_grad]
        if crit_params:
            groups.append({"name": "criterion", "params": crit_params, "fix_lr": False})
        self.optimizer = build_optimizer(groups, self.recipe["optim"], self.batch_size)
        self.warmup_steps = int(
            round(float(self.recipe["optim"].get("warmup_epochs", 0)) * self.steps_per_epoch)
        )

        from e2mc_cli.training.health import HealthMonitor

        self.health = HealthMonitor(
            self.method.space, warn=lambda m: self._message(f"[yellow]warning:[/] {m}")
        )
        self.step = 0
        self.wall_before = 0.0
        self.failed_indices: set[int] = set()
        self.last_terms: dict[str, float] = {}
        if saved is not None:
            self.method.load_state_dict(saved["method"])
            self._restore_per_process(saved)
            self.criterion.load_state_dict(saved["criterion"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.step = int(saved["step"])
            self.wall_before = float(saved.get("wall_time", 0.0))
            self.failed_indices = set(saved.get("failed_indices", []))
            self.last_terms = dict(saved.get("last_terms", {}))
            self.health.load_state_dict(saved.get("health", {}))
            S.set_rng_state(saved["rng"])
            if self.step > self.end_step:
                raise UserError(f"{self.out}: the run is already at step {self.step}, past --max-steps")

        if opts.compile:
            self.model.backbone.compile()
            self.model.projector.compile()
        self.ddp = self.method
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.cuda else None
            )

        self._barrier()  # every process has checked --out before rank 0 writes into it
        if self.is_main:
            if not opts.resume:
                self.out.mkdir(parents=True, exist_ok=True)
                _clear_outputs(self.out)
            _remove_temporaries(self.out)
            write_text_atomic(self.out / "recipe.toml", R.dumps(self.recipe))
            self._trim_metrics()
        self._barrier()

    # ---- files ---------------------------------------------------------------------------------
    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def _message(self, text: str) -> None:
        if self.is_main:
            self.console.print(text, highlight=False, soft_wrap=True)

    def _trim_metrics(self) -> None:
        """Keep only the metric lines up to the resumed step (a killed run may have logged more)."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            write_text_atomic(path, "")
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if int(rec.get("step", 0)) <= self.step:
                kept.append(json.dumps(rec))
        write_text_atomic(path, "".join(k + "\n" for k in kept))

    def _log_metrics(self, record: dict) -> None:
        if self.is_main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()

    def _wall(self) -> float:
        return self.wall_before + (time.perf_counter() - self.t_start)

    def _per_process_buffers(self) -> list[str]:
        """Buffers each process keeps for itself (SwAV's queue), which DDP does not synchronise."""
        return list(getattr(self.method, "_ddp_params_and_buffers_to_ignore", []))

    def _gather_per_process(self) -> dict[str, list[torch.Tensor]]:
        """Every process's copy of its own buffers (a collective: all processes call it)."""
        if not D.is_distributed():
            return {}
        out = {}
        for name in self._per_process_buffers():
            local = getattr(self.method, name).contiguous()
            copies = [torch.empty_like(local) for _ in range(self.world)]
            dist.all_gather(copies, local)
            out[name] = [c.cpu() for c in copies]
        return out

    def _restore_per_process(self, saved: dict) -> None:
        """Give each process back its own buffers; a different process count keeps rank 0's."""
        copies = saved.get("per_process", {})
        for name, tensors in copies.items():
            if len(tensors) != self.world:
                self._message(
                    f"[yellow]warning:[/] the run was saved with {len(tensors)} processes and resumes "
                    f"with {self.world}: every process starts from process 0's {name}"
                )
                continue
            getattr(self.method, name).copy_(tensors[D.rank()].to(getattr(self.method, name).device))

    def save_state(self) -> None:
        per_process = self._gather_per_process()
        if not self.is_main:
            return
        S.save_training_state(
            self.out / STATE_FILE,
            {
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "batch_in_epoch": self.step % self.steps_per_epoch,
                "method": self.method.state_dict(),
                "criterion": self.criterion.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "recipe": self.recipe,
                "model_info": self.model_info,
                "data": str(self.data_spec),
                "n_items": len(self.dataset),
                "wall_time": self._wall(),
                "failed_indices": sorted(self.failed_indices),
                "last_terms": self.last_terms,
                "health": self.health.state_dict(),
                "per_process": per_process,
            },
        )

    def write_outputs(self, status: str) -> dict:
        """``model.safetensors`` and ``summary.json`` for the current step."""
        wall = self._wall()
        images = self.step * self.batch_size
        epochs_done = self.step / self.steps_per_epoch
        summary = {
            "status": status,
            "base": self.model_info["base"],
            "method": self.method_name,
            "criterion": self.criterion_name,
            "steps": self.step,
            "epochs_trained": round(epochs_done, 6),
            "epoch": float(_epoch_text(self.model_info["base_epoch"] + epochs_done)),
            "images_seen": images,
            "skipped_files": int(getattr(self.dataset, "skipped", 0)) + len(self.failed_indices),
            "wall_time_s": round(wall, 3),
            "images_per_s": round(images / wall, 3) if wall > 0 else None,
            "batch_size": self.batch_size,
            "world_size": self.world,
            "device": str(self.device),
            "final_terms": self.last_terms,
        }
        if self.is_main:
            save_checkpoint(
                self.out / "model.safetensors",
                self.model,
                base=self.model_info["base"],
                criterion=self.criterion_name,
                epoch=_epoch_text(self.model_info["base_epoch"] + epochs_done),
                recipe=self.recipe,
                command=shlex.join(["sslboost", *self.opts.argv]),
                steps=str(self.step),
            )
            write_json_atomic(self.out / "summary.json", summary)
            export_run(self.out)  # backbone.safetensors, config.json, model card
        return summary

    # ---- training ------------------------------------------------------------------------------
    def _loader(self, epoch: int, start: int) -> DataLoader:
        sampler = EpochBatches(
            len(self.dataset),
            self.batch_size,
            int(self.recipe["run"]["seed"]),
            epoch,
            rank=self.rank,
            world_size=self.world,
            start=start,
        )
        views = SeededViews(self.dataset, self.transform, int(self.recipe["run"]["seed"]))
        workers = default_workers() if self.opts.workers is None else max(int(self.opts.workers), 0)
        return DataLoader(
            views,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=collate_views,
            pin_memory=self.cuda,
            prefetch_factor=4 if workers else None,
            # its own generator: creating a loader must not draw from the global torch RNG
            generator=torch.Generator().manual_seed(int(self.recipe["run"]["seed"]) + epoch),
        )

    def _stop_requested(self) -> bool:
        """Whether any process got SIGINT/SIGTERM (agreed by every process)."""
        stop = self.stop_signal is not None
        if self.world > 1:
            t = torch.tensor([float(stop)], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            return bool(t[0])
        return stop

    def train_step(self, views: list[torch.Tensor], epoch: int) -> dict[str, float]:
        """One optimiser step; returns the logged terms (floats). Raises :class:`NonFiniteLoss`."""
        lr = apply_lr(
            self.optimizer,
            lr_factor(
                self.step,
                self.total_steps,
                self.warmup_steps,
                self.recipe["optim"].get("schedule", "cosine"),
                float(self.recipe["optim"].get("final_lr_ratio", 0.0)),
            ),
        )
        self.method.on_step_start(self.step, epoch)
        loss, out, cout = forward_step(self.ddp, self.criterion, views, self.device)
        self._out = out
        terms = collect_terms(self.method_name, self.criterion_name, loss, out, cout)
        nonfinite = not math.isfinite(terms["loss"])
        if self.world > 1:
            # One all-reduce: any process's non-finite loss stops every process, and the logged
            # terms are the means over processes (the global batch's values for mean-type losses).
            vec = torch.tensor([float(nonfinite), *terms.values()], dtype=torch.float64, device=self.device)
            dist.all_reduce(vec)
            nonfinite = bool(vec[0] > 0)
            terms = dict(zip(terms, (vec[1:] / self.world).tolist()))
        if nonfinite:
            bad = _bad_terms({k: v for k, v in terms.items() if k != "loss"}) or _bad_terms(terms)
            if not bad:
                bad = ["the loss on another process"]
            kept = self.out / STATE_FILE
            where = (
                f"the last good checkpoint is {kept} (step {self._saved_step})"
                if kept.exists()
                else ("no checkpoint was written yet")
            )
            raise NonFiniteLoss(
                f"non-finite loss at step {self.step + 1} (epoch {epoch + 1}): {', '.join(bad)}; "
                f"stopped without applying this step; {where}"
            )
        backward_step(self.method, self.optimizer, loss, self.step)
        self.step += 1
        terms["lr"] = lr
        return terms

    def _on_signal(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a forked data-loader worker: the main process decides
            return
        if self.stop_signal is not None:
            raise KeyboardInterrupt
        self.stop_signal = signum
        self._message(
            f"\n[yellow]{signal.Signals(signum).name}:[/] finishing the current step and saving "
            "(press Ctrl-C again to quit at once)"
        )

    def run(self) -> RunResult:
        self.t_start = time.perf_counter()
        self._saved_step = self.step
        self._pid = os.getpid()
        log_every = int(self.recipe["run"]["log_every"])
        ckpt_every = int(self.recipe["run"]["checkpoint_every"])
        handlers = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread: no signal handling
            handlers = {}
        status = "finished"
        last_log_t, last_log_step = time.perf_counter(), self.step
        progress = TrainProgress(
            self.console,
            total_steps=self.end_step,
            start_step=self.step,
            steps_per_epoch=self.steps_per_epoch,
            epochs=math.ceil(float(self.recipe["run"]["epochs"])),
            enabled=self.is_main,
        )
        try:
            with progress:
                stop = False
                while self.step < self.end_step and not stop:
                    epoch, pos = divmod(self.step, self.steps_per_epoch)
                    for views, _indices, failed in self._loader(epoch, pos):
                        self.failed_indices.update(int(i) for i in failed)
                        terms = self.train_step(views, epoch)
                        self.last_terms = {k: v for k, v in terms.items() if k != "lr"}
                        now = time.perf_counter()
                        img_s = (self.step - last_log_step) * self.batch_size / max(now - last_log_t, 1e-9)
                        progress.update(self.step, epoch, self.last_terms, img_s)
                        if self.step % log_every == 0 or self.step == self.end_step:
                            record = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 6)}
                            record.update(terms)
                            record["img_s"] = round(img_s, 3)
                            if self.is_main:
                                record.update(
                                    self.health.update(self.step, [e.float() for e in self._out.embeddings])
                                )
                            self._log_metrics(record)
                            progress.log_line(self.step, epoch, terms["lr"], self.last_terms, img_s)
                            last_log_t, last_log_step = now, self.step
                        self._out = None
                        stop = self._stop_requested()
                        at_epoch_end = self.step % self.steps_per_epoch == 0
                        if stop or self.step >= self.end_step:
                            break
                        if self.step % ckpt_every == 0 or at_epoch_end:
                            self.save_state()
                            self._saved_step = self.step
                    # the loader is exhausted at each epoch end (or left at a stop)
            if stop:
                status = "interrupted"
            elif self.step < self.total_steps:
                status = "max_steps"
            self.save_state()
            summary = self.write_outputs(status)
            self._barrier()
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            if self._started_pg and dist.is_initialized():
                dist.destroy_process_group()
        return RunResult(status, self.out, summary, resume_command(self.opts.argv))


def run(opts: TrainOptions, console: Console | None = None) -> RunResult:
    """Set up and train one run (see the module docstring)."""
    trainer = Trainer(opts, console)
    trainer.setup()
    return trainer.run()
