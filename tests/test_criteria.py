"""Add-on criteria: values against the papers' pseudocode (:mod:`e2mc_cli.criteria.reference`) and
hand-derived references."""

from __future__ import annotations

import math

import pytest
import torch

from e2mc_cli.criteria import (
    CRITERIA,
    CriterionOutput,
    build_criterion,
    criterion_choices,
    criterion_defaults,
)
from e2mc_cli.criteria import functional as Fn
from e2mc_cli.criteria.reference import e2mc_loss as paper_loss
from e2mc_cli.errors import UserError


def _views(n, d, k=2, dtype=torch.float32, scale=1.0, grad=True):
    return [(scale * torch.randn(n, d, dtype=dtype)).requires_grad_(grad) for _ in range(k)]


def _rel(a, b):
    return float((a.detach() - b.detach()).abs() / b.detach().abs().clamp_min(1e-30))


# --- E2MC against the paper ---------------------------------------------------------------------


@pytest.mark.parametrize("space", ["hypercube", "hypersphere"])
@pytest.mark.parametrize("n,d", [(64, 256), (256, 32)])  # n < d (Gram branch) and n >= d
def test_e2mc_matches_paper_pseudocode(space, n, d):
    beta, gamma = 1000.0, 100.0
    za, zb = _views(n, d, scale=1.5)
    ref, ref_ent, ref_cov = paper_loss(za, zb, space, beta, gamma)
    ref_grads = torch.autograd.grad(ref, [za, zb])

    crit = build_criterion("e2mc", space=space, beta=beta, gamma=gamma, view_reduction="sum")
    out = crit([za, zb])
    grads = torch.autograd.grad(out.loss, [za, zb])

    assert isinstance(out, CriterionOutput)
    assert _rel(out.loss, ref) < 1e-5
    assert out.terms["ent"] == pytest.approx(float(ref_ent.detach()), rel=1e-5)
    assert out.terms["cov"] == pytest.approx(float(ref_cov.detach()), rel=1e-5)
    for g, rg in zip(grads, ref_grads):
        assert torch.allclose(g, rg, rtol=1e-4, atol=1e-6 * float(rg.abs().max()))


def test_e2mc_float64_agrees_to_rounding():
    za, zb = _views(48, 96, dtype=torch.float64)
    ref, _, _ = paper_loss(za, zb, "hypersphere", 1.0, 25.0)
    out = build_criterion("e2mc", space="hypersphere", beta=1.0, gamma=25.0, view_reduction="sum")([za, zb])
    assert _rel(out.loss, ref) < 1e-12


def test_e2mc_rejects_unknown_space_and_reduction():
    with pytest.raises(UserError, match="hypercube"):
        build_criterion("e2mc", space="torus")
    with pytest.raises(UserError, match="view_reduction must be one of mean, sum, not 'avg'"):
        build_criterion("e2mc", view_reduction="avg")
    with pytest.raises(UserError, match="view_reduction must be one of mean, sum"):
        build_criterion("uniformity", view_reduction="max")
    with pytest.raises(UserError, match="reg_space must be one of hypersphere, projector"):
        build_criterion("vcreg", reg_space="sphere")


def test_reduce_views_hand_values():
    per_view = torch.tensor([[1.0, 4.0], [3.0, -2.0]])
    assert Fn.reduce_views(per_view, "mean").tolist() == [2.0, 1.0]
    assert Fn.reduce_views(per_view, "sum").tolist() == [4.0, 2.0]
    with pytest.raises(ValueError, match="mean, sum"):
        Fn.reduce_views(per_view, "max")


# --- functional pieces against hand-derived values ----------------------------------------------


def test_m_spacings_entropy_of_uniform_is_zero():
    x = torch.rand(4096, 8, dtype=torch.float64)
    h = Fn.m_spacings_entropy(x)
    assert h.shape == (8,)
    assert h.abs().max() < 0.05


@pytest.mark.parametrize("w", [0.5, 0.1])
def test_m_spacings_entropy_of_narrow_uniform_is_log_width(w):
    x = w * torch.rand(4096, 4, dtype=torch.float64) + 0.2
    h = Fn.m_spacings_entropy(x)
    assert (h - math.log(w)).abs().max() < 0.05


def test_unit_cube_maps_gaussian_to_uniform():
    x = torch.randn(4096, 4, dtype=torch.float64)
    u = Fn.to_unit_cube(x, "hypersphere")
    assert (Fn.m_spacings_entropy(u)).abs().max() < 0.05
    assert torch.allclose(Fn.to_unit_cube(torch.zeros(3), "hypercube"), torch.full((3,), 0.5))


def test_offdiag_cov_penalty_hand_values():
    # n ≥ d: x = [[1, 1], [−1, −1]] has K = [[2, 2], [2, 2]], Σ_{j≠k} K² = 8, / d = 4.
    assert float(Fn.offdiag_cov_penalty(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))) == pytest.approx(4.0)
    # n < d (Gram branch): K = 2·ones(3, 3), six off-diagonal entries of 4, / 3 = 8.
    x = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    assert float(Fn.offdiag_cov_penalty(x)) == pytest.approx(8.0)
    # uncorrelated columns: zero.
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert float(Fn.offdiag_cov_penalty(x)) == pytest.approx(0.0, abs=1e-7)


def test_von_neumann_entropy_of_orthonormal_rows_is_log_n():
    q, _ = torch.linalg.qr(torch.randn(32, 32, dtype=torch.float64))
    assert float(Fn.von_neumann_entropy(q[:8])) == pytest.approx(math.log(8), abs=1e-9)  # n < d
    assert float(Fn.von_neumann_entropy(3.0 * q)) == pytest.approx(math.log(32), abs=1e-9)  # n = d
    # rank one (all rows parallel): zero entropy.
    assert float(Fn.von_neumann_entropy(torch.ones(5, 7, dtype=torch.float64))) == pytest.approx(
        0.0, abs=1e-9
    )


def test_effective_rank_and_rank_variants_hand_values():
    a = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    assert float(Fn.rank_surrogate(a, "nuclear")) == pytest.approx(6.0)
    assert float(Fn.rank_surrogate(a, "tlsm")) == pytest.approx(1.0)
    assert float(Fn.rank_surrogate(a, "nuclear_l2")) == pytest.approx(6.0 / (3 * 3.0))
    assert float(Fn.rank_surrogate(a, "nuclear_fro")) == pytest.approx(36.0 / 14.0 / 3)
    assert float(Fn.effective_rank(torch.eye(6))) == pytest.approx(6.0, rel=1e-5)
    assert float(Fn.effective_rank(torch.ones(6, 4))) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="nuclear"):
        Fn.rank_surrogate(a, "bogus")


@pytest.mark.parametrize("shape", [(6, 9), (9, 6), (7, 7)])
def test_singular_values_match_lapack_svd(shape):
    a = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    weights = torch.arange(1.0, min(shape) + 1, dtype=torch.float64)
    ours = Fn.singular_values(a)
    ref = torch.linalg.svdvals(a)
    assert torch.allclose(ours, ref, rtol=1e-10)
    (g,) = torch.autograd.grad((ours * weights).sum(), a)
    (rg,) = torch.autograd.grad((ref * weights).sum(), a)
    assert torch.allclose(g, rg, rtol=1e-8, atol=1e-10)


def test_psd_logdet_cholesky_and_fallback():
    r = torch.diag(torch.tensor([2.0, 0.5, 4.0], dtype=torch.float64))
    assert float(Fn.psd_logdet(r)) == pytest.approx(math.log(4.0))
    singular = torch.zeros(3, 3, dtype=torch.float64)  # Cholesky fails; eigenvalues clamp at eps
    assert float(Fn.psd_logdet(singular, eps=1e-8)) == pytest.approx(3 * math.log(1e-8))


# --- criteria against hand values ---------------------------------------------------------------


def test_uniformity_of_antipodal_points():
    e = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    # ±e1, ±e2: 4 ordered antipodal pairs (‖·‖² = 4), 8 orthogonal pairs (‖·‖² = 2).
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    hand_x = math.log((4 * math.exp(-8) + 8 * math.exp(-4)) / 12)
    # view e: one pair at squared distance 4, log exp(−2·4) = −8 (the scale 5 is normalised away).
    summed = build_criterion("uniformity", view_reduction="sum")  # Eq. B.3: λ = 0.5, t = 2
    out = summed([e, 5.0 * e])
    assert out.terms["uniformity"] == pytest.approx(-16.0)
    assert float(out.loss) == pytest.approx(-8.0)
    averaged = build_criterion("uniformity")  # the authors' script: the mean over the views
    assert averaged.view_reduction == "mean"
    out = averaged([e, 5.0 * e])
    assert out.terms["uniformity"] == pytest.approx(-8.0)
    assert float(out.loss) == pytest.approx(-4.0)
    two = torch.cat([e[:, :2], e[:, :2]])  # rows e1, −e1, e1, −e1: of 12 ordered pairs, 4 equal, 8 antipodal
    hand_two = math.log((4 * math.exp(0) + 8 * math.exp(-8)) / 12)
    assert float(averaged([x, two]).loss) == pytest.approx(0.5 * (hand_x + hand_two) / 2, rel=1e-6)
    assert float(summed([x]).loss) == pytest.approx(0.5 * hand_x, rel=1e-6)


def _unit_rows():
    """Rows e0, −e0, e1, −e1 of a 4-d space: per-dimension variances (n − 1 = 3) 2/3, 2/3, 0, 0;
    every product of two coordinates within a row is 0, so the covariance penalty is 0."""
    eye = torch.eye(4, dtype=torch.float64)
    return torch.stack([eye[0], -eye[0], eye[1], -eye[1]])


def test_vcreg_std_target_on_the_hypersphere_is_one_over_sqrt_d():
    u = _unit_rows()
    std_used = math.sqrt(2 / 3 + 1e-4)  # dims 0, 1: above both targets
    std_empty = math.sqrt(0 + 1e-4)  # dims 2, 3: 0.01
    sphere = build_criterion("vcreg")  # the authors' default: --reg_space hypersphere
    assert sphere.reg_space == "hypersphere" and sphere.std_target(4) == pytest.approx(0.5)
    scaled = u * torch.tensor([[3.0], [0.5], [2.0], [7.0]], dtype=torch.float64)  # normalised away
    out = sphere([scaled, u])
    hinge = (0 + 0 + 2 * (0.5 - std_empty)) / 4  # target 1/√4 = 0.5
    assert out.terms["var"] == pytest.approx(hinge, rel=1e-12)
    assert out.terms["cov"] == pytest.approx(0.0, abs=1e-15)
    assert float(out.loss) == pytest.approx(0.1 * hinge, rel=1e-12)
    projector = build_criterion("vcreg", reg_space="projector")  # VICReg's own target 1, raw z
    out = projector([u, u])
    hinge = (2 * (1 - std_used) + 2 * (1 - std_empty)) / 4
    assert out.terms["var"] == pytest.approx(hinge, rel=1e-12)
    assert float(out.loss) == pytest.approx(0.1 * hinge, rel=1e-12)


def test_mmcr_nuclear_norm_hand_value():
    eye = torch.eye(4)
    # image 0: both crops along e0 (centroid e0); image 1: crops e1 and 3·e2 (centroid (e1 + e2)/2).
    v1 = torch.stack([eye[0], eye[1]])
    v2 = torch.stack([2.0 * eye[0], 3.0 * eye[2]])
    crit = build_criterion("mmcr")
    assert crit.views == "all"
    out = crit([v1, v2])
    nuc = 1.0 + 1.0 / math.sqrt(2.0)  # orthogonal rows: singular values are the row norms
    assert out.terms["nuclear_norm"] == pytest.approx(nuc, rel=1e-6)
    assert float(out.loss) == pytest.approx(-0.005 * nuc, rel=1e-6)


def test_vne_criterion_orthonormal_views():
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    out = build_criterion("vne", coef=2.0)([q[:4], q[4:8]])
    assert float(out.loss) == pytest.approx(-2.0 * math.log(4), abs=1e-9)


def _signed_basis(d):
    eye = torch.eye(d, dtype=torch.float64)
    return torch.cat([eye, -eye])  # n = 2d unit rows, mean 0, (1/n) Σ z zᵀ = I/d


def test_logdet_identity_covariance_hand_value_and_state():
    d, lam, eps = 4, 0.01, 1e-8
    z = _signed_basis(d)
    crit = build_criterion("logdet")
    crit.train()
    out = crit([z, z])
    # R = λ·I (initial state) + (1−λ)·I/d; logdet = d·log(r); loss = −(2·d·log r)/d.
    r1 = lam + (1 - lam) / d
    assert float(out.loss) == pytest.approx(-2.0 * math.log(r1 + eps), rel=1e-9)
    assert torch.allclose(crit.running_cov[0], r1 * torch.eye(d, dtype=torch.float64))
    assert torch.allclose(crit.running_mean, torch.zeros(2, d, dtype=torch.float64))
    assert not crit.running_cov.requires_grad
    out2 = crit([z, z])
    r2 = lam * r1 + (1 - lam) / d
    assert float(out2.loss) == pytest.approx(-2.0 * math.log(r2 + eps), rel=1e-9)
    # identity-covariance data without normalisation: R = I, logdet ≈ 0.
    raw = math.sqrt(d) * _signed_basis(d)
    fresh = build_criterion("logdet", normalize=False)
    assert float(fresh([raw, raw]).loss) == pytest.approx(-2.0 * math.log(1 + eps), abs=1e-12)


def test_logdet_eval_does_not_update_and_state_round_trips():
    crit = build_criterion("logdet")
    z = _views(32, 6, grad=False)
    crit.train()
    crit(z)
    state = {k: v.clone() for k, v in crit.state_dict().items()}
    crit.eval()
    a, b = crit(z).loss, crit(z).loss
    assert float(a) == float(b)
    assert torch.equal(crit.running_cov, state["running_cov"])
    other = build_criterion("logdet")
    other.load_state_dict(state)
    assert torch.equal(other.running_cov, state["running_cov"])
    other.eval()
    assert float(other(z).loss) == float(a)


def test_logdet_needs_more_samples_than_dimensions():
    with pytest.raises(UserError, match="n=8 samples for d=16"):
        build_criterion("logdet")(_views(8, 16))


def test_simmer_hand_values_and_rank_variants():
    # Rows ±e_j of a 3-d space: z̄ has nearest-neighbour distance √2 and singular values √2.
    eye = torch.eye(3, dtype=torch.float64)
    z = torch.cat([eye, -eye])
    crit = build_criterion("simmer", standardize=False)
    out = crit([z, z])
    assert out.terms["nn_entropy"] == pytest.approx(math.log(math.sqrt(2) + 1e-7))
    assert out.terms["rank"] == pytest.approx(3 * math.sqrt(2))
    assert float(out.loss) == pytest.approx(-0.1 * math.log(math.sqrt(2) + 1e-7) - 2e-4 * 3 * math.sqrt(2))
    for rank, hand in [("tlsm", math.sqrt(2)), ("nuclear_l2", 1.0), ("nuclear_fro", 1.0)]:
        out = build_criterion("simmer", standardize=False, rank=rank)([z, z])
        assert out.terms["rank"] == pytest.approx(hand)
    with pytest.raises(UserError, match="nuclear_fro"):
        build_criterion("simmer", rank="frobenius")


def test_continued_is_zero():
    out = build_criterion("continued")(_views(8, 4))
    assert float(out.loss) == 0.0 and out.terms == {}


# --- every criterion: gradients, degenerate inputs, autocast -------------------------------------


def _gradcheck_views(name):
    n, d = (12, 5)
    crit = build_criterion(name)
    crit.eval()  # logdet: no state update between gradcheck's evaluations
    k = 3 if crit.views == "all" else 2
    if name == "vcreg":  # on the raw embedding, every std below the hinge at 1 (away from its kink)
        crit = build_criterion(name, reg_space="projector")
    scale = 0.5 if name == "vcreg" else 1.0
    return crit, _views(n, d, k=k, dtype=torch.float64, scale=scale)


@pytest.mark.parametrize("name", list(CRITERIA))
def test_gradcheck_every_criterion(name):
    crit, views = _gradcheck_views(name)
    assert torch.autograd.gradcheck(lambda *v: crit(list(v)).loss, tuple(views), eps=1e-6, atol=1e-5)


def _degenerate_inputs():
    n, d = 24, 6
    const_cols = torch.randn(n, d)
    const_cols[:, :3] = 0.7
    dup_rows = torch.randn(n // 2, d).repeat(2, 1)
    collapsed = torch.full((n, d), 0.3)
    zeros = torch.zeros(n, d)
    return {
        "constant columns": const_cols,
        "duplicated rows": dup_rows,
        "collapsed": collapsed,
        "zeros": zeros,
    }


@pytest.mark.parametrize("name", list(CRITERIA))
def test_degenerate_inputs_give_finite_values_and_grads(name):
    for label, x in _degenerate_inputs().items():
        views = [x.clone().requires_grad_(), x.clone().requires_grad_()]
        crit = build_criterion(name, space="hypersphere")
        out = crit(views)
        assert torch.isfinite(out.loss), (name, label)
        assert all(math.isfinite(v) for v in out.terms.values()), (name, label)
        if out.loss.requires_grad:
            out.loss.backward()
            for v in views:
                assert v.grad is not None and torch.isfinite(v.grad).all(), (name, label)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(CRITERIA))
def test_low_precision_inputs_run_in_float32(name, dtype):
    views32 = _views(40, 8, grad=False)
    half = [v.to(dtype).requires_grad_() for v in views32]
    with torch.autocast("cpu", dtype=dtype):
        out = build_criterion(name)(half)
    assert out.loss.dtype == torch.float32
    ref = build_criterion(name)([v.detach().float() for v in half])
    assert float(out.loss.detach()) == pytest.approx(float(ref.loss.detach()), rel=1e-6, abs=1e-7)
    if out.loss.requires_grad:  # the gradient reaches the half-precision views in their dtype
        out.loss.backward()
        assert all(v.grad is not None and v.grad.dtype == dtype for v in half)


# --- registry ----------------------------------------------------------------------------------


def test_registry_names_and_views():
    assert set(CRITERIA) == {"continued", "e2mc", "vcreg", "uniformity", "mmcr", "vne", "logdet", "simmer"}
    for cls in CRITERIA.values():
        assert cls.views in ("global", "all") and cls.formula and cls.paper and cls.__doc__ and cls.over_views
    assert CRITERIA["mmcr"].views == "all"


def test_build_criterion_passes_space_only_where_taken():
    assert build_criterion("e2mc", space="hypersphere").space == "hypersphere"
    vcreg = build_criterion("vcreg", space="hypersphere")  # the method's space is not reg_space
    assert vcreg.mu == 0.1 and vcreg.reg_space == "hypersphere"
    assert build_criterion("vcreg", space="hypercube").reg_space == "hypersphere"
    assert criterion_defaults("e2mc") == {
        "space": "hypercube",
        "beta": 1.0,
        "gamma": 25.0,
        "eps": 1e-7,
        "view_reduction": "mean",
    }
    assert criterion_defaults("vcreg") == {"mu": 0.1, "nu": 0.001, "reg_space": "hypersphere"}


def test_choices_and_view_descriptions():
    assert criterion_choices("e2mc") == {"view_reduction": ("mean", "sum")}  # space is the method's
    assert criterion_choices("uniformity") == {"view_reduction": ("mean", "sum")}
    assert criterion_choices("vcreg") == {"reg_space": ("hypersphere", "projector")}
    assert criterion_choices("vne") == {}
    e2mc = CRITERIA["e2mc"]
    assert e2mc.describe_views(view_reduction="sum") == "entropy sum, covariance sum"
    assert build_criterion("e2mc").hparams()["view_reduction"] == "mean"


def test_build_criterion_errors_name_valid_choices():
    with pytest.raises(UserError, match=r"unknown criterion 'e2mcc' \(did you mean 'e2mc'\?\).*logdet"):
        build_criterion("e2mcc")
    with pytest.raises(UserError, match="has no option 'lambda'.*beta, gamma, eps, view_reduction"):
        build_criterion("e2mc", **{"lambda": 1.0})


def test_single_sample_is_a_clear_error():
    with pytest.raises(UserError, match="at least 2 samples"):
        build_criterion("e2mc")(_views(1, 4))
