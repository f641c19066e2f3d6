"""Significance of a difference between two classifiers evaluated on the same samples
(Appendix D.1 and Table D.1 of the E2MC paper, Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931).

With ``a_i``, ``b_i`` ∈ {0, 1} the correctness of models A and B on sample ``i``:

- **McNemar**: ``n01 = #{a_i = 0, b_i = 1}``, ``n10 = #{a_i = 1, b_i = 0}``,
  ``χ² = (n01 − n10)² / (n01 + n10)`` (no continuity correction, as the paper writes it) with its
  χ²(1) p-value, and the exact p-value: two-sided binomial test of ``n01`` successes in
  ``n01 + n10`` trials at ½ (``scipy.stats.binomtest``).
- **Paired permutation test** on ``d_i = b_i − a_i``: under the null each ``d_i`` is as likely
  to have the opposite sign; the statistic ``Σ d_i`` (equivalently the mean difference) is
  recomputed under random sign flips (``scipy.stats.permutation_test``, ``permutation_type=
  "samples"``, seeded); p = twice the smaller one-sided tail, each ``(1 + #as extreme)/(1 + N)``
  (exact enumeration when ``2^m ≤ N`` for the ``m`` non-zero differences).
- **Difference of two paired gains** (:func:`gain_difference_test`): with ``g_i = b_i − a_i``
  the gain of B over A on sample ``i`` and ``h_i`` that of D over C on the same samples,
  ``d_i = h_i − g_i`` ∈ {−2, …, 2}; the exact two-sided sign-flip test of ``Σ d_i`` (every
  non-zero ``d_i`` as likely to have the opposite sign), computed from the two binomial counts
  of ``|d_i| = 1`` and ``|d_i| = 2``. With one shared control (A = C) it is McNemar's exact
  test of B against D.
- **Cohen's d**: per sample ``d_z = mean(d) / sd(d)`` (paired); across seeds
  ``(mean_B − mean_A) / √((s_A² + s_B²)/2)`` on the per-seed top-1.

Across seeds a figure is reported as mean ± standard error (:func:`mean_se`), written the one way
every table writes it (:func:`format_mean_se`).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass

import numpy as np


def mean_se(values) -> tuple[float, float | None]:
    """Mean and standard error ``s / √n`` (``s`` with ddof = 1); ``None`` for a single value."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), None
    if v.size == 1:
        return float(v[0]), None
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def format_mean_se(mean: float | None, se: float | None = None, digits: int = 2) -> str:
    """``mean ± se`` with ``digits`` decimals; the mean alone without ``se``; ``–`` without a mean."""
    if mean is None:
        return "–"
    text = f"{mean:.{digits}f}"
    return text if se is None else f"{text} ± {se:.{digits}f}"


@dataclass
class McNemar:
    n01: int  # A wrong, B right
    n10: int  # A right, B wrong
    chi2: float
    p_chi2: float
    p_exact: float

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar(correct_a, correct_b) -> McNemar:
    """McNemar's test on paired correctness (see the module docstring); no disagreement → p = 1."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    n01 = int(np.sum(~a & b))
    n10 = int(np.sum(a & ~b))
    m = n01 + n10
    if m == 0:
        return McNemar(0, 0, 0.0, 1.0, 1.0)
    from scipy import stats  # here, not at the top: scipy.stats alone takes a second to import

    chi2 = (n01 - n10) ** 2 / m
    p_chi2 = float(stats.chi2.sf(chi2, df=1))
    p_exact = float(stats.binomtest(n01, m, 0.5).pvalue)
    return McNemar(n01, n10, float(chi2), p_chi2, min(1.0, p_exact))


def _rng_kwarg(seed: int) -> dict:
    from scipy import stats

    params = inspect.signature(stats.permutation_test).parameters
    key = "rng" if "rng" in params else "random_state"
    return {key: np.random.default_rng(seed)}


def paired_permutation_test(correct_a, correct_b, n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Sign-flip permutation test of the mean of ``d = b − a``; returns mean difference and p."""
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    d = b - a
    mean = float(d.mean()) if d.size else 0.0
    nonzero = d[d != 0]  # zeros flip to themselves: they change neither statistic nor null
    if nonzero.size == 0:
        return {"mean_difference": mean, "p": 1.0, "n_resamples": int(n_resamples), "seed": seed}
    from scipy import stats

    res = stats.permutation_test(
        (nonzero,),
        lambda x, axis: np.sum(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=int(n_resamples),
        alternative="two-sided",
        **_rng_kwarg(seed),
    )
    return {
        "mean_difference": mean,
        "p": float(min(1.0, res.pvalue)),
        "n_resamples": int(n_resamples),
        "seed": seed,
    }


def gain_difference_test(control_a, model_a, control_b, model_b) -> dict:
    """Whether gain B (``model_b`` over ``control_b``) differs from gain A (``model_a`` over
    ``control_a``), all four the per-sample correctness on the same samples (see the module
    docstring): ``{"difference": mean of d in points, "p": exact two-sided p, "n1", "n2"}`` with
    ``n1``, ``n2`` the samples where ``|d_i|`` is 1 and 2. No non-zero ``d_i`` → p = 1."""
    gain_a = np.asarray(model_a, dtype=int) - np.asarray(control_a, dtype=int)
    gain_b = np.asarray(model_b, dtype=int) - np.asarray(control_b, dtype=int)
    d = gain_b - gain_a
    n1, n2 = int(np.sum(np.abs(d) == 1)), int(np.sum(np.abs(d) == 2))
    total = int(d.sum())
    out = {"difference": 100.0 * total / d.size if d.size else 0.0, "n1": n1, "n2": n2}
    if total == 0:
        return {**out, "p": 1.0}
    from scipy import stats

    # Σd = (2a − n1) + 2(2b − n2), a ~ Bin(n1, ½), b ~ Bin(n2, ½); symmetric, so p = 2 P(Σd ≥ |t|)
    b = np.arange(n2 + 1)
    need = np.ceil((abs(total) + n1 - 4 * b + 2 * n2) / 2)  # the least a with Σd ≥ |t| at this b
    tail = stats.binom.pmf(b, n2, 0.5) * stats.binom.sf(need - 1, n1, 0.5)
    return {**out, "p": float(min(1.0, 2.0 * tail.sum()))}


def cohens_d_paired(correct_a, correct_b) -> float | None:
    """``mean(d) / sd(d)`` of ``d = b − a`` (ddof = 1); 0 when nothing differs, ``None`` if undefined."""
    d = np.asarray(correct_b, dtype=float) - np.asarray(correct_a, dtype=float)
    if d.size < 2:
        return None
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() == 0 else None
    return float(d.mean() / sd)


def cohens_d_groups(values_a, values_b) -> float | None:
    """``(mean_B − mean_A) / √((s_A² + s_B²)/2)`` over per-seed scores; needs 2+ values each."""
    a = np.asarray(values_a, dtype=float)
    b = np.asarray(values_b, dtype=float)
    if a.size < 2 or b.size < 2:
        return None
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    if pooled == 0:
        return 0.0 if b.mean() == a.mean() else None
    return float((b.mean() - a.mean()) / pooled)
