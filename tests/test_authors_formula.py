"""Each shipped E2MC recipe computes the loss of the authors' training scripts.

The E2MC authors' ``main_vicreg_ent_ft.py``, ``main_swav_ent_ft.py`` and ``main_simsiam_ent_ft.py``
(https://github.com/deepc94/e2mc), which produced Table 1, compute
``γ·(C(ž_a) + C(ž_b)) − β·(H̄(ž_a) + H̄(ž_b))/2``: the dimension-averaged m-spacings entropy
``H̄`` averaged over the two views, the covariance penalty ``C`` summed. The coefficients are the
paper's (Appendix B.1). The expected values below are worked out by hand on four samples of two
dimensions, whose m-spacings (m = round(√4) = 2, scale (n + 1)/m = 5/2) are written out.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from e2mc_cli.criteria import build_criterion
from e2mc_cli.criteria.reference import e2mc_loss as pseudocode_loss
from e2mc_cli.methods import get_method_spec, method_names
from e2mc_cli.training import recipe as R

EPS = 1e-7  # the paper's eps inside the logarithm (Appendix A)

# E2MC paper, Appendix B.1: (β, γ, Ψ) per base method.
PAPER = {
    "vicreg": (1000.0, 100.0, "hypercube"),
    "swav": (1.0, 25.0, "hypersphere"),
    "simsiam": (0.001, 0.01, "hypersphere"),
}
# A method the paper does not continue takes the paper's coefficients for its space: VICReg's on
# the hypercube, SwAV's on the hypersphere.
BY_SPACE = {"hypercube": PAPER["vicreg"], "hypersphere": PAPER["swav"]}


def _paper(method: str) -> tuple[float, float, str]:
    return PAPER.get(method) or BY_SPACE[get_method_spec(method).space]


# Points on the unit cube, ž (rows: 4 samples; columns: 2 dimensions), for views a and b.
U_A = [[0.3, 0.5], [0.1, 0.7], [0.9, 0.1], [0.2, 0.3]]
U_B = [[0.25, 0.9], [0.75, 0.6], [0.5, 0.8], [0.05, 0.7]]


def _h(*spacings: float) -> float:
    """One dimension's m-spacings entropy from its scaled spacings: the mean of log(s + eps)."""
    return sum(math.log(s + EPS) for s in spacings) / len(spacings)


# View a, dim 0 sorted 0.1 0.2 0.3 0.9: spacings 0.3 − 0.1, 0.9 − 0.2, × 5/2 = 0.5, 1.75;
# dim 1 sorted 0.1 0.3 0.5 0.7: 0.4, 0.4 → 1, 1.
ENT_A = (_h(0.5, 1.75) + _h(1.0, 1.0)) / 2
# View b, dim 0 sorted 0.05 0.25 0.5 0.75: 0.45, 0.5 → 1.125, 1.25;
# dim 1 sorted 0.6 0.7 0.8 0.9: 0.2, 0.2 → 0.5, 0.5.
ENT_B = (_h(1.125, 1.25) + _h(0.5, 0.5)) / 2
# Covariance penalty Σ_{j≠k} K_jk² / d with d = 2: 2·K_01² / 2 = K_01², K with n − 1 = 3.
# View a: means 0.375, 0.4; Σ of the products of the deviations = −0.0075 − 0.0825 − 0.1575 + 0.0175 = −0.23.
COV_A = (-0.23 / 3) ** 2
# View b: means 0.3875, 0.75; Σ = −0.020625 − 0.054375 + 0.005625 + 0.016875 = −0.0525.
COV_B = (-0.0525 / 3) ** 2


def _inverse_psi(u: list[list[float]], space: str) -> torch.Tensor:
    """The embedding z with Ψ(z) = u: the logit for the sigmoid, the normal quantile for the CDF."""
    if space == "hypercube":
        rows = [[math.log(x / (1.0 - x)) for x in row] for row in u]
    else:
        rows = [[NormalDist().inv_cdf(x) for x in row] for row in u]
    return torch.tensor(rows, dtype=torch.float64)


def _shipped_e2mc_recipes():
    return [p for p in R.recipe_files() if R.load_toml(p)["criterion"]["name"] == "e2mc"]


def test_every_method_ships_an_e2mc_recipe():
    methods = sorted({R.load_toml(p)["recipe"]["method"] for p in _shipped_e2mc_recipes()})
    assert methods == sorted(method_names())
    paper = [p for p in _shipped_e2mc_recipes() if R.load_toml(p)["recipe"]["method"] in PAPER]
    assert len(paper) == 6  # ImageNet and the built-in fmnist bases


@pytest.mark.parametrize("path", _shipped_e2mc_recipes(), ids=lambda p: p.stem)
def test_recipe_loss_is_the_authors_formula(path):
    method = R.load_toml(path)["recipe"]["method"]
    beta, gamma, space = _paper(method)
    recipe = R.resolve_recipe(method, "e2mc", recipe_file=path)
    options = {k: v for k, v in recipe["criterion"].items() if k != "name"}
    method_space = get_method_spec(method).method.space
    assert method_space == space
    crit = build_criterion("e2mc", space=method_space, **options)  # as training builds it

    z_a, z_b = _inverse_psi(U_A, space), _inverse_psi(U_B, space)
    out = crit([z_a, z_b])

    authors = gamma * (COV_A + COV_B) - beta * (ENT_A + ENT_B) / 2
    assert float(out.loss) == pytest.approx(authors, rel=1e-9, abs=1e-12)
    assert out.terms["ent"] == pytest.approx((ENT_A + ENT_B) / 2, rel=1e-9)
    assert out.terms["cov"] == pytest.approx(COV_A + COV_B, rel=1e-9)


@pytest.mark.parametrize("space", ["hypercube", "hypersphere"])
def test_pseudocode_sums_the_entropy_over_the_views(space):
    # The paper's Appendix A pseudocode on the same points: the entropy summed, twice the scripts'.
    z_a, z_b = _inverse_psi(U_A, space), _inverse_psi(U_B, space)
    loss, ent, cov = pseudocode_loss(z_a, z_b, space, 1000.0, 100.0)
    assert float(ent) == pytest.approx(ENT_A + ENT_B, rel=1e-9)
    assert float(cov) == pytest.approx(COV_A + COV_B, rel=1e-9)
    assert float(loss) == pytest.approx(100.0 * (COV_A + COV_B) - 1000.0 * (ENT_A + ENT_B), rel=1e-9)
    summed = build_criterion("e2mc", space=space, beta=1000.0, gamma=100.0, view_reduction="sum")
    assert float(summed([z_a, z_b]).loss) == pytest.approx(float(loss), rel=1e-9)
