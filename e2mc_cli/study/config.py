"""What a study is made of: :class:`StudyConfig`, its checks, and the ``--set`` overrides scoped to
one criterion (``--set e2mc:criterion.beta=100``). An override that no recipe of the study takes
(an unknown key, or a key of another criterion given unscoped) is an error before any cell runs
(:func:`check_sets`), and so is a list of ``--epochs`` whose points are not whole steps of the runs
(:func:`check_points`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from e2mc_cli.criteria import CRITERIA
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.data.subsets import parse_labels
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.protocols import MODES
from e2mc_cli.training import recipe as R
from e2mc_cli.training.data import steps_per_epoch
from e2mc_cli.training.snapshots import parse_points, snapshot_steps
from e2mc_cli.zoo import builtin_data

DEFAULT_CRITERIA = ("continued", "e2mc", "vcreg", "uniformity", "mmcr", "vne", "logdet", "simmer")
DEFAULT_LABELS = ("1%", "10%", "100%")
CONTROL = "continued"  # the criterion every other one is tested against


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
    # one number (or None: the recipe's); or a list (``"1,3,10"``): each cell trains one run to the
    # largest and is evaluated at every point from the run's snapshots
    epochs: float | list[float] | str | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    sets: list[str] = field(default_factory=list)
    eval_epochs: int | None = None
    image_size: int | None = None
    workers: int | None = None  # None: chosen for the data and machine
    augment: str | None = None  # where the training views are made (None: the library's default)
    device: str = "auto"
    holdout: int = 0  # > 0: evaluate on this many training images held out, not on the test split
    probe_mode: str = "cached"  # the linear probe: "cached" (features once) or "standard" (the paper's)


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
    if isinstance(cfg.epochs, (str, list, tuple)):
        points = parse_points(cfg.epochs, "--epochs")
        cfg.epochs = points[0] if len(points) == 1 else points
    elif cfg.epochs is not None and not (cfg.epochs > 0 and math.isfinite(cfg.epochs)):
        raise UserError(f"--epochs must be positive, got {cfg.epochs}")
    if epoch_points(cfg) and cfg.max_steps is not None:
        raise UserError("--max-steps would stop the runs before their last --epochs point; drop one of them")
    if cfg.probe_mode not in MODES:
        raise UserError(f"--probe-mode {cfg.probe_mode}: expected one of: {', '.join(MODES)}")
    if cfg.holdout < 0:
        raise UserError(f"--holdout must be 0 (the test split) or a number of images, got {cfg.holdout}")
    for item in cfg.sets:
        scope, _ = split_scoped_set(item)
        if scope is not None and scope not in cfg.criteria:
            raise UserError(
                f"--set {item}: {scope!r} is not one of the study's criteria ({', '.join(cfg.criteria)})"
            )
    return cfg


def epoch_points(cfg: StudyConfig) -> list[float] | None:
    """The continuation lengths of a study given a list of ``--epochs``; ``None`` for one value."""
    return list(cfg.epochs) if isinstance(cfg.epochs, list) else None


def epoch_sets(cfg: StudyConfig) -> list[str]:
    """The recipe overrides of ``--epochs``: ``run.epochs``, and for a list the largest value with a
    snapshot at every point (``run.snapshot_epochs``, :mod:`e2mc_cli.training.snapshots`)."""
    points = epoch_points(cfg)
    if points:
        return [f"run.epochs={points[-1]:g}", f"run.snapshot_epochs={json.dumps(points)}"]
    return [] if cfg.epochs is None else [f"run.epochs={float(cfg.epochs):g}"]


def check_sets(cfg: StudyConfig, method: str) -> dict[str, dict]:
    """The recipe of each criterion's runs, resolved as its cells will resolve it (the base's
    recipe, ``--epochs``, ``--batch-size``, ``--image-size`` and the ``--set`` overrides that
    reach it), so that an unknown key or a bad value is one error before any cell runs; the
    recipes by criterion."""
    recipes = {}
    for criterion in cfg.criteria:
        recipe_file, extra = R.base_recipe_file(cfg.base, criterion)
        sets = [*extra, *sets_for(cfg.sets, criterion), *epoch_sets(cfg)]
        try:
            recipes[criterion] = R.resolve_recipe(
                method,
                criterion,
                recipe_file=recipe_file,
                batch_size=cfg.batch_size,
                image_size=cfg.image_size,
                sets=sets,
            )
        except UserError as exc:
            raise UserError(f"the {criterion} runs of the study: {exc}") from None
    return recipes


def check_points(cfg: StudyConfig, recipes: dict[str, dict], data: str) -> None:
    """Every point of a list of ``--epochs`` is a whole optimiser step of each criterion's runs
    on ``data`` (one :class:`UserError` naming the nearest valid points otherwise)."""
    points = epoch_points(cfg)
    if not points:
        return
    n = len(resolve_dataset(data, "train"))
    for recipe in recipes.values():
        per_epoch = steps_per_epoch(n, int(recipe["run"]["batch_size"]))
        if per_epoch:  # else the run itself says the data is smaller than a batch
            snapshot_steps(points, per_epoch, points[-1], where="--epochs")


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
    data = data or builtin_data(base)
    if data:
        return data
    raise UserError(
        f"--data is required for base {base!r}: an ImageFolder root or a built-in dataset (fmnist)"
    )
