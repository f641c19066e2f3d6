"""A run folder as publishing sees it: its layout, and :class:`RunInfo`, what it says about itself.

A run folder (the ``--out`` of ``sslboost continue``) holds the canonical checkpoint
``model.safetensors`` and, beside it, ``recipe.toml``, ``summary.json``, ``metrics.jsonl`` and
the ``eval*/eval.json`` of each ``sslboost eval``; an export adds ``backbone.safetensors``,
``config.json`` and ``README.md``. :func:`read_run` reads everything but the tensors.

Evaluation records are read with :mod:`e2mc_cli.evaluate.records`. One is left out of what a
card reports, with a warning, when it is not an sslboost evaluation, when it evaluates another
checkpoint than ``model.safetensors`` (its ``epoch`` or ``steps`` differ), or when it was made
under an older evaluation protocol than today's (kept apart in :attr:`RunInfo.outdated_evals`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from e2mc_cli.checkpoint import FORMAT, read_metadata
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.records import EVAL_FILE, EvalRecord, read_record
from e2mc_cli.methods import method_names
from e2mc_cli.models import build_backbone
from e2mc_cli.run_layout import MODEL_FILE

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


# Backbones whose parameter names and modules are those of the timm model of the same name.
TIMM_ARCHS: dict[str, str] = {"resnet50": "resnet50", "resnet18": "resnet18"}


@dataclass
class RunInfo:
    """Everything an export needs from a run folder, except the tensors."""

    run_dir: Path
    metadata: dict[str, str]
    method: str
    arch: str
    base: str  # "unknown" when the checkpoint does not say
    criterion: str  # "unknown" when the checkpoint does not say
    epoch: int | float | None  # the checkpoint's
    epochs: int | float | None  # of continued pre-training
    heads: dict
    command: str | None
    recipe: dict
    recipe_toml: str | None
    summary: dict
    evals: list[EvalRecord]  # of this checkpoint, under today's evaluation protocol
    outdated_evals: list[EvalRecord] = field(default_factory=list)  # of this checkpoint, another protocol
    warnings: list[str] = field(default_factory=list)

    @property
    def timm_compatible(self) -> bool:
        return self.arch in TIMM_ARCHS

    @property
    def num_features(self) -> int:
        return _num_features(self.arch)

    def relative(self, path: Path) -> str:
        """``path`` (inside the run folder) as the card names it."""
        return path.relative_to(self.run_dir).as_posix()


def _number(value) -> int | float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else f


def _json_or(text, default):
    if not isinstance(text, str):
        return text if text is not None else default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return default


def _find_key(tree, key: str):
    """The value of ``key`` in a nested dict, breadth first (top level wins); None if absent."""
    level = [tree] if isinstance(tree, dict) else []
    while level:
        for d in level:
            if key in d:
                return d[key]
        level = [v for d in level for v in d.values() if isinstance(v, dict)]
    return None


@cache
def _num_features(arch: str) -> int:
    return int(build_backbone(arch).num_features)


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path if it is a folder holding ``model.safetensors``; else a UserError."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: no such run folder")
    if not (run / MODEL_FILE).is_file():
        raise UserError(
            f"{run}: not a run folder (no {MODEL_FILE}); expected the --out folder of `sslboost continue`"
        )
    return run


def _canonical_metadata(path: Path) -> dict[str, str]:
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not an sslboost checkpoint (metadata format={meta.get('format')!r})")
    if meta.get("method") not in method_names() or not meta.get("arch"):
        raise UserError(f"{path}: checkpoint metadata lacks a known method and an arch")
    return meta


def eval_files(run_dir: str | Path) -> list[Path]:
    """The ``eval*/eval.json`` files of a run folder, sorted."""
    return sorted(p for p in Path(run_dir).glob(f"eval*/{EVAL_FILE}") if p.is_file())


def _other_checkpoint(record: EvalRecord, metadata: dict[str, str]) -> str | None:
    """Why ``record`` evaluates another checkpoint than the one of ``metadata``; None if it does not."""
    for key in ("epoch", "steps"):
        theirs, ours = _number(record.checkpoint_metadata.get(key)), _number(metadata.get(key))
        if theirs is not None and ours is not None and theirs != ours:
            return f"evaluates the checkpoint at {key} {theirs}, not this model's {ours}"
    return None


def _read_evals(run: Path, metadata: dict[str, str], warnings: list[str]) -> tuple[list, list]:
    """(current records, outdated records) of this checkpoint; a warning for each one left out."""
    current, outdated = [], []
    for path in eval_files(run):
        rel = path.relative_to(run).as_posix()
        try:
            record = read_record(path)
        except UserError as exc:
            warnings.append(f"{rel}: {str(exc).removeprefix(f'{path}: ')}; left out of the card")
            continue
        other = _other_checkpoint(record, metadata)
        if other:
            warnings.append(f"{rel}: {other}; left out of the card (evaluate model.safetensors again)")
        elif record.is_current:
            current.append(record)
        else:
            outdated.append(record)
            warnings.append(
                f"{rel}: made under evaluation protocol {record.protocol_version}; its figures are left "
                "out of the card (evaluate again with `sslboost eval`)"
            )
    return current, outdated


def _recipe(metadata: dict[str, str], recipe_toml: str | None, warnings: list[str]) -> dict:
    """The resolved recipe: the checkpoint's, else ``recipe.toml``'s."""
    recipe = _json_or(metadata.get("recipe"), {})
    if not recipe and recipe_toml is not None:
        try:
            recipe = tomllib.loads(recipe_toml)
        except tomllib.TOMLDecodeError as exc:
            warnings.append(f"recipe.toml: not valid TOML ({exc})")
    return recipe if isinstance(recipe, dict) else {}


def _summary(run: Path, warnings: list[str]) -> dict:
    if not (run / "summary.json").is_file():
        return {}
    summary = _json_or((run / "summary.json").read_text(), None)
    if not isinstance(summary, dict):
        warnings.append("summary.json: not a JSON object; ignored")
        return {}
    return summary


def _epochs(summary: dict, recipe: dict, epoch) -> int | float | None:
    """Epochs of continued pre-training: ``summary.json``'s ``epochs_trained``, else the recipe's
    ``epochs``, else the checkpoint's ``epoch``."""
    for value in (summary.get("epochs_trained"), _find_key(recipe, "epochs"), epoch):
        if _number(value) is not None:
            return _number(value)
    return None


def _command(metadata: dict[str, str], summary: dict) -> str | None:
    """The command that made the run, as one shell line."""
    for value in (metadata.get("command"), summary.get("command")):
        if isinstance(value, str) and value.startswith("["):
            value = _json_or(value, value)
        if isinstance(value, list) and value:
            return shlex.join(str(v) for v in value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def read_run(run_dir: str | Path) -> RunInfo:
    """Metadata, recipe, summary and evaluation results of a run folder (no tensors are read)."""
    run = check_run_dir(run_dir)
    metadata = _canonical_metadata(run / MODEL_FILE)
    warnings: list[str] = []
    recipe_toml = (run / "recipe.toml").read_text() if (run / "recipe.toml").is_file() else None
    recipe = _recipe(metadata, recipe_toml, warnings)
    summary = _summary(run, warnings)
    evals, outdated = _read_evals(run, metadata, warnings)
    epoch = _number(metadata.get("epoch"))
    return RunInfo(
        run_dir=run,
        metadata=metadata,
        method=metadata["method"],
        arch=metadata["arch"],
        base=metadata.get("base") or "unknown",
        criterion=metadata.get("criterion") or "unknown",
        epoch=epoch,
        epochs=_epochs(summary, recipe, epoch),
        heads=_json_or(metadata.get("heads"), {}),
        command=_command(metadata, summary),
        recipe=recipe,
        recipe_toml=recipe_toml,
        summary=summary,
        evals=evals,
        outdated_evals=outdated,
        warnings=warnings,
    )
