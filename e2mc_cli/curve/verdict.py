"""The plateau of a pre-training, from kNN top-1 at several epoch budgets: pure functions.

The rule: a pre-training has reached its plateau when the kNN top-1 on held-out images gains less
than :data:`PLATEAU_GAIN` (0.3) points over the last doubling of its epochs, i.e. between the
largest budget ``E`` and ``E / 2``. Budgets that do not double are allowed; the verdict then needs
a budget at half the largest one, and says it cannot tell without one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

PLATEAU_GAIN = 0.3  # kNN top-1 points over the last doubling of epochs below which training has plateaued


@dataclass(frozen=True)
class Verdict:
    """Whether the curve has plateaued (``None``: cannot tell), in words, and the figures behind it."""

    reached: bool | None
    text: str
    last: float | None = None  # the largest budget (epochs)
    half: float | None = None  # the budget at half of it, if there is one
    gain: float | None = None  # top-1 at ``last`` minus top-1 at ``half`` (points)


def at_half(values: Mapping[float, float], epochs: float) -> float | None:
    """The budget of ``values`` at half of ``epochs`` (compared to 1e-9 relative), else ``None``."""
    return next((e for e in values if math.isclose(e, epochs / 2, rel_tol=1e-9)), None)


def doubling_gain(values: Mapping[float, float], epochs: float) -> float | None:
    """``values[epochs] − values[epochs / 2]``: the gain over the doubling that ends at ``epochs``;
    ``None`` without a budget at half of it (or without ``epochs`` itself)."""
    half = at_half(values, epochs)
    if half is None or epochs not in values:
        return None
    return values[epochs] - values[half]


def plateau_verdict(knn: Mapping[float, float], threshold: float = PLATEAU_GAIN) -> Verdict:
    """The verdict on kNN top-1 (%) by epoch budget: ``plateau reached at E epochs`` when the last
    doubling gained less than ``threshold`` points (a loss counts as no gain), ``not yet: +x.xx
    over the last doubling`` otherwise, and ``cannot tell`` without a budget at half the largest.
    The gain is compared after rounding to 1e-6 points, so a gain of exactly ``threshold`` (made
    of decimal figures) is not below it."""
    if not knn:
        return Verdict(None, "cannot tell: no budget evaluated yet")
    last = max(knn)
    half = at_half(knn, last)
    if half is None:
        return Verdict(
            None,
            f"cannot tell: no budget at {last / 2:g} epochs, half of the last one ({last:g}), "
            "to compare with",
            last=last,
        )
    gain = knn[last] - knn[half]
    span = f"{half:g} → {last:g} epochs"
    if round(gain, 6) < threshold:
        text = (
            f"plateau reached at {last:g} epochs: kNN {gain:+.2f} points over the last doubling "
            f"({span}), less than +{threshold:.2f}"
        )
        return Verdict(True, text, last, half, gain)
    text = f"not yet: {gain:+.2f} over the last doubling ({span}); a plateau gains less than +{threshold:.2f}"
    return Verdict(False, text, last, half, gain)
