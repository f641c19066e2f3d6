"""The plan of a reproduction: every row of a table with its base, recipe, evaluations and GPU
hours, the study of each base that runs them, and the ``sslboost`` commands that do the same.

Layout under ``OUT`` (default ``runs/reproduce``): one study folder per base, ``OUT/<base>/``
(:mod:`e2mc_cli.study`: ``cells/<criterion>-seed<k>/``, ``base/``, ``study.json``). Tables 1 and 3
share their SwAV 800 base, continued and E2MC runs there. The study trains each criterion with
seeds ``0 … S−1`` and runs the linear probes (``--probe-mode standard``: the paper's protocol);
the semi-supervised fine-tunings a row reports go beside them, ``eval/semisup-<labels>/``: the
base fine-tuned with seeds ``0 … S−1``, each trained model once with seed 0 (on ImageNet the
1 % / 10 % label subsets are SimCLR's fixed lists, so that seed only moves the classifier's
initialisation and data order; the trained models already differ by their training seed).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from e2mc_cli.data.subsets import labels_tag
from e2mc_cli.errors import UserError
from e2mc_cli.papers import PAPERS
from e2mc_cli.reproduce import estimate as E
from e2mc_cli.reproduce.paper import LINEAR_LABELS, TABLES, PaperRow, PaperTable, get_table, select_rows
from e2mc_cli.run_layout import MODEL_FILE
from e2mc_cli.study import EVAL_DIR, StudyConfig, cell_name
from e2mc_cli.training import recipe as R
from e2mc_cli.zoo import get_spec

PLAN_FORMAT = "sslboost-reproduce-plan/1"
DEFAULT_OUT = "runs/reproduce"
DATA_PLACEHOLDER = "IMAGENET"  # shown in the commands of a dry run without --data
PROBE_MODE = "standard"


@dataclass
class ReproduceOptions:
    """What ``sslboost reproduce`` was asked; ``max_steps`` … ``image_size`` shorten every run
    (a check of the pipeline, not a reproduction), ``None`` keeps the recipe's and protocol's."""

    table: str | int
    data: str | None = None
    out: str | Path = DEFAULT_OUT
    rows: str | None = None
    seeds: int = 3
    device: str = "auto"
    workers: int | None = None
    max_steps: int | None = None
    eval_epochs: int | None = None
    batch_size: int | None = None
    image_size: int | None = None


@dataclass
class PlannedRow:
    """One row: the paper's, its recipe (``None``: the base itself), evaluations, GPU hours."""

    paper: PaperRow
    recipe: str | None
    evaluations: list[str]
    train_gpu_h: float
    eval_gpu_h: float
    also_in: list[int] = field(default_factory=list)  # other tables with this run (shared on disk)

    def to_dict(self, seeds: int) -> dict:
        r = self.paper
        return {
            "id": r.id,
            "label": r.label,
            "epochs": r.epochs,
            "base": r.base,
            "criterion": r.criterion,
            "recipe": self.recipe,
            "evaluations": self.evaluations,
            "training_runs": seeds if r.trained else 0,
            "gpu_hours": {
                "train": round(self.train_gpu_h, 1),
                "eval": round(self.eval_gpu_h, 1),
                "total": round(self.train_gpu_h + self.eval_gpu_h, 1),
            },
            "paper": {c: f.to_dict() for c, f in r.figures.items()},
            "also_in_tables": self.also_in,
            "notes": list(r.notes),
        }


@dataclass
class GroupPlan:
    """The rows of one base: its study (``None`` when no row is trained: the base is evaluated
    alone) and the semi-supervised evaluations (folder, checkpoint, labels, seeds)."""

    base: str
    folder: Path
    study: StudyConfig
    trains: bool
    semisup: list[dict] = field(default_factory=list)  # {"folder", "weights" | "base", "labels", "seeds"}
    commands: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """Everything a reproduction runs, and how it is reported."""

    table: PaperTable
    options: ReproduceOptions
    rows: list[PlannedRow]
    groups: list[GroupPlan]

    @property
    def out(self) -> Path:
        return Path(self.options.out)

    @property
    def commands(self) -> list[str]:
        return [c for g in self.groups for c in g.commands]

    def shortened(self) -> dict:
        """The options that shorten every run (``{}``: the paper's runs)."""
        o = self.options
        given = {"max_steps": o.max_steps, "eval_epochs": o.eval_epochs, "batch_size": o.batch_size,
                 "image_size": o.image_size}  # fmt: skip
        return {k: v for k, v in given.items() if v is not None}

    def assumptions(self) -> list[str]:
        lines = E.assumptions()
        if self.shortened():
            flags = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.shortened().items())
            lines.append(f"the hours are the paper's runs', not those of this shortened check ({flags})")
        return lines

    def totals(self) -> dict:
        train = sum(r.train_gpu_h for r in self.rows)
        ev = sum(r.eval_gpu_h for r in self.rows)
        runs = sum(self.options.seeds for r in self.rows if r.paper.trained)
        total = round(train + ev, 1)
        return {"train": round(train, 1), "eval": round(ev, 1), "total": total, "training_runs": runs}

    def to_dict(self) -> dict:
        o = self.options
        return {
            "format": PLAN_FORMAT,
            "table": self.table.number,
            "title": self.table.title,
            "paper": PAPERS["e2mc"].short,
            "link": PAPERS["e2mc"].link,
            "data": o.data,
            "out": str(o.out),
            "seeds": o.seeds,
            "probe_mode": PROBE_MODE,
            "rows": [r.to_dict(o.seeds) for r in self.rows],
            "totals": self.totals(),
            "shortened": self.shortened(),
            "assumptions": self.assumptions(),
            "studies": [
                {"base": g.base, "folder": str(g.folder), "criteria": g.study.criteria if g.trains else []}
                for g in self.groups
            ],
            "commands": self.commands,
        }


def _recipe(row: PaperRow) -> dict:
    """The recipe the study resolves for the row's base and criterion (before overrides)."""
    return R.base_recipe(get_spec(row.base).method, row.criterion)


def _row_cost(row: PaperRow, evaluations: list[str], seeds: int) -> tuple[float, float, str | None]:
    recipe_name, train = None, 0.0
    if row.trained:
        recipe = _recipe(row)
        recipe_name = recipe["recipe"]["name"]
        epochs = recipe.get("run", {}).get("epochs", E.PAPER_EPOCHS)
        train = seeds * E.train_gpu_hours(get_spec(row.base).method, recipe.get("views", {}), epochs)
    ev = sum(E.eval_gpu_hours(*c.split(" "), seeds=seeds) for c in evaluations)
    return train, ev, recipe_name


def _semisup_labels(row: PaperRow) -> list[str]:
    return [c.split(" ")[1] for c in row.columns if c.startswith("semisup ")]


def _study_config(opts: ReproduceOptions, base: str, folder: Path, criteria: list[str]) -> StudyConfig:
    return StudyConfig(
        base=base,
        out=folder,
        criteria=criteria,
        seeds=opts.seeds,
        labels=list(LINEAR_LABELS),
        knn=False,
        data=opts.data,
        batch_size=opts.batch_size,
        max_steps=opts.max_steps,
        eval_epochs=opts.eval_epochs,
        image_size=opts.image_size,
        workers=opts.workers,
        device=opts.device,
        probe_mode=PROBE_MODE,
    )


def _flags(opts: ReproduceOptions, pairs: list[tuple[str, object]]) -> list[str]:
    out: list[str] = []
    for flag, value in pairs:
        if value is not None and value != "auto":
            out += [flag, str(value)]
    return out


def _shared(opts: ReproduceOptions, *, epochs_flag: str) -> list[tuple[str, object]]:
    return [(epochs_flag, opts.eval_epochs), ("--image-size", opts.image_size), ("--device", opts.device)]


def _study_command(opts: ReproduceOptions, cfg: StudyConfig) -> str:
    data = opts.data or DATA_PLACEHOLDER
    args = ["sslboost", "study", "--base", cfg.base, "--criteria", ",".join(cfg.criteria)]
    args += ["--seeds", str(cfg.seeds), "--labels", ",".join(cfg.labels), "--no-knn"]
    args += ["--probe-mode", PROBE_MODE, "--data", data, "--out", str(cfg.out)]
    args += _flags(opts, [("--batch-size", opts.batch_size), ("--max-steps", opts.max_steps)])
    args += _flags(opts, [("--workers", opts.workers), *_shared(opts, epochs_flag="--eval-epochs")])
    return shlex.join(args)


def _eval_command(opts: ReproduceOptions, job: dict) -> str:
    data = opts.data or DATA_PLACEHOLDER
    source = ["--base", job["base"]] if "base" in job else ["--weights", str(job["weights"])]
    args = ["sslboost", "eval", *source, "--protocol", job["protocol"], "--labels", job["labels"]]
    if job["protocol"] == "linear":
        args += ["--mode", PROBE_MODE]
    args += ["--seeds", str(len(job["seeds"])), "--data", data, "--out", str(job["folder"])]
    return shlex.join(args + _flags(opts, _shared(opts, epochs_flag="--epochs")))


def _group(opts: ReproduceOptions, base: str, rows: list[PaperRow]) -> GroupPlan:
    """The study of one base and the evaluations beside it; their commands."""
    folder = Path(opts.out) / base
    criteria = [r.criterion for r in rows if r.trained]
    group = GroupPlan(base, folder, _study_config(opts, base, folder, criteria), bool(criteria))
    seeds = list(range(opts.seeds))
    jobs: list[dict] = []
    if not group.trains:  # the base alone: its linear probes as the study's base would run them
        for lab in LINEAR_LABELS:
            where = folder / "base" / EVAL_DIR / f"linear-{labels_tag(lab)}"
            jobs.append({"folder": where, "base": base, "protocol": "linear", "labels": lab, "seeds": seeds})
    for row in rows:
        for lab in _semisup_labels(row):
            tag = f"semisup-{labels_tag(lab)}"
            if not row.trained:
                where = folder / "base" / EVAL_DIR / tag
                job = {"folder": where, "base": base, "protocol": "semisup", "labels": lab, "seeds": seeds}
                group.semisup.append(job)
                continue
            for k in seeds:
                cell = folder / "cells" / cell_name(row.criterion, k)
                weights = cell / "train" / MODEL_FILE
                job = {"folder": cell / EVAL_DIR / tag, "weights": weights, "cell": cell,
                       "protocol": "semisup", "labels": lab, "seeds": [0]}  # fmt: skip
                group.semisup.append(job)
    group.commands = [_study_command(opts, group.study)] if group.trains else []
    group.commands += [_eval_command(opts, job) for job in [*jobs, *group.semisup]]
    return group


def check_options(opts: ReproduceOptions) -> None:
    """The numbers of the options, each one clear line."""
    if opts.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {opts.seeds}")
    for flag, value in (
        ("--max-steps", opts.max_steps),
        ("--eval-epochs", opts.eval_epochs),
        ("--batch-size", opts.batch_size),
        ("--image-size", opts.image_size),
    ):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")


def build_plan(opts: ReproduceOptions) -> Plan:
    """The plan of ``opts``: read from the tables, the registry and the shipped recipes only (no
    data, download or device is touched)."""
    check_options(opts)
    table = get_table(opts.table)
    rows = select_rows(table, opts.rows)
    planned = []
    for row in rows:
        evaluations = list(row.columns)
        train, ev, recipe = _row_cost(row, evaluations, opts.seeds)
        also = [t.number for t in TABLES.values() if t is not table and t.find(row.base, row.criterion)]
        planned.append(PlannedRow(row, recipe, evaluations, train, ev, also))
    bases = list(dict.fromkeys(r.base for r in rows))
    groups = [_group(opts, b, [r for r in rows if r.base == b]) for b in bases]
    return Plan(table, opts, planned, groups)
