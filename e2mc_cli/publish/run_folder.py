"""A run folder as publishing sees it: its layout, and :class:`RunInfo`, what it says about itself.

A run folder (the ``--out`` of ``sslboost continue``) holds the canonical checkpoint
``sslboost.safetensors`` and, beside it, ``recipe.toml``, ``summary.json``, ``metrics.jsonl`` and
the ``eval.json`` of each evaluation, at any depth (``eval-linear-cached-1pct/``, and the
``eval-before/`` and ``eval-after/linear-1pct/`` of ``continue``); an export adds the root
``model.safetensors``, ``config.json`` and ``README.md`` (:mod:`e2mc_cli.run_layout`). A folder of
the earlier layout holds the full checkpoint as ``model.safetensors``; it is read all the same.
:func:`read_run` reads everything but the tensors.

Evaluation records are read with :mod:`e2mc_cli.evaluate.records` and sorted by whose figures
they are: this model's (their checkpoint's ``epoch`` and ``steps`` are the model's), the base's
(the checkpoint evaluated is the run's ``--base``: ``continue``'s ``eval-before/``), or neither
(an earlier checkpoint of the run), left out with a warning. So is a record that is not an
sslboost evaluation; one made under an older evaluation protocol than today's is kept apart
(:attr:`RunInfo.outdated_evals`) and named, not reported.
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
from e2mc_cli.run_layout import CHECKPOINT_FILE, MODEL_FILE, RECIPE_FILE, STATE_FILE, SUMMARY_FILE

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
    checkpoint: Path  # the full checkpoint: sslboost.safetensors (model.safetensors in the earlier layout)
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
    base_evals: list[EvalRecord] = field(default_factory=list)  # of the base, under today's protocol
    outdated_evals: list[EvalRecord] = field(default_factory=list)  # of this checkpoint, another protocol
    warnings: list[str] = field(default_factory=list)

    @property
    def timm_compatible(self) -> bool:
        return self.arch in TIMM_ARCHS

    @property
    def num_features(self) -> int:
        return _num_features(self.arch)

    @property
    def legacy_layout(self) -> bool:
        """The full checkpoint is the root ``model.safetensors`` (a folder of the earlier layout)."""
        return self.checkpoint.name != CHECKPOINT_FILE

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


def checkpoint_file(run: Path) -> Path:
    """The full checkpoint of a run folder: ``sslboost.safetensors``, else (earlier layout) a root
    ``model.safetensors`` that is one; a UserError when there is none."""
    if (run / CHECKPOINT_FILE).is_file():
        return run / CHECKPOINT_FILE
    root = run / MODEL_FILE
    if root.is_file() and read_metadata(root).get("format") == FORMAT:
        return root
    if root.is_file():
        raise UserError(
            f"{run}: {MODEL_FILE} is the backbone alone and the full checkpoint {CHECKPOINT_FILE} is missing"
        )
    raise UserError(
        f"{run}: not a run folder (no {CHECKPOINT_FILE}); expected the --out folder of `sslboost continue`"
    )


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path if it is a folder holding a full checkpoint (:func:`checkpoint_file`)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: no such run folder")
    checkpoint_file(run)
    return run


def _canonical_metadata(path: Path) -> dict[str, str]:
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not an sslboost checkpoint (metadata format={meta.get('format')!r})")
    if meta.get("method") not in method_names() or not meta.get("arch"):
        raise UserError(f"{path}: checkpoint metadata lacks a known method and an arch")
    return meta


def eval_files(run_dir: str | Path) -> list[Path]:
    """Every ``eval.json`` below a run folder (at any depth; never in ``checkpoints/``), sorted."""
    run = Path(run_dir)
    found = (p for p in run.rglob(EVAL_FILE) if p.is_file())
    return sorted(p for p in found if p.relative_to(run).parts[0] != STATE_FILE.parts[0])


def _other_checkpoint(record: EvalRecord, metadata: dict[str, str]) -> str | None:
    """Why ``record`` evaluates another checkpoint than the one of ``metadata``; None if it does not."""
    for key in ("epoch", "steps"):
        theirs, ours = _number(record.checkpoint_metadata.get(key)), _number(metadata.get(key))
        if theirs is not None and ours is not None and theirs != ours:
            return f"evaluates the checkpoint at {key} {theirs}, not this model's {ours}"
    return None


def is_base_record(record: EvalRecord, base: str) -> bool:
    """Whether ``record`` evaluates the run's base: its checkpoint is the ``--base`` the run was
    continued from, as given (what ``continue --eval-after`` and ``eval --base`` record)."""
    return bool(base) and record.checkpoint_source == base


@dataclass
class _Evals:
    current: list[EvalRecord] = field(default_factory=list)
    base: list[EvalRecord] = field(default_factory=list)
    outdated: list[EvalRecord] = field(default_factory=list)


def _outdated_note(rel: str, record: EvalRecord) -> str:
    return (
        f"{rel}: made under evaluation protocol {record.protocol_version}; its figures are left out of "
        "the card (evaluate again with `sslboost eval`)"
    )


def _read_evals(run: Path, metadata: dict[str, str], warnings: list[str]) -> _Evals:
    """This checkpoint's records (current and outdated) and the base's; a warning for each one left out."""
    found = _Evals()
    for path in eval_files(run):
        rel = path.relative_to(run).as_posix()
        try:
            record = read_record(path)
        except UserError as exc:
            warnings.append(f"{rel}: {str(exc).removeprefix(f'{path}: ')}; left out of the card")
            continue
        if is_base_record(record, metadata.get("base", "")):
            if record.is_current:
                found.base.append(record)
            else:
                warnings.append(_outdated_note(rel, record))
            continue
        other = _other_checkpoint(record, metadata)
        if other:
            warnings.append(f"{rel}: {other}; left out of the card (evaluate {MODEL_FILE} again)")
        elif record.is_current:
            found.current.append(record)
        else:
            found.outdated.append(record)
            warnings.append(_outdated_note(rel, record))
    return found


def _recipe(metadata: dict[str, str], recipe_toml: str | None, warnings: list[str]) -> dict:
    """The resolved recipe: the checkpoint's, else ``recipe.toml``'s."""
    recipe = _json_or(metadata.get("recipe"), {})
    if not recipe and recipe_toml is not None:
        try:
            recipe = tomllib.loads(recipe_toml)
        except tomllib.TOMLDecodeError as exc:
            warnings.append(f"{RECIPE_FILE}: not valid TOML ({exc})")
    return recipe if isinstance(recipe, dict) else {}


def _summary(run: Path, warnings: list[str]) -> dict:
    if not (run / SUMMARY_FILE).is_file():
        return {}
    summary = _json_or((run / SUMMARY_FILE).read_text(), None)
    if not isinstance(summary, dict):
        warnings.append(f"{SUMMARY_FILE}: not a JSON object; ignored")
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
    checkpoint = checkpoint_file(run)
    metadata = _canonical_metadata(checkpoint)
    warnings: list[str] = []
    recipe_toml = (run / RECIPE_FILE).read_text() if (run / RECIPE_FILE).is_file() else None
    recipe = _recipe(metadata, recipe_toml, warnings)
    summary = _summary(run, warnings)
    evals = _read_evals(run, metadata, warnings)
    epoch = _number(metadata.get("epoch"))
    return RunInfo(
        run_dir=run,
        checkpoint=checkpoint,
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
        evals=evals.current,
        base_evals=evals.base,
        outdated_evals=evals.outdated,
        warnings=warnings,
    )
