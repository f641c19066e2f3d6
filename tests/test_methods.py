"""Base losses and method modules, checked against hand-derived values and direct formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from e2mc_cli.errors import UserError
from e2mc_cli.methods import (
    MethodOutput,
    SimSiam,
    SwAV,
    VICReg,
    build_method,
    build_model,
    get_method_spec,
    method_names,
    simsiam_loss,
    sinkhorn_knopp,
    swav_loss,
    vicreg_loss,
)

TINY_HEADS = {
    "vicreg": {"mlp": "32-32-32"},
    "swav": {"hidden_mlp": 32, "feat_dim": 16, "n_prototypes": 20},
    "simsiam": {"dim": 32, "pred_dim": 8},
}


def tiny(method: str, **options):
    return get_method_spec(method).method(build_model(method, "resnet-mini", TINY_HEADS[method]), **options)


def views(n_views: int, bs: int = 4, px: int = 16, n_small: int = 0, small_px: int = 8):
    big = [torch.randn(bs, 3, px, px) for _ in range(n_views)]
    return big + [torch.randn(bs, 3, small_px, small_px) for _ in range(n_small)]


# --------------------------------------------------------------------------------------------
# VICReg loss
# --------------------------------------------------------------------------------------------


def test_vicreg_loss_hand_example_3x2():
    # z_a: columns have mean 0, variance (1+0+1)/2 = 1 and 1, covariance (0+0+1)/2 = 1/2.
    #   variance hinge: relu(1 − sqrt(1 + 1e-4)) = 0;  C(z_a) = 2·(1/2)² / 2 = 1/4.
    # z_b: column 0 constant (std = sqrt(1e-4) = 0.01, hinge 0.99), column 1 = [0, 0, 3] with
    #   variance (1+1+4)/2 = 3 (hinge 0); covariance 0, so C(z_b) = 0.
    #   variance term = (0 + (0.99 + 0)/2) / 2 = 0.2475.
    # mse: differences [1,0], [0,1], [−1,−4] → (1+1+1+16)/6 = 19/6.
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    z_b = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    loss, terms = vicreg_loss(z_a, z_b)
    assert terms["invariance"].item() == pytest.approx(19 / 6, rel=1e-6)
    assert terms["variance"].item() == pytest.approx(0.2475, rel=1e-6)
    assert terms["covariance"].item() == pytest.approx(0.25, rel=1e-6)
    assert loss.item() == pytest.approx(25 * 19 / 6 + 25 * 0.2475 + 0.25, rel=1e-6)
    loss2, _ = vicreg_loss(z_a, z_b, sim_coeff=1.0, std_coeff=0.0, cov_coeff=0.0)
    assert loss2.item() == pytest.approx(19 / 6, rel=1e-6)


def _vicreg_terms_reference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """The three VICReg terms written out element by element (float64)."""
    n, d = a.shape
    inv = sum((a[i, j] - b[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def hinge(x):
        total = 0.0
        for j in range(d):
            mu = sum(x[i, j] for i in range(n)) / n
            var = sum((x[i, j] - mu) ** 2 for i in range(n)) / (n - 1)
            total += max(0.0, 1.0 - math.sqrt(var + 1e-4))
        return total / d

    def cov_pen(x):
        mu = [sum(x[i, j] for i in range(n)) / n for j in range(d)]
        total = 0.0
        for j in range(d):
            for k in range(d):
                if j != k:
                    c = sum((x[i, j] - mu[j]) * (x[i, k] - mu[k]) for i in range(n)) / (n - 1)
                    total += c * c
        return total / d

    return inv, (hinge(a) + hinge(b)) / 2, cov_pen(a) + cov_pen(b)


@pytest.mark.parametrize("n,d", [(16, 6), (5, 12)])  # n > d (d × d path) and n < d (Gram path)
def test_vicreg_terms_match_formula(n, d):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.7
    b = a + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    loss, terms = vicreg_loss(a, b, sim_coeff=2.0, std_coeff=3.0, cov_coeff=5.0)
    inv, var, cov = _vicreg_terms_reference(a.numpy(), b.numpy())
    assert terms["invariance"].item() == pytest.approx(inv, rel=1e-5)
    assert terms["variance"].item() == pytest.approx(var, rel=1e-5)
    assert terms["covariance"].item() == pytest.approx(cov, rel=1e-5)
    assert loss.item() == pytest.approx(2 * inv + 3 * var + 5 * cov, rel=1e-5)


def test_vicreg_loss_runs_in_float32_under_low_precision_inputs():
    a = torch.randn(8, 4).bfloat16().requires_grad_()
    loss, _ = vicreg_loss(a, a.detach().float() + 0.1)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(a.grad.float()).all()


# --------------------------------------------------------------------------------------------
# Sinkhorn-Knopp and the SwAV loss
# --------------------------------------------------------------------------------------------


def _sinkhorn_numpy(scores: np.ndarray, eps: float, n_iters: int) -> np.ndarray:
    """SwAV's Algorithm: Q = exp(S/ε)ᵀ / Σ, alternately rows → 1/K and columns → 1/B; codes = B·Qᵀ."""
    q = np.exp(scores.astype(np.float64) / eps).T
    k, b = q.shape
    q = q / q.sum()
    for _ in range(n_iters):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / b
    return (q * b).T


def test_sinkhorn_two_by_two_by_hand():
    # exp(S/ε) = [[a, 1], [1, a]] with a = e^{1/ε} is already balanced: every row and column of the
    # normalised matrix sums to 1/2, so each sample's code is [a, 1]/(a+1) → σ(1/ε) on its own prototype.
    eps = 0.5
    codes = sinkhorn_knopp(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), eps=eps, n_iters=3)
    s = 1 / (1 + math.exp(-1 / eps))
    torch.testing.assert_close(codes, torch.tensor([[s, 1 - s], [1 - s, s]]))


def test_sinkhorn_constant_scores_give_uniform_codes():
    codes = sinkhorn_knopp(torch.full((6, 4), 0.3))
    torch.testing.assert_close(codes, torch.full((6, 4), 0.25))


def test_sinkhorn_matches_numpy_reference_and_has_uniform_marginals():
    g = torch.Generator().manual_seed(0)
    scores = F.normalize(torch.randn(12, 5, generator=g), dim=1)
    codes = sinkhorn_knopp(scores, eps=0.05, n_iters=3)
    np.testing.assert_allclose(codes.numpy(), _sinkhorn_numpy(scores.numpy(), 0.05, 3), rtol=1e-4, atol=1e-6)
    # After the last (column) step every sample's code sums to exactly 1 …
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(12))
    # … and with enough iterations every prototype receives B/K of the mass.
    converged = sinkhorn_knopp(scores, eps=0.05, n_iters=500)
    torch.testing.assert_close(converged.sum(dim=0), torch.full((5,), 12 / 5), rtol=1e-4, atol=1e-4)


def test_sinkhorn_does_not_overflow_on_large_scores():
    codes = sinkhorn_knopp(torch.tensor([[50.0, 0.0], [0.0, 50.0]]), eps=0.05)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes, torch.eye(2))


def test_swav_loss_hand_example():
    # Both crops have scores [[1, 0], [0, 1]]. With ε = 1/2 the codes are [[s, 1−s], [1−s, s]],
    # s = σ(2) (see the 2 × 2 Sinkhorn test). With τ = 1, log softmax([1, 0]) = [1 − log(1+e), −log(1+e)],
    # so each cross term is −(s·(1 − log(1+e)) + (1−s)·(−log(1+e))) = log(1+e) − s.
    s = 1 / (1 + math.exp(-2))
    sc = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss, _ = swav_loss([sc, sc.clone()], crops_for_assign=[0, 1], temperature=1.0, epsilon=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.e) - s, rel=1e-6)


def _cross_entropy(q: np.ndarray, scores: np.ndarray, t: float) -> float:
    x = scores / t
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    return float(-(q * logp).sum(axis=1).mean())


def test_swav_loss_multicrop_average_matches_formula():
    g = torch.Generator().manual_seed(3)
    crops = [F.normalize(torch.randn(6, 4, generator=g), dim=1) for _ in range(4)]
    loss, _ = swav_loss(crops, crops_for_assign=[0, 1], temperature=0.1, epsilon=0.05, sinkhorn_iterations=3)
    np_crops = [c.numpy().astype(np.float64) for c in crops]
    expected = 0.0
    for a in (0, 1):
        q = _sinkhorn_numpy(np_crops[a], 0.05, 3)
        expected += sum(_cross_entropy(q, np_crops[v], 0.1) for v in range(4) if v != a) / 3
    assert loss.item() == pytest.approx(expected / 2, rel=1e-5)


def test_swav_loss_with_queue_uses_codes_of_the_concatenation():
    g = torch.Generator().manual_seed(4)
    crops = [F.normalize(torch.randn(3, 4, generator=g), dim=1) for _ in range(2)]
    queued = [F.normalize(torch.randn(6, 4, generator=g), dim=1) for _ in range(2)]
    loss, _ = swav_loss(crops, [0, 1], 0.1, 0.05, 3, queue_scores=queued)
    expected = 0.0
    for a, other in ((0, 1), (1, 0)):
        full = np.concatenate([queued[a].numpy(), crops[a].numpy()]).astype(np.float64)
        q = _sinkhorn_numpy(full, 0.05, 3)[-3:]
        expected += _cross_entropy(q, crops[other].numpy().astype(np.float64), 0.1)
    assert loss.item() == pytest.approx(expected / 2, rel=1e-5)
    plain, _ = swav_loss(crops, [0, 1], 0.1, 0.05, 3)
    assert plain.item() != pytest.approx(loss.item(), rel=1e-4)


def test_swav_codes_carry_no_gradient():
    a = torch.randn(4, 5, requires_grad=True)
    b = torch.randn(4, 5, requires_grad=True)
    loss, _ = swav_loss([a, b], crops_for_assign=[0])
    loss.backward()
    # Only crop 0 is assigned; its scores enter the loss only through the (no-grad) codes.
    assert a.grad is None
    assert b.grad is not None and b.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# SimSiam loss
# --------------------------------------------------------------------------------------------


def test_simsiam_loss_identical_and_orthogonal():
    x = torch.randn(5, 8)
    loss, _ = simsiam_loss(x, x, x, x)
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    e0, e1 = torch.eye(4)[:1], torch.eye(4)[1:2]
    loss, _ = simsiam_loss(e0, e0, e1, e1)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    loss, _ = simsiam_loss(e0, e0, -e0, -e0)
    assert loss.item() == pytest.approx(1.0, abs=1e-6)


def test_simsiam_stop_gradient():
    p_a, p_b = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    z_a, z_b = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    loss, _ = simsiam_loss(p_a, p_b, z_a, z_b)
    loss.backward()
    assert z_a.grad is None and z_b.grad is None
    assert p_a.grad.abs().sum() > 0 and p_b.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# Method modules
# --------------------------------------------------------------------------------------------


def test_registry_and_defaults():
    first = method_names()[:3]  # in registration order; further families follow
    assert first == ("vicreg", "swav", "simsiam")
    assert [get_method_spec(m).space for m in first] == ["hypercube", "hypersphere", "hypersphere"]
    assert [get_method_spec(m).method for m in first] == [VICReg, SwAV, SimSiam]
    v = tiny("vicreg")
    assert (v.sim_coeff, v.std_coeff, v.cov_coeff) == (25.0, 25.0, 1.0)
    s = tiny("swav")
    assert (s.temperature, s.epsilon, s.sinkhorn_iterations) == (0.1, 0.05, 3)
    assert (s.crops_for_assign, s.nmb_crops, s.queue_length, s.epoch_queue_starts) == ([0, 1], [2, 6], 0, 15)


def test_build_method_rejects_bad_input():
    model = build_model("vicreg", "resnet-mini", TINY_HEADS["vicreg"])
    with pytest.raises(UserError, match="unknown method"):
        build_method("byol", model)
    with pytest.raises(UserError, match="unknown vicreg option"):
        build_method("vicreg", model, temperature=0.1)
    with pytest.raises(UserError, match="not swav"):
        build_method("swav", model)
    assert isinstance(build_method("vicreg", model, sim_coeff=10), VICReg)


def test_vicreg_forward_exposes_projector_outputs():
    m = tiny("vicreg")
    x = views(2)
    out = m(x)
    assert isinstance(out, MethodOutput) and out.space == "hypercube"
    torch.testing.assert_close(out.embeddings[0], m.model.projector(m.model.backbone(x[0])))
    assert out.all_embeddings == out.embeddings and len(out.embeddings) == 2
    assert out.embeddings[0].shape == (4, 32) and out.embeddings[0].requires_grad
    expected, _ = vicreg_loss(out.embeddings[0], out.embeddings[1])
    torch.testing.assert_close(out.loss, expected)


def test_simsiam_embeddings_keep_their_gradients_and_predictor_group_is_fixed():
    m = tiny("simsiam")
    out = m(views(2))
    assert out.space == "hypersphere"
    z_a = out.embeddings[0]
    assert z_a.requires_grad and z_a.grad_fn is not None
    # z is returned undetached: a criterion on z sends gradients into the projector.
    (g,) = torch.autograd.grad(z_a.pow(2).sum(), m.model.projector[6].weight, retain_graph=True)
    assert g.abs().sum() > 0
    groups = m.param_groups()
    assert [gr["fix_lr"] for gr in groups] == [False, True]
    ids = [{id(p) for p in gr["params"]} for gr in groups]
    assert not ids[0] & ids[1]
    assert ids[1] == {id(p) for p in m.model.predictor.parameters()}
    assert ids[0] | ids[1] == {id(p) for p in m.parameters() if p.requires_grad}


def test_swav_forward_groups_crops_by_resolution():
    m = tiny("swav")
    calls = []
    m.model.backbone.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    m.on_step_start(0, 0)
    out = m(views(2, bs=4, px=16, n_small=6, small_px=8))
    assert calls == [(8, 3, 16, 16), (24, 3, 8, 8)]
    assert out.space == "hypersphere"
    assert len(out.embeddings) == 2 and len(out.all_embeddings) == 8
    assert out.embeddings[0] is out.all_embeddings[0]
    assert out.embeddings[0].shape == (4, 16) and out.embeddings[0].requires_grad
    norms = out.embeddings[0].norm(dim=1)
    assert not torch.allclose(norms, torch.ones_like(norms))  # before L2-normalisation
    assert torch.isfinite(out.loss)


def test_swav_rejects_wrong_number_of_crops():
    m = tiny("swav")
    with pytest.raises(ValueError, match="expects 8 views"):
        m(views(2))


def test_swav_prototypes_renormalised_each_step():
    m = tiny("swav")
    with torch.no_grad():
        m.model.prototypes.weight.mul_(torch.rand(20, 1) * 5 + 0.1)
    m.on_step_start(0, 0)
    torch.testing.assert_close(m.model.prototypes.weight.norm(dim=1), torch.ones(20))


def test_swav_frozen_prototypes_get_no_update():
    m = tiny("swav", nmb_crops=[2, 2], freeze_prototypes_niters=3)
    opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    for step in (0, 2):
        m.on_step_start(step, 0)
        before = m.model.prototypes.weight.detach().clone()
        opt.zero_grad()
        m(views(2, n_small=2)).loss.backward()
        m.on_after_backward(step)
        assert m.model.prototypes.weight.grad is None
        assert m.model.projector[0].weight.grad is not None
        opt.step()
        torch.testing.assert_close(m.model.prototypes.weight, before, rtol=0, atol=0)
    m.on_step_start(3, 0)
    opt.zero_grad()
    m(views(2, n_small=2)).loss.backward()
    m.on_after_backward(3)
    assert m.model.prototypes.weight.grad is not None and m.model.prototypes.weight.grad.abs().sum() > 0


def test_swav_queue_starts_fills_and_is_used():
    m = tiny("swav", nmb_crops=[2, 2], queue_length=9, epoch_queue_starts=1)
    m.on_step_start(0, 0)
    out = m(views(2, bs=4, n_small=2))
    assert m.queue.numel() == 0 and out.terms["queue_used"].item() == 0.0  # epoch 0 < 1
    used = []
    batches = []
    for step in range(1, 4):
        m.on_step_start(step, 1)
        out = m(views(2, bs=4, n_small=2))
        used.append(out.terms["queue_used"].item())
        batches.append([F.normalize(h.detach(), dim=1) for h in out.all_embeddings[:2]])
    # 9 rounded down to a multiple of the batch of 4 → 8 slots per assigned crop.
    assert m.queue.shape == (2, 8, 16)
    # Empty at the first step, half full at the second, full (so used) at the third.
    assert used == [0.0, 0.0, 1.0]
    for i in (0, 1):  # newest batch first, previous one behind it
        torch.testing.assert_close(m.queue[i, :4], batches[2][i])
        torch.testing.assert_close(m.queue[i, 4:], batches[1][i])

    # The queue is part of the state dict and comes back on load.
    state = m.state_dict()
    assert "queue" in state
    fresh = tiny("swav", nmb_crops=[2, 2], queue_length=9, epoch_queue_starts=1)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.queue, m.queue)


def test_swav_queue_loss_equals_functional_with_queue_scores():
    m = tiny("swav", nmb_crops=[2, 2], queue_length=8, epoch_queue_starts=0)
    m.eval()  # fixed batch-norm statistics so two forward passes agree
    for step in range(2):
        m.on_step_start(step, 0)
        m(views(2, bs=4, n_small=2))
    snapshot = m.queue.clone()
    x = views(2, bs=4, n_small=2)
    m.on_step_start(2, 0)
    out = m(x)
    z = [F.normalize(h, dim=1) for h in out.all_embeddings]
    w = m.model.prototypes.weight
    expected, _ = swav_loss(
        [zi @ w.t() for zi in z], [0, 1], queue_scores=[snapshot[i] @ w.t() for i in (0, 1)]
    )
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("method", ["vicreg", "swav", "simsiam"])
def test_one_optimiser_step_runs(method):
    m = tiny(method, **({"nmb_crops": [2, 2], "freeze_prototypes_niters": 0} if method == "swav" else {}))
    x = views(2, bs=8, n_small=2 if method == "swav" else 0)
    opt = torch.optim.SGD([{"params": g["params"]} for g in m.param_groups()], lr=0.05, momentum=0.9)
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    m.on_step_start(0, 0)
    out = m(x)
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(v) for v in out.terms.values())
    opt.zero_grad()
    out.loss.backward()
    m.on_after_backward(0)
    opt.step()
    changed = [k for k, v in m.named_parameters() if not torch.equal(v, before[k])]
    assert any(k.startswith("model.backbone.") for k in changed)
    assert any(k.startswith("model.projector.") for k in changed)
    m.on_step_start(1, 0)
    assert torch.isfinite(m(x).loss)


def test_method_rejects_model_of_another_method():
    with pytest.raises(ValueError):
        SwAV(build_model("simsiam", "resnet-mini", TINY_HEADS["simsiam"]))
    with pytest.raises(ValueError):
        SimSiam(build_model("vicreg", "resnet-mini", TINY_HEADS["vicreg"]))
