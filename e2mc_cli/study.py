"""``sslboost study``: does an add-on criterion really help, beyond continuing the base loss?

A study continues the pre-training of one base with each criterion and each seed, evaluates every
result with the linear probe (``--mode cached``) at each label fraction and with kNN, and
tabulates them like paper 002's Tables 1 and 3.

Cells. ``(criterion, seed k)`` is one cell, kept in ``DIR/cells/<criterion>-seed<k>/``:
``train/`` (the run folder of :mod:`e2mc_cli.training`, trained with ``run.seed = k``, so every
criterion sees the same images in the same order and the same augmentations for a given seed),
``eval/linear-<labels>/`` and ``eval/knn/`` (the outputs of :mod:`e2mc_cli.evaluate`, label subset
drawn with seed ``k``) and ``result.json``, written atomically last. A cell whose ``result.json``
exists is finished and skipped, so an interrupted study resumes where it stopped (a training run
cut short is resumed from its last checkpoint; finished evaluations are read back). Evaluations
made under an older evaluation protocol (``protocol_version`` of ``eval.json``) are made again,
keeping the trained models. The base is evaluated once, in ``DIR/base/``, with seeds ``0 … S−1``.

Statistics. Each table cell is the mean ± standard error (``s/√n``) over seeds of the top-1 (%).
McNemar's test (:func:`e2mc_cli.evaluate.stats.mcnemar`) compares each criterion with
``continued`` on paired per-sample correctness, **pooling the predictions of all seeds**: the
correctness vectors of seed ``k`` of both criteria (same label subset) are concatenated over
``k``. Per-seed p-values (as ``sslboost compare`` gives) are kept in ``study.json`` too.

Tuning. ``--holdout N`` evaluates every cell on ``N`` images held out from the training split
instead of the test split (:func:`e2mc_cli.data.subsets.carve_validation`), so coefficients and
learning rates can be chosen without reading the test split. ``--set CRITERION:section.key=value``
applies an override to the runs of one criterion only (``--set e2mc:criterion.beta=100`` next to
``continued``, which has no ``beta``); an unscoped ``--set`` applies to every run.

A cell that cannot run with this base (a criterion's own limit, e.g. CorInfoMax's log-determinant
needs more samples per step than dimensions) is reported with its reason in ``study.json``
(``cannot_run``) and under the tables, and the study goes on; the next invocation tries it again.

Outputs: ``DIR/study.json`` (every number), ``DIR/study.md`` (the tables) and ``DIR/study.png``
(grouped bars with standard-error bars).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION, protocol_version_of
from e2mc_cli.io import atomic_path, write_json_atomic, write_text_atomic

STUDY_FORMAT = "sslboost-study/1"
DEFAULT_CRITERIA = ("continued", "e2mc", "vcreg", "uniformity", "mmcr", "vne", "logdet", "simmer")
DEFAULT_LABELS = ("1%", "10%", "100%")
CONTROL = "continued"
RESULT_FILE = "result.json"
KNN = "knn"

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# -- configuration -------------------------------------------------------------------------------


@dataclass
class StudyConfig:
    """Everything ``sslboost study`` needs (``None``: the recipe's or the protocol's default)."""

    base: str
    out: str | Path
    criteria: list[str] = field(default_factory=lambda: list(DEFAULT_CRITERIA))
    seeds: int = 3
    labels: list[str] = field(default_factory=lambda: list(DEFAULT_LABELS))
    knn: bool = True
    data: str | None = None
    epochs: float | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    sets: list[str] = field(default_factory=list)
    eval_epochs: int | None = None
    image_size: int | None = None
    workers: int = 2
    device: str = "auto"
    holdout: int = 0  # > 0: evaluate on this many training images held out, not on the test split


def parse_list(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"a,b, c"`` → ``["a", "b", "c"]`` (lists pass through), without repeats."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    out: list[str] = []
    for item in items:
        item = str(item).strip()
        if item and item not in out:
            out.append(item)
    return out


def check_config(cfg: StudyConfig) -> StudyConfig:
    """Validate names and numbers up front (one clear line each); normalise label values."""
    from e2mc_cli.criteria import CRITERIA
    from e2mc_cli.data.subsets import parse_labels

    cfg.criteria = parse_list(cfg.criteria)
    if not cfg.criteria:
        raise UserError("--criteria: give at least one criterion, e.g. continued,e2mc")
    unknown = [c for c in cfg.criteria if c not in CRITERIA]
    if unknown:
        raise UserError(f"--criteria: unknown criterion {unknown[0]!r}; valid names: {', '.join(CRITERIA)}")
    if cfg.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {cfg.seeds}")
    cfg.labels = [parse_labels(x) for x in parse_list(cfg.labels)]
    if not cfg.labels and not cfg.knn:
        raise UserError("nothing to evaluate: give --labels or keep --knn")
    if cfg.epochs is not None and not (cfg.epochs > 0 and math.isfinite(cfg.epochs)):
        raise UserError(f"--epochs must be positive, got {cfg.epochs}")
    if cfg.holdout < 0:
        raise UserError(f"--holdout must be 0 (the test split) or a number of images, got {cfg.holdout}")
    for item in cfg.sets:
        scope, _ = split_scoped_set(item)
        if scope is not None and scope not in cfg.criteria:
            raise UserError(
                f"--set {item}: {scope!r} is not one of the study's criteria ({', '.join(cfg.criteria)})"
            )
    return cfg


def split_scoped_set(item: str) -> tuple[str | None, str]:
    """``"e2mc:criterion.beta=1"`` → ``("e2mc", "criterion.beta=1")``; unscoped → ``(None, item)``."""
    key = item.split("=", 1)[0]
    if ":" in key:
        scope, rest = item.split(":", 1)
        return scope.strip(), rest
    return None, item


def sets_for(sets: list[str], criterion: str) -> list[str]:
    """The ``--set`` overrides that apply to the runs of ``criterion`` (unscoped ones and its own)."""
    out = []
    for item in sets:
        scope, rest = split_scoped_set(item)
        if scope is None or scope == criterion:
            out.append(rest)
    return out


def default_data(base: str, data: str | None) -> str:
    """``data``, else the dataset a built-in base was trained on; else a :class:`UserError`."""
    from e2mc_cli.zoo import builtin_data

    data = data or builtin_data(base)
    if data:
        return data
    raise UserError(
        f"--data is required for base {base!r}: an ImageFolder root or a built-in dataset (fmnist)"
    )


# -- evaluation ----------------------------------------------------------------------------------


def column_name(labels: str | None) -> str:
    """Table column of a protocol: ``linear 1%`` … or ``knn``."""
    return KNN if labels is None else f"linear {labels}"


def _read_current(path: Path) -> dict | None:
    """The JSON record (``eval.json`` or a result) at ``path`` if it exists and was made under
    today's evaluation protocol, else ``None``."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if protocol_version_of(record) == PROTOCOL_VERSION else None


def _eval_folder(folder: Path, labels: str | None) -> Path:
    from e2mc_cli.data.subsets import labels_tag

    return folder / (KNN if labels is None else f"linear-{labels_tag(labels)}")


def evaluate_checkpoint(
    ckpt,
    folder: str | Path,
    *,
    data: str,
    labels: list[str],
    knn: bool,
    seeds: list[int],
    source: str = "",
    eval_epochs: int | None = None,
    image_size: int | None = None,
    device: str = "auto",
    holdout: int = 0,
    log: Log = _quiet,
) -> dict[str, dict]:
    """Linear probe (cached features) at each label fraction and kNN (all labels) of one checkpoint.

    Each evaluation goes to ``folder/linear-<labels>/`` or ``folder/knn/`` (``eval.json`` +
    ``predictions.npz``); one already there (under today's protocol) is read back. The frozen
    features are extracted once and shared by every evaluation. Returns
    ``{column: {"top1": [...per seed], "seeds": [...], "path": folder}}``.
    """
    from e2mc_cli.evaluate.features import FeatureCache
    from e2mc_cli.evaluate.run import EvalRequest, run_eval

    folder = Path(folder)
    cache = FeatureCache()
    out: dict[str, dict] = {}
    plan: list[str | None] = list(labels) + ([None] if knn else [])
    for lab in plan:
        target = _eval_folder(folder, lab)
        record = _read_current(target / "eval.json")
        if record is None:
            overrides = {"epochs": eval_epochs} if (eval_epochs and lab is not None) else {}
            req = EvalRequest(
                data=data,
                protocol="linear" if lab is not None else "knn",
                labels=lab or "100%",
                seeds=len(seeds),
                seed_list=list(seeds),
                mode="cached",
                image_size=image_size,
                device=None if device == "auto" else device,
                workers=0,
                overrides=overrides,
                holdout=holdout,
            )
            t = time.perf_counter()
            result = run_eval(ckpt, req, source=source, out_dir=target, features=cache)
            result.write(target)
            record = result.record
            log(f"  {column_name(lab)}: {time.perf_counter() - t:.1f} s")
        out[column_name(lab)] = {
            "seeds": [r["seed"] for r in record["results"]],
            "top1": [r["top1"] for r in record["results"]],
            "path": str(target),
        }
    return out


# -- the cells -----------------------------------------------------------------------------------


def cell_name(criterion: str, seed: int) -> str:
    return f"{criterion}-seed{seed}"


def _train_done(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    if not (summary.is_file() and (run_dir / "model.safetensors").is_file()):
        return False
    try:
        status = json.loads(summary.read_text()).get("status")
    except ValueError:
        return False
    return status in ("finished", "max_steps")


class StudyInterrupted(Exception):
    """A training run stopped on SIGINT/SIGTERM; the study resumes when run again."""


def train_cell(cfg: StudyConfig, data: str, criterion: str, seed: int, run_dir: Path) -> dict:
    """Continued pre-training of the base with ``criterion`` and ``run.seed = seed`` (the recipe is
    the one ``sslboost continue`` picks for this base and criterion)."""
    from rich.console import Console

    from e2mc_cli.export import export_run
    from e2mc_cli.training.loop import STATE_FILE, TrainOptions, run

    resume = (run_dir / STATE_FILE).is_file()
    sets = [*sets_for(cfg.sets, criterion), f"run.seed={seed}"]
    if cfg.epochs is not None:
        sets.append(f"run.epochs={float(cfg.epochs):g}")
    opts = TrainOptions(
        base=cfg.base,
        criterion=None if resume else criterion,
        data=data,
        out=str(run_dir),
        batch_size=None if resume else cfg.batch_size,
        image_size=None if resume else cfg.image_size,
        sets=[] if resume else sets,
        max_steps=cfg.max_steps,
        workers=cfg.workers,
        resume=resume,
        overwrite=not resume,
        device=cfg.device,
        argv=["study-cell", "--base", cfg.base, "--criterion", criterion, "--seed", str(seed)],
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / "train.log", "a") as logf:
        result = run(opts, Console(file=logf, width=160, force_terminal=False))
    if result.is_main:
        export_run(run_dir)
    if result.status == "interrupted":
        raise StudyInterrupted(f"training of {run_dir.parent.name} interrupted")
    return result.summary


def run_cell(cfg: StudyConfig, data: str, criterion: str, seed: int, log: Log = _quiet) -> tuple[dict, bool]:
    """Train (unless already trained) and evaluate one cell; ``(result, trained now)``."""
    from e2mc_cli.checkpoint import load_checkpoint

    folder = Path(cfg.out) / "cells" / cell_name(criterion, seed)
    result_file = folder / RESULT_FILE
    done = _read_current(result_file)
    if done is not None:
        return done, False
    run_dir = folder / "train"
    trained = False
    t0 = time.perf_counter()
    if not _train_done(run_dir):
        log(f"{cell_name(criterion, seed)}: training")
        train_cell(cfg, data, criterion, seed, run_dir)
        trained = True
    summary = json.loads((run_dir / "summary.json").read_text())
    t1 = time.perf_counter()
    stale = " (made under an older evaluation protocol)" if result_file.is_file() else ""
    log(f"{cell_name(criterion, seed)}: evaluating{stale}")
    model_path = run_dir / "model.safetensors"
    evals = evaluate_checkpoint(
        load_checkpoint(model_path),
        folder / "eval",
        data=data,
        labels=cfg.labels,
        knn=cfg.knn,
        seeds=[seed],
        source=str(model_path),
        eval_epochs=cfg.eval_epochs,
        image_size=cfg.image_size,
        device=cfg.device,
        holdout=cfg.holdout,
        log=log,
    )
    result = {
        "criterion": criterion,
        "seed": seed,
        "protocol_version": PROTOCOL_VERSION,
        "columns": {k: v["top1"][0] for k, v in evals.items()},
        "eval": evals,
        "train": {
            k: summary.get(k)
            for k in ("status", "steps", "epochs_trained", "images_seen", "wall_time_s", "images_per_s")
        },
        "eval_wall_time_s": round(time.perf_counter() - t1, 3),
        "train_wall_time_s_this_run": round(t1 - t0, 3),
        "model": str(model_path),
    }
    write_json_atomic(result_file, result)
    return result, trained


def run_base(cfg: StudyConfig, data: str, log: Log = _quiet) -> dict:
    """Evaluate the base itself with seeds ``0 … S−1`` (``DIR/base/result.json``)."""
    from e2mc_cli.zoo import resolve_base

    folder = Path(cfg.out) / "base"
    result_file = folder / RESULT_FILE
    done = _read_current(result_file)
    if done is not None:
        return done
    log("base: evaluating")
    seeds = list(range(cfg.seeds))
    evals = evaluate_checkpoint(
        resolve_base(cfg.base),
        folder / "eval",
        data=data,
        labels=cfg.labels,
        knn=cfg.knn,
        seeds=seeds,
        source=cfg.base,
        eval_epochs=cfg.eval_epochs,
        image_size=cfg.image_size,
        device=cfg.device,
        holdout=cfg.holdout,
        log=log,
    )
    result = {
        "base": cfg.base,
        "protocol_version": PROTOCOL_VERSION,
        "columns": {k: v["top1"] for k, v in evals.items()},
        "eval": evals,
    }
    write_json_atomic(result_file, result)
    return result


# -- statistics and outputs ----------------------------------------------------------------------


def _correct(path: str | Path) -> tuple[dict, dict[int, np.ndarray]]:
    """(eval record, {seed: per-sample correctness}) of one evaluation folder."""
    from e2mc_cli.evaluate.compare import load_eval

    record, arrays, _ = load_eval(path)
    return record, {int(s): arrays["pred"][i] == arrays["target"] for i, s in enumerate(arrays["seeds"])}


def mcnemar_vs_control(control_paths: list[str], other_paths: list[str]) -> dict:
    """McNemar of ``other`` against ``control``, predictions of all seeds pooled, plus per seed.

    Each list holds evaluation folders (one per seed); folders are paired by seed and checked to
    be comparable (same data, labels and label subset) with
    :func:`e2mc_cli.evaluate.compare.check_comparable`.
    """
    from e2mc_cli.evaluate.compare import check_comparable, load_eval
    from e2mc_cli.evaluate.stats import mcnemar

    ctrl = {}
    for p in control_paths:
        rec, arrays, _ = load_eval(p)
        for i, s in enumerate(arrays["seeds"]):
            ctrl[int(s)] = (rec, arrays, arrays["pred"][i] == arrays["target"])
    pooled_a, pooled_b, per_seed = [], [], []
    for p in other_paths:
        rec, arrays, _ = load_eval(p)
        for i, s in enumerate(arrays["seeds"]):
            if int(s) not in ctrl:
                continue
            crec, carrays, ccorrect = ctrl[int(s)]
            check_comparable(crec, carrays, rec, arrays)
            correct = arrays["pred"][i] == arrays["target"]
            pooled_a.append(ccorrect)
            pooled_b.append(correct)
            per_seed.append({"seed": int(s), **mcnemar(ccorrect, correct).to_dict()})
    if not pooled_a:
        return {"pooled": None, "per_seed": []}
    pooled = mcnemar(np.concatenate(pooled_a), np.concatenate(pooled_b)).to_dict()
    return {"pooled": pooled, "per_seed": per_seed, "seeds": [r["seed"] for r in per_seed]}


def summarise(cfg: StudyConfig, base: dict, cells: dict[tuple[str, int], dict], meta: dict) -> dict:
    """The ``study.json`` document: per row and column the per-seed top-1, mean ± SE, p-values."""
    from e2mc_cli.evaluate.stats import mean_se

    columns = [column_name(lab) for lab in cfg.labels] + ([KNN] if cfg.knn else [])
    rows = []

    def stat(values: list[float]) -> dict:
        m, se = mean_se(values)
        return {"values": values, "mean": m, "se": se, "n": len(values)}

    rows.append({"name": "base", **{c: stat(list(base["columns"].get(c, []))) for c in columns}})
    for crit in cfg.criteria:
        row = {"name": crit}
        done = [cells[(crit, s)] for s in range(cfg.seeds) if (crit, s) in cells]
        for c in columns:
            row[c] = stat([r["columns"][c] for r in done if c in r["columns"]])
            if crit != CONTROL and CONTROL in cfg.criteria:
                ctrl = [
                    cells[(CONTROL, s)]["eval"][c]["path"] for s in range(cfg.seeds) if (CONTROL, s) in cells
                ]
                other = [r["eval"][c]["path"] for r in done if c in r["eval"]]
                row[c]["mcnemar_vs_continued"] = mcnemar_vs_control(ctrl, other) if ctrl and other else None
        row["seeds_done"] = [r["seed"] for r in done]
        rows.append(row)
    return {
        "format": STUDY_FORMAT,
        "config": {**asdict(cfg), "out": str(cfg.out)},
        "columns": columns,
        "rows": rows,
        "mcnemar": "pooled over seeds: per-sample correctness of seed k of both criteria "
        "(same label subset) concatenated over k; chi2 = (n01 - n10)^2 / (n01 + n10), exact binomial p",
        "complete": all((c, s) in cells for c in cfg.criteria for s in range(cfg.seeds)),
        **meta,
    }


def _fmt(cell: dict) -> str:
    if not cell.get("n"):
        return "–"
    se = cell.get("se")
    return f"{cell['mean']:.2f} ± {se:.2f}" if se is not None else f"{cell['mean']:.2f}"


def _fmt_p(cell: dict) -> str:
    test = cell.get("mcnemar_vs_continued")
    if not test or not test.get("pooled"):
        return "–"
    p = test["pooled"]["p_exact"]
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def render_markdown(study: dict) -> str:
    """``study.md``: the top-1 table (mean ± SE over seeds) and the McNemar p-values."""
    cols = study["columns"]
    cfg = study["config"]
    first = cols[0]
    evaluated_on = (
        f"{cfg['holdout']} validation images held out from the training split (not the test split)"
        if cfg.get("holdout")
        else "the test split"
    )
    lines = [
        f"# Study: {cfg['base']} on {study.get('data', '')}",
        "",
        f"Top-1 (%) on {evaluated_on}, mean ± standard error over {cfg['seeds']} seed(s); linear "
        "probe with cached features, kNN with k = 20, T = 0.07. `p` is McNemar's exact p-value of "
        f"the criterion against `continued` on the {first} column, predictions of all seeds pooled.",
        "",
        "| model | " + " | ".join(cols) + f" | p vs continued ({first}) |",
        "|---|" + "---:|" * len(cols) + "---:|",
    ]
    for row in study["rows"]:
        name = row["name"] if row["name"] == "base" else f"+ {row['name']}"
        if row["name"] == CONTROL:
            name = "continued"
        p = "" if row["name"] in ("base", CONTROL) else _fmt_p(row[first])
        lines.append(f"| {name} | " + " | ".join(_fmt(row[c]) for c in cols) + f" | {p} |")
    lines += [
        "",
        "McNemar's exact p-value against `continued`, every column (pooled over seeds):",
        "",
        "| criterion | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for row in study["rows"]:
        if row["name"] in ("base", CONTROL):
            continue
        lines.append(f"| {row['name']} | " + " | ".join(_fmt_p(row[c]) for c in cols) + " |")
    reasons: dict[str, list[str]] = {}
    for cell, why in (study.get("cannot_run") or {}).items():
        reasons.setdefault(why, []).append(cell)
    if reasons:
        lines += ["", "Cells that cannot run with this base:", ""]
        lines += [f"- {', '.join(cells)}: {why}" for why, cells in reasons.items()]
    expected = sum(row["name"] != "base" for row in study["rows"]) * cfg["seeds"]
    done = sum(len(row.get("seeds_done", [])) for row in study["rows"] if row["name"] != "base")
    if done + len(study.get("cannot_run") or {}) < expected:
        lines += ["", "_Incomplete: some cells are not finished yet (see study.json, `seeds_done`)._"]
    lines += ["", f"Made by `{study.get('command', 'sslboost study')}`."]
    return "\n".join(lines) + "\n"


def render_png(study: dict, path: str | Path) -> Path:
    """``study.png``: one group of bars per column, one bar per row, standard-error bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    cols, rows = study["columns"], study["rows"]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(cols) + 0.3 * len(rows)), 4.2))
    x = np.arange(len(cols))
    lo = min((r[c]["mean"] for r in rows for c in cols if r[c].get("n")), default=0.0)
    for i, row in enumerate(rows):
        means = [row[c]["mean"] if row[c].get("n") else np.nan for c in cols]
        errs = [row[c]["se"] or 0.0 if row[c].get("n") else 0.0 for c in cols]
        ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=errs, capsize=2, label=row["name"])
    ax.set_xticks(x, cols)
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(bottom=max(0.0, math.floor(lo) - 5) if math.isfinite(lo) else 0.0)
    ax.set_title(f"{study['config']['base']}: continued pre-training with each criterion")
    ax.legend(fontsize="small", ncols=min(len(rows), 5), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def collect(cfg: StudyConfig) -> dict[tuple[str, int], dict]:
    """Results of the finished cells on disk (made under today's evaluation protocol)."""
    cells = {}
    for crit in cfg.criteria:
        for s in range(cfg.seeds):
            record = _read_current(Path(cfg.out) / "cells" / cell_name(crit, s) / RESULT_FILE)
            if record is not None:
                cells[(crit, s)] = record
    return cells


def write_outputs(cfg: StudyConfig, base: dict, meta: dict) -> dict:
    """Write ``study.json``, ``study.md`` and ``study.png`` from what is on disk."""
    study = summarise(cfg, base, collect(cfg), meta)
    out = Path(cfg.out)
    write_json_atomic(out / "study.json", study)
    write_text_atomic(out / "study.md", render_markdown(study))
    render_png(study, out / "study.png")
    return study


@dataclass
class StudyRun:
    study: dict
    trained: list[str]
    skipped: list[str]
    status: str  # "complete" or "interrupted"
    cannot_run: dict[str, str] = field(default_factory=dict)  # cell name → reason


def run_study(cfg: StudyConfig, *, log: Log = _quiet, command: str = "") -> StudyRun:
    """Run every missing cell, then write the outputs (see the module docstring)."""
    from e2mc_cli.zoo import resolve_base

    cfg = check_config(cfg)
    data = default_data(cfg.base, cfg.data)
    resolve_base(cfg.base)  # fail early on a bad base
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base = run_base(cfg, data, log)
    trained, skipped = [], []
    cannot_run: dict[str, str] = {}
    status = "complete"

    def outputs() -> dict:
        meta = {
            "data": data,
            "cannot_run": dict(cannot_run),
            "command": command or "sslboost study",
            "wall_time_s_this_run": round(time.perf_counter() - started, 1),
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return write_outputs(cfg, base, meta)

    try:
        for seed in range(cfg.seeds):
            for crit in cfg.criteria:
                t = time.perf_counter()
                try:
                    _, now = run_cell(cfg, data, crit, seed, log)
                except UserError as exc:  # this criterion cannot run with this base: say why, go on
                    cannot_run[cell_name(crit, seed)] = str(exc)
                    log(f"{cell_name(crit, seed)}: cannot run: {exc}")
                    continue
                (trained if now else skipped).append(cell_name(crit, seed))
                if now:
                    log(f"{cell_name(crit, seed)}: done in {time.perf_counter() - t:.0f} s")
                    outputs()  # the tables so far, after every new cell
    except StudyInterrupted as exc:
        log(f"{exc}; run the same command again to resume")
        status = "interrupted"
    return StudyRun(outputs(), trained, skipped, status, cannot_run)


# -- the before/after table of `sslboost continue` ------------------------------------------------


def before_after(
    base_ckpt,
    refined_path: str | Path,
    *,
    data: str,
    out: str | Path,
    labels: tuple[str, ...] = ("1%", "10%"),
    image_size: int | None = None,
    eval_epochs: int | None = None,
    device: str = "auto",
    base_source: str = "",
    log: Log = _quiet,
) -> list[dict]:
    """Linear probe (cached features, seed 0) of the base and of the refined checkpoint at each
    label fraction; evaluations go to ``out/eval-before/`` and ``out/eval-after/`` (so
    ``sslboost compare`` can be run on them). One row per label fraction: top-1 before, after,
    the difference and McNemar's exact p-value."""
    from e2mc_cli.checkpoint import load_checkpoint
    from e2mc_cli.evaluate.stats import mcnemar

    out = Path(out)
    common = dict(
        data=data,
        labels=list(labels),
        knn=False,
        seeds=[0],
        image_size=image_size,
        eval_epochs=eval_epochs,
        device=device,
        log=log,
    )
    before = evaluate_checkpoint(base_ckpt, out / "eval-before", source=base_source, **common)
    after = evaluate_checkpoint(
        load_checkpoint(refined_path), out / "eval-after", source=str(refined_path), **common
    )
    rows = []
    for lab in labels:
        col = column_name(lab)
        _, ca = _correct(before[col]["path"])
        _, cb = _correct(after[col]["path"])
        test = mcnemar(ca[0], cb[0])
        rows.append(
            {
                "labels": lab,
                "before": before[col]["top1"][0],
                "after": after[col]["top1"][0],
                "difference": after[col]["top1"][0] - before[col]["top1"][0],
                "p_mcnemar": test.p_exact,
                "before_path": before[col]["path"],
                "after_path": after[col]["path"],
            }
        )
    return rows


def before_after_table(rows: list[dict], base: str, refined: str):
    """The before/after rows as a rich table (top-1 %, difference in points, McNemar p)."""
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"linear probe top-1 (%), cached features, seed 0: {base} → {refined}",
    )
    for col in ("labels", "base", "refined", "Δ (points)", "McNemar p"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["labels"],
            f"{r['before']:.2f}",
            f"{r['after']:.2f}",
            f"{r['difference']:+.2f}",
            f"{r['p_mcnemar']:.2g}",
        )
    return table
