"""``run_reproduction``: the studies of a plan, the semi-supervised evaluations beside them, and
the table of results (:mod:`e2mc_cli.reproduce.results`).

Everything resumes: the study of a base skips its finished cells and continues an interrupted
training run from its last checkpoint (:mod:`e2mc_cli.study`), and an evaluation whose
``eval.json`` is there (under today's protocol) is read back, not made again. An interrupted
training run stops the reproduction after writing the table so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from e2mc_cli.checkpoint import load_checkpoint
from e2mc_cli.data.datasets import BUILTIN
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate import records
from e2mc_cli.io import write_json_atomic, write_text_atomic
from e2mc_cli.reproduce.plan import GroupPlan, Plan
from e2mc_cli.reproduce.results import render_markdown, tabulate
from e2mc_cli.study import RESULT_FILE, evaluate_checkpoint, read_current_result, run_base, run_study
from e2mc_cli.study.locks import waiting_for
from e2mc_cli.zoo import resolve_base

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    """The default log: says nothing."""


@dataclass
class ReproduceRun:
    """What one invocation did, and the table document it wrote."""

    document: dict
    status: str  # "complete", "interrupted" or "incomplete" (cells left to other processes)
    trained: list[str] = field(default_factory=list)  # "<base>/<cell>" trained now
    skipped: list[str] = field(default_factory=list)  # "<base>/<cell>" finished before
    cannot_run: dict[str, str] = field(default_factory=dict)
    busy: list[str] = field(default_factory=list)  # cells another process was running


def _semisup(group: GroupPlan, plan: Plan, log: Log) -> None:
    """The semi-supervised evaluations of ``group`` that are not on disk yet (a trained model's
    once its study cell has finished)."""
    opts = plan.options
    base_ckpt = None
    for job in group.semisup:
        if records.read_current(job["folder"]) is not None:
            continue
        if "cell" in job:
            if read_current_result(job["cell"] / RESULT_FILE) is None:
                continue  # not trained yet
            ckpt, source = load_checkpoint(job["weights"]), str(job["weights"])
        else:
            base_ckpt = base_ckpt or resolve_base(group.base)
            ckpt, source = base_ckpt, group.base
        log(f"{job['folder'].relative_to(group.folder)}: fine-tuning")
        evaluate_checkpoint(
            ckpt,
            job["folder"].parent,
            data=opts.data,
            labels=[],
            knn=False,
            semisup=[job["labels"]],
            seeds=job["seeds"],
            source=source,
            eval_epochs=opts.eval_epochs,
            image_size=opts.image_size,
            device=opts.device,
            log=log,
        )


def _scoped(log: Log, base: str) -> Log:
    return lambda msg: log(f"{base}: {msg}")


def write_results(plan: Plan, run: ReproduceRun, meta: dict) -> dict:
    """Write ``OUT/table<N>.json`` and ``OUT/table<N>.md`` from the evaluations on disk."""
    doc = tabulate(plan, status=run.status, cannot_run=run.cannot_run, meta=meta)
    name = f"table{plan.table.number}"
    write_json_atomic(plan.out / f"{name}.json", doc)
    write_text_atomic(plan.out / f"{name}.md", render_markdown(doc))
    return doc


def check_data(data: str | None) -> None:
    """``--data`` names a folder (or a built-in dataset): checked before any base is downloaded."""
    if not data:
        raise UserError("--data is required to run a reproduction: the ImageNet root (train/ and val/)")
    if str(data).partition(":")[0] not in BUILTIN and not Path(data).expanduser().is_dir():
        raise UserError(f"--data {data}: no such folder (the ImageNet root, with train/ and val/ inside)")


def run_reproduction(plan: Plan, *, log: Log = _quiet, command: str = "") -> ReproduceRun:
    """Run every missing part of ``plan``, then write its table of results."""
    check_data(plan.options.data)
    plan.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run = ReproduceRun({}, "complete")
    for group in plan.groups:
        glog = _scoped(log, group.base)
        if group.trains:
            result = run_study(group.study, log=glog, command=group.commands[0])
            run.trained += [f"{group.base}/{c}" for c in result.trained]
            run.skipped += [f"{group.base}/{c}" for c in result.skipped]
            run.cannot_run.update({f"{group.base}/{c}": why for c, why in result.cannot_run.items()})
            run.busy += [f"{group.base}/{c}" for c in result.busy]
            if result.status == "interrupted":
                run.status = "interrupted"
                break
            if result.status == "incomplete":
                run.status = "incomplete"
        else:
            with waiting_for(group.study.out, "base", glog):
                run_base(group.study, plan.options.data, glog)
        _semisup(group, plan, glog)
    meta = {
        "command": command or f"sslboost reproduce --table {plan.table.number}",
        "wall_time_s_this_run": round(time.perf_counter() - started, 1),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    run.document = write_results(plan, run, meta)
    return run
