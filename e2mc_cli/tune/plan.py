"""The stages of a tuning as pure functions: the grid of each stage and the rule that chooses in it.

A point is ``(weights, lr)``: the criterion's coefficients and the learning rate of its run. The
three stages start from the recipe's values (the paper's coefficients, the recipe's ``optim.lr``):

1. ``scale`` (:func:`scale_grid`): every weight times each scale, their ratios kept;
2. ``ratio`` (:func:`ratio_grid`, criteria with two weights or more): at the chosen scale, the
   second … last weights times each ratio relative to the first;
3. ``lr`` (:func:`lr_grid`): at the chosen weights, the learning rate times each factor.

Stages 2 and 3 start with their ``×1`` point, which is the point the previous stage chose (the
same trial, so it is read back, not run again). :func:`choose` takes the highest Δ; a tie keeps
the point closer to the starting values (the smaller ``|log factor|``), then the earlier one. With
a significance level ``alpha`` < 1 it keeps the stage's ``×1`` point unless the highest Δ beats
it with p < ``alpha`` (the test of the two gains, :func:`e2mc_cli.evaluate.stats.
gain_difference_test`): one seed on a validation split is noisy, and a move the data cannot tell
from noise would only carry that noise into the next stage and the test split. A stage without a
``×1`` point with a Δ (a scale grid without 1, a diverged ``×1`` run) keeps its highest Δ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from e2mc_cli.errors import UserError

STAGES = ("scale", "ratio", "lr")
DEFAULT_SCALES = (1.0, 0.1, 0.01, 0.001)
DEFAULT_RATIOS = (0.1, 10.0)
DEFAULT_LR_SCALES = (0.33, 3.0)
DIGITS = 6  # significant digits of a coefficient or learning rate (1000 × 0.1 is 100, not 100.00000000000001)
TIE_DECIMALS = 6  # Δs equal to this many decimals of a point are a tie
DEFAULT_ALPHA = 0.05  # a stage leaves its ×1 point only for a Δ better with p below this


def rounded(value: float) -> float:
    """``value`` to :data:`DIGITS` significant digits, so that a product reads as written."""
    return float(f"{value:.{DIGITS}g}")


def number_text(value: float) -> str:
    """A coefficient or learning rate as typed: ``1000``, ``0.1``, ``1e-05``."""
    return f"{value:.{DIGITS}g}"


def parse_factors(text: str | Sequence[float], option: str) -> list[float]:
    """``"1,0.1"`` (or a list) → ``[1.0, 0.1]``: positive finite numbers without repeats, in the
    order given; anything else is one :class:`UserError` naming ``option``."""
    items = str(text).split(",") if isinstance(text, str) else list(text)
    out: list[float] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise UserError(f"{option} {text}: {item!r} is not a number (e.g. {option} 0.1,10)") from None
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{option}: every factor must be a positive number, got {item}")
        if rounded(value) not in out:
            out.append(rounded(value))
    if not out:
        raise UserError(f"{option}: give at least one factor, e.g. {option} 0.1,10")
    return out


@dataclass(frozen=True)
class Point:
    """One point of a stage: the criterion's ``weights`` (name, value) in the criterion's order,
    the learning rate, and the stage's ``factor`` that made it from the stage's starting point."""

    stage: str
    factor: float
    weights: tuple[tuple[str, float], ...]
    lr: float

    @property
    def weight_map(self) -> dict[str, float]:
        return dict(self.weights)

    @property
    def slug(self) -> str:
        """The trial's folder name: ``beta1000-gamma100-lr0.003`` (the same in every stage)."""
        return trial_slug(self.weights, self.lr)


def trial_slug(weights: Sequence[tuple[str, float]], lr: float) -> str:
    """``<name><value>-…-lr<value>``: one name for one ``(weights, lr)``."""
    return "-".join([*(f"{k}{number_text(v)}" for k, v in weights), f"lr{number_text(lr)}"])


def _ordered(factors: Sequence[float]) -> list[float]:
    """``1`` (the point the stage starts from) first, then ``factors`` in their order, without it."""
    return [1.0, *(f for f in factors if f != 1.0)]


def scale_grid(start: Mapping[str, float], lr: float, scales: Sequence[float]) -> list[Point]:
    """Stage 1: every weight of ``start`` times each of ``scales`` (their ratios kept), at ``lr``."""
    return [
        Point("scale", s, tuple((k, rounded(v * s)) for k, v in start.items()), rounded(lr)) for s in scales
    ]


def ratio_grid(best: Point, ratios: Sequence[float]) -> list[Point]:
    """Stage 2: at ``best``'s scale, the second … last weights times each ratio relative to the
    first (``×1`` first: ``best`` itself). Empty for a criterion with one weight."""
    if len(best.weights) < 2:
        return []
    (first, *rest) = best.weights
    return [
        Point("ratio", r, (first, *((k, rounded(v * r)) for k, v in rest)), best.lr) for r in _ordered(ratios)
    ]


def lr_grid(best: Point, lr_scales: Sequence[float]) -> list[Point]:
    """Stage 3: at ``best``'s weights, its learning rate times each factor (``×1`` first: ``best``)."""
    return [Point("lr", f, best.weights, rounded(best.lr * f)) for f in _ordered(lr_scales)]


def highest(points: Sequence[Point], deltas: Sequence[float | None]) -> int | None:
    """The index of the point with the highest Δ (``None``: a point without one, e.g. a run that
    diverged); a tie keeps the point closer to the stage's start (smaller ``|log factor|``), then
    the earlier one. ``None`` when no point has a Δ."""
    best, best_key = None, None
    for i, (point, delta) in enumerate(zip(points, deltas, strict=True)):
        if delta is None:
            continue
        key = (round(delta, TIE_DECIMALS), -round(abs(math.log(point.factor)), 9))  # log 0.1 = −log 10
        if best_key is None or key > best_key:
            best, best_key = i, key
    return best


def start_index(points: Sequence[Point]) -> int | None:
    """The index of the stage's ``×1`` point (``None`` when its grid has none)."""
    return next((i for i, p in enumerate(points) if p.factor == 1.0), None)


def choose(
    points: Sequence[Point],
    deltas: Sequence[float | None],
    p_vs_start: Sequence[float | None] | None = None,
    alpha: float = 1.0,
) -> int | None:
    """The chosen point of a stage: :func:`highest`, unless ``alpha`` < 1 and the stage has a
    ``×1`` point with a Δ that the highest does not beat with ``p_vs_start[i]`` < ``alpha`` (the
    p-value of point ``i``'s gain against the ``×1`` point's); then the ``×1`` point."""
    best, start = highest(points, deltas), start_index(points)
    if alpha >= 1 or best is None or start is None or best == start or deltas[start] is None:
        return best
    p = None if p_vs_start is None else p_vs_start[best]
    return best if p is not None and p < alpha else start
