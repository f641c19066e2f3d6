"""Embedding diagnostics against hand-derived answers (papers 001, 002, 003, 004)."""

from __future__ import annotations

import math

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import digamma

from e2mc_cli import diagnostics as D

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _unit(n: int, d: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1)


def _centred_orthonormal(n: int, k: int) -> torch.Tensor:
    """n × k with orthonormal columns, each orthogonal to the all-ones vector (mean zero)."""
    a = torch.randn(n, k, dtype=torch.float64)
    a = a - a.mean(dim=0)
    return torch.linalg.qr(a).Q


# ------------------------------------------------------------------------------- entropy


def _vasicek_uniform_mean(n: int) -> float:
    """E of the m-spacings estimate on U[0,1]: the m-spacing is Beta(m, n−m+1), so
    E log((n+1)/m · spacing) = log((n+1)/m) + ψ(m) − ψ(n+1)  (≈ −1/(2m), the estimator's bias)."""
    m = round(math.sqrt(n))
    return math.log((n + 1) / m) + digamma(m) - digamma(n + 1)


def test_marginal_entropy_of_uniform_is_about_zero():
    n, d = 4096, 64
    h = D.marginal_entropy(torch.rand(n, d, dtype=torch.float64), space=None)
    assert h.shape == (d,)
    expected = _vasicek_uniform_mean(n)  # −0.0077
    assert abs(float(h.mean()) - expected) < 0.003
    assert abs(float(h.mean())) < 0.02


@pytest.mark.parametrize("space", ["hypercube", "hypersphere"])
def test_squashing_makes_the_matching_distribution_uniform(space):
    n, d = 4096, 32
    if space == "hypersphere":  # Φ(N(0,1)) ~ U[0,1]
        z = torch.randn(n, d, dtype=torch.float64)
    else:  # sigmoid(Logistic(0,1)) ~ U[0,1]
        u = torch.rand(n, d, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        z = torch.log(u / (1 - u))
    h = D.marginal_entropy(z, space)
    assert abs(float(h.mean()) - _vasicek_uniform_mean(n)) < 0.003


def test_entropy_of_a_narrow_interval_is_log_width_and_worst_dimension_found():
    n, w = 4096, 0.1
    x = torch.rand(n, 4, dtype=torch.float64)
    x[:, 2] *= w  # U[0, w]: H = log w
    st = D.embedding_stats(torch.logit(x.clamp(1e-9, 1 - 1e-9)), "hypercube", k=5)
    assert st["entropy_worst_dim"] == 2
    assert abs(st["entropy_worst"] - (math.log(w) + _vasicek_uniform_mean(n))) < 0.01
    assert st["entropy_mean"] == pytest.approx(math.log(w) / 4 + _vasicek_uniform_mean(n), abs=0.01)


# ---------------------------------------------------------------------------- rank & VNE


def test_effective_rank_isotropic_vs_rank_k():
    n, d, k = 4096, 32, 5
    iso = D.embedding_stats(torch.randn(n, d), "hypersphere", k=1)
    # σ_i of an n × d Gaussian matrix lie in √n ± √d (±9 % here): the entropy loses < 1 %.
    assert 0.98 * d < iso["eff_rank"] <= d
    basis = torch.linalg.qr(torch.randn(d, k, dtype=torch.float64)).Q.T  # k orthonormal rows
    low = D.embedding_stats(torch.randn(n, k, dtype=torch.float64) @ basis, "hypersphere", k=1)
    assert 0.98 * k < low["eff_rank"] <= k + 1e-6


@pytest.mark.parametrize(("n", "d"), [(40, 6), (6, 40)])
def test_singular_spectrum_and_effective_rank_exact(n, d):
    s = torch.tensor([4.0, 2.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    u = torch.linalg.qr(torch.randn(n, 6, dtype=torch.float64)).Q  # orthonormal columns
    v = torch.linalg.qr(torch.randn(d, 6, dtype=torch.float64)).Q
    z = (u * s) @ v.T  # n × d with singular values s, then zeros
    spectrum = D.singular_spectrum(z)
    assert spectrum.shape == (min(n, d),)
    np.testing.assert_allclose(spectrum[:4].numpy(), [4, 2, 1, 1], atol=1e-7)
    assert float(spectrum[4:].max()) < 1e-6
    # p = (1/2, 1/4, 1/8, 1/8): H = ½log2 + ¼log4 + 2·⅛log8 = 1.75 log 2 → erank = 2^1.75
    assert D.effective_rank(z) == pytest.approx(2**1.75, rel=1e-6)
    assert D.effective_rank_of(torch.ones(7, dtype=torch.float64)) == pytest.approx(7)


def test_von_neumann_entropy_of_orthonormal_rows_is_log_d():
    d = 16
    st = D.embedding_stats(torch.eye(d, dtype=torch.float64) * 3.0, "hypercube", k=1)
    assert st["vne"] == pytest.approx(math.log(d), abs=1e-9)  # ρ = I/d exactly
    iso = D.embedding_stats(torch.randn(8192, d), "hypercube", k=1)
    assert iso["vne"] == pytest.approx(math.log(d), abs=0.01)


# ------------------------------------------------------------------- correlation, log-det


def test_mean_abs_offdiag_corr_exact():
    a, b = _centred_orthonormal(50, 2).T
    x = torch.stack([a, a, -a, b, torch.full_like(a, 3.0)], dim=1)  # last column constant: ignored
    # |corr| over the 4 varying columns: pairs (a,a)=1, (a,−a)=1 twice, every pair with b = 0
    # → Σ_{j≠k} |C_jk| = 2·3 = 6 over d(d−1) = 12 entries.
    assert D.mean_abs_offdiag_corr(x) == pytest.approx(0.5, abs=1e-12)
    assert D.mean_abs_offdiag_corr(x, chunk=1) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(("n", "d", "k"), [(40, 6, 6), (4, 6, 3)])
def test_logdet_per_dim_exact(n, d, k):
    """x = √(n−1)·Q·diag(√a) with Q centred-orthonormal has sample covariance diag(a, 0…);
    log det(K + rI) = Σ log(a + r) + (d − k) log r. The second case (n < d) uses the Gram path."""
    a = torch.linspace(0.5, 2.0, k, dtype=torch.float64)
    x = torch.zeros(n, d, dtype=torch.float64)
    x[:, :k] = math.sqrt(n - 1) * _centred_orthonormal(n, k) * a.sqrt()
    r = 1e-3
    expected = (float(torch.log(a + r).sum()) + (d - k) * math.log(r)) / d
    assert D.logdet_per_dim(x, ridge=r) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------- centre vector (Jha et al., arXiv 2402.14957)


def test_stability_stats_hand_cases():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    same = torch.stack([e1, e1, e1]) * torch.tensor([[1.0], [2.0], [5.0]])  # norms do not matter
    st = D.stability_stats(same, same)
    assert (st["aug_mean_sq"], st["centre_sq"], st["residual_sq"]) == pytest.approx((1, 1, 0))
    orth = torch.stack([e1, e2])
    st = D.stability_stats(orth, orth)  # G = I
    assert (st["aug_mean_sq"], st["centre_sq"], st["residual_sq"]) == pytest.approx((1, 0, 1))
    # ±e1 twice: off-diagonal sum = (Σu)·(Σu) − Σ diag = 0 − 4 over 12 pairs: unbiased, so −1/3.
    pm = torch.stack([e1, e1, -e1, -e1])
    assert D.stability_stats(pm, pm)["centre_sq"] == pytest.approx(-1 / 3)
    # views that disagree: u_b = −u_a ⇒ diag G = −1
    assert D.stability_stats(orth, -orth)["aug_mean_sq"] == pytest.approx(-1)


def test_centre_sq_collapsed_vs_random():
    n, d = 512, 64
    common = F.normalize(torch.randn(d, dtype=torch.float64), dim=0)
    collapsed_a = common + 1e-3 * torch.randn(n, d, dtype=torch.float64)
    collapsed_b = common + 1e-3 * torch.randn(n, d, dtype=torch.float64)
    st = D.stability_stats(collapsed_a, collapsed_b)
    assert st["centre_sq"] > 0.99 and abs(st["residual_sq"]) < 0.01
    # independent random directions: E ‖s‖² = 0, sd of the estimate ≈ √(2/(n²d)) ≈ 3e-4
    # second view = first + N(0, 0.1²) per coordinate: ‖noise‖² ≈ 0.01·d, so cos ≈ 1/√(1 + 0.01·d)
    u = _unit(n, d)
    st = D.stability_stats(u, u + 0.1 * torch.randn_like(u))
    assert abs(st["centre_sq"]) < 0.005
    assert st["aug_mean_sq"] == pytest.approx(1 / math.sqrt(1 + 0.01 * d), abs=0.01)
    assert st["residual_sq"] == pytest.approx(st["aug_mean_sq"], abs=0.005)


# ------------------------------------ neighbour overlap (the E2MC paper, arXiv 2411.15931, Fig. 3)


def test_ordinal():
    assert [D.ordinal(k) for k in (1, 2, 3, 4, 11, 12, 13, 21, 22, 100, 101, 111)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "100th",
        "101st",
        "111th",
    ]


def test_histogram_overlap_exact():
    a = np.array([0.1, 0.2, 0.9])
    b = np.array([0.1, 0.8, 0.9])  # 2 bins on [0.1, 0.9]: p = (2/3, 1/3), q = (1/3, 2/3)
    assert D.histogram_overlap(a, b, bins=2) == pytest.approx(2 / 3)
    assert D.histogram_overlap(a, a) == pytest.approx(1.0)
    assert D.histogram_overlap(np.zeros(5), np.ones(5)) == 0.0


def test_neighbour_distances_on_the_square():
    # four unit vectors 90° apart: 1st and 2nd neighbours at √2, 3rd (opposite) at 2; scale-free
    angles = torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=torch.float64) * math.pi
    z = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * torch.tensor(
        [[1.0], [3.0], [0.5], [2.0]]
    )
    dist = D.neighbour_distances(z, ks=(1, 2, 3), chunk=3)
    np.testing.assert_allclose(dist[1], math.sqrt(2))
    np.testing.assert_allclose(dist[2], math.sqrt(2))
    np.testing.assert_allclose(dist[3], 2.0)
    with pytest.raises(ValueError):
        D.neighbour_distances(z, ks=(4,))


def test_neighbour_overlap_clustered_exceeds_uniform():
    """Fig. 3 of the E2MC paper: the lower-entropy embedding has the larger overlap. Uniform points on S²
    have one density everywhere, so the 1st-neighbour distances (≈ 0.04) and the 100th (≈ 0.45)
    are both narrow and apart; clusters of spreads 0.01 … 0.3 make the 100th neighbour inside a
    tight cluster nearer than the 1st neighbour inside a loose one."""
    d = 3
    uniform = _unit(2000, d)
    centres = _unit(10, d)
    spreads = torch.logspace(-2, -0.5, 10, dtype=torch.float64)
    clustered = (
        centres[:, None] + spreads[:, None, None] * torch.randn(10, 200, d, dtype=torch.float64)
    ).reshape(-1, d)
    s_uni = D.neighbour_separability(uniform)
    s_clu = D.neighbour_separability(clustered)
    assert s_uni["k"] == s_clu["k"] == 100
    assert s_uni["overlap"] < 0.05
    assert s_clu["overlap"] > 0.2
    assert s_uni["d1_mean"] < s_uni["dk_mean"]


# ----------------------------------------------------------------------------- figures


def _check_png(path, width: int, height: int) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.shape[:2] == (height, width)


def test_figures_are_valid_pngs(tmp_path):
    n, d = 300, 8
    labels = np.arange(n) % 3
    stats = {
        name: D.embedding_stats(torch.randn(n, d) * s, "hypersphere", k=20)
        for name, s in (("A", 1.0), ("B", 0.3))
    }
    D.plot_neighbour_histograms(
        [(m, [("backbone", st), ("projector", st)]) for m, st in stats.items()], tmp_path / "nn.png"
    )
    _check_png(tmp_path / "nn.png", width=2 * 420, height=2 * 300)
    zs = {m: D.squash(torch.randn(n, d), "hypersphere").numpy() for m in stats}
    D.plot_pair_scatter(list(zs.items()), labels, [(0, 1), (2, 3), (4, 5)], tmp_path / "scatter.png")
    _check_png(tmp_path / "scatter.png", width=3 * 300, height=2 * 300)
    D.plot_spectra([("projector", [(m, st["_spectrum"]) for m, st in stats.items()])], tmp_path / "sv.png")
    _check_png(tmp_path / "sv.png", width=450, height=320)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nn.png", "scatter.png", "sv.png"]  # no temp files
