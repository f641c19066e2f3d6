"""What a tuning is made of: :class:`TuneConfig`, its checks, the starting point read from the
recipe, the study configuration of each trial and control, and the one ``sslboost study`` command
that reads the test split with the chosen values (:func:`test_command`)."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from e2mc_cli.criteria import CRITERIA, criterion_defaults
from e2mc_cli.data.datasets import check_validation_holdout
from e2mc_cli.errors import UserError
from e2mc_cli.study.config import CONTROL, StudyConfig, check_config, check_sets
from e2mc_cli.tune.plan import (
    DEFAULT_ALPHA,
    DEFAULT_LR_SCALES,
    DEFAULT_RATIOS,
    DEFAULT_SCALES,
    Point,
    number_text,
    parse_factors,
    rounded,
)

TEST_SEEDS = 3  # the seeds of the one read of the test split


def _text(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


@dataclass
class TuneConfig:
    """Everything ``sslboost tune`` needs (``None``: the recipe's or the protocol's default)."""

    base: str
    out: str | Path
    criterion: str = "e2mc"
    epochs: float | None = None  # of each run (None: the recipe's)
    holdout: int = 10000  # training images held out to evaluate on (the test split is never read)
    scales: list[float] | str = _text(DEFAULT_SCALES)
    ratios: list[float] | str = _text(DEFAULT_RATIOS)
    lr_scales: list[float] | str = _text(DEFAULT_LR_SCALES)
    labels: list[str] | str = "1%,10%"
    alpha: float = DEFAULT_ALPHA  # a stage leaves its ×1 point only for a Δ better with p below this
    seed: int = 0  # data order, augmentations and the probe's label subset of every run
    knn: bool = False
    data: str | None = None
    sets: list[str] = field(default_factory=list)
    batch_size: int | None = None
    max_steps: int | None = None
    eval_epochs: int | None = None
    image_size: int | None = None
    workers: int | None = None
    augment: str | None = None
    device: str = "auto"


@dataclass(frozen=True)
class Start:
    """The starting point: the recipe's coefficients of the criterion (the paper's), its
    ``optim.lr``, and the ``optim.lr`` of the control's recipe."""

    weights: dict[str, float]
    lr: float
    control_lr: float


def study_config(cfg: TuneConfig, out: str | Path, criteria: list[str], sets: list[str]) -> StudyConfig:
    """The :class:`StudyConfig` of one cell folder of the tuning (one seed: ``cfg.seed``)."""
    return StudyConfig(
        base=cfg.base, out=out, criteria=list(criteria), seeds=1, labels=cfg.labels, knn=cfg.knn,
        data=cfg.data, epochs=cfg.epochs, batch_size=cfg.batch_size, max_steps=cfg.max_steps,
        sets=list(sets), eval_epochs=cfg.eval_epochs, image_size=cfg.image_size, workers=cfg.workers,
        augment=cfg.augment, device=cfg.device, holdout=cfg.holdout,
    )  # fmt: skip


def check_criterion(name: str) -> None:
    """``name`` is a criterion with coefficients to tune; else one :class:`UserError`."""
    if name not in CRITERIA:
        raise UserError(f"--criterion: unknown criterion {name!r}; valid names: {', '.join(CRITERIA)}")
    if name == CONTROL:
        raise UserError(
            f"--criterion {name}: the base loss alone is the control every trial is compared with; "
            "it has no coefficients to tune"
        )
    if not CRITERIA[name].weights:
        raise UserError(f"--criterion {name}: it has no coefficients to tune")


def check_tune(cfg: TuneConfig) -> TuneConfig:
    """Validate the criterion, the split, the factor lists and the study settings up front (one
    clear line each); normalise the lists."""
    check_criterion(cfg.criterion)
    check_validation_holdout(cfg.holdout, None, "tuning")
    if cfg.seed < 0:
        raise UserError(f"--seed must be 0 or more, got {cfg.seed}")
    if not (0 < cfg.alpha <= 1):
        raise UserError(f"--alpha must be in (0, 1] (1: the highest Δ whatever its p), got {cfg.alpha:g}")
    if cfg.epochs is not None and not (math.isfinite(cfg.epochs) and cfg.epochs > 0):
        raise UserError(f"--epochs must be a positive number (fractions allowed), got {cfg.epochs}")
    cfg.scales = parse_factors(cfg.scales, "--scales")
    cfg.ratios = parse_factors(cfg.ratios, "--ratios")
    cfg.lr_scales = parse_factors(cfg.lr_scales, "--lr-scales")
    study = check_config(study_config(cfg, cfg.out, [CONTROL, cfg.criterion], cfg.sets))
    if not study.labels:
        raise UserError("--labels: give at least one label fraction; the first one chooses")
    cfg.labels = study.labels
    return cfg


def start_point(cfg: TuneConfig, method: str) -> Start:
    """The coefficients and learning rates of the recipes ``sslboost continue`` picks for this base
    (the criterion's and the control's, with the ``--set`` overrides that reach them), resolved as
    ``sslboost study`` resolves them: a ``--set`` no recipe takes is an error here, before any run."""
    recipes = check_sets(study_config(cfg, cfg.out, [CONTROL, cfg.criterion], cfg.sets), method)
    section = recipes[cfg.criterion]["criterion"]
    defaults = criterion_defaults(cfg.criterion)
    weights = {}
    for key in CRITERIA[cfg.criterion].weights:
        value = float(section.get(key, defaults[key]))
        if not (math.isfinite(value) and value > 0):
            raise UserError(
                f"the {cfg.criterion} recipe's criterion.{key} is {value:g}: there is no scale to tune "
                f"from; give a positive starting value with --set {cfg.criterion}:criterion.{key}=V"
            )
        weights[key] = rounded(value)
    lr, control_lr = (rounded(float(recipes[c]["optim"]["lr"])) for c in (cfg.criterion, CONTROL))
    return Start(weights, lr, control_lr)


def trial_key(point: Point) -> str:
    """A trial's folder under the tuning folder: ``trials/<slug>``."""
    return f"trials/{point.slug}"


def control_key(lr: float) -> str:
    """The control's folder at learning rate ``lr``: ``controls/lr-<lr>``."""
    return f"controls/lr-{number_text(lr)}"


def trial_sets(criterion: str, point: Point) -> list[str]:
    """The ``--set`` items of a trial: its coefficients (scoped to the criterion) and its lr."""
    sets = [f"{criterion}:criterion.{k}={number_text(v)}" for k, v in point.weights]
    return [*sets, f"optim.lr={number_text(point.lr)}"]


def control_sets(lr: float) -> list[str]:
    """The ``--set`` item of the control at ``lr``."""
    return [f"optim.lr={number_text(lr)}"]


def test_command(cfg: TuneConfig, point: Point, start: Start) -> str:
    """``sslboost study`` of ``continued`` and the criterion with the chosen values, 3 seeds, on the
    test split (the tuning's ``--set`` items first, then the chosen ones; ``optim.lr`` only when
    it differs from a recipe's)."""
    c = cfg.criterion
    args = ["sslboost", "study", "--base", str(cfg.base), "--criteria", f"{CONTROL},{c}"]
    args += ["--seeds", str(TEST_SEEDS)]
    if cfg.epochs is not None:
        args += ["--epochs", f"{cfg.epochs:g}"]
    args += ["--labels", ",".join(cfg.labels)] + ([] if cfg.knn else ["--no-knn"])
    given = (
        ("--data", cfg.data), ("--batch-size", cfg.batch_size), ("--max-steps", cfg.max_steps),
        ("--eval-epochs", cfg.eval_epochs), ("--image-size", cfg.image_size),
    )  # fmt: skip
    args += [a for flag, value in given if value is not None for a in (flag, str(value))]
    sets = [*cfg.sets, *trial_sets(c, point)[:-1]]
    if point.lr != start.lr or point.lr != start.control_lr:
        sets.append(trial_sets(c, point)[-1])
    args += [a for s in sets for a in ("--set", s)]
    return shlex.join([*args, "--out", str(Path(cfg.out) / "test")])
