"""Optimisers, schedule, deterministic data order and global batch norm, against hand-derived values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from e2mc_cli.data.pipeline import SeededViews, collate_views
from e2mc_cli.training.data import EpochBatches
from e2mc_cli.training.optim import LARC, LARS, apply_lr, build_optimizer, lr_factor
from e2mc_cli.training.syncbn import GlobalBatchNorm, convert_sync_batchnorm


def _params():
    w = nn.Parameter(torch.tensor([3.0, 4.0]).reshape(1, 2))  # ‖w‖ = 5, 2-d: adapted
    b = nn.Parameter(torch.tensor([1.0]))  # 1-d: excluded by exclude_bias_and_norm
    w.grad = torch.tensor([[0.3, 0.4]])  # ‖g‖ = 0.5
    b.grad = torch.tensor([0.5])
    return w, b


def test_lars_matches_the_vicreg_update_by_hand():
    w, b = _params()
    opt = LARS([w, b], lr=2.0, weight_decay=0.1, momentum=0.9, eta=0.001)
    opt.step()
    # d = g + 0.1 w = (0.6, 0.8), ‖d‖ = 1, q = 0.001·5/1 = 0.005, μ = q·d = (0.003, 0.004)
    assert torch.allclose(w.detach(), torch.tensor([[3 - 2 * 0.003, 4 - 2 * 0.004]]))
    # bias: no decay, no adaptation: μ = 0.5, b = 1 − 2·0.5
    assert torch.allclose(b.detach(), torch.tensor([0.0]))
    b.grad = torch.tensor([0.5])
    w.grad = None
    opt.step()  # μ = 0.9·0.5 + 0.5 = 0.95
    assert torch.allclose(b.detach(), torch.tensor([-1.9]))


@pytest.mark.parametrize("clip, factor", [(False, 0.005), (True, 0.0025)])
def test_larc_matches_apex_scaling_by_hand(clip, factor):
    w, b = _params()
    sgd = torch.optim.SGD([w], lr=2.0, momentum=0.9, weight_decay=0.1)
    opt = LARC(sgd, trust_coefficient=0.001, clip=clip)
    opt.step()
    # adaptive = 0.001·5 / (0.5 + 5·0.1) = 0.005 (clip: min(0.005/lr, 1) = 0.0025);
    # g' = (g + 0.1 w)·adaptive = (0.6, 0.8)·adaptive, and SGD steps with its weight decay off
    expected = torch.tensor([[3.0, 4.0]]) - 2.0 * factor * torch.tensor([[0.6, 0.8]])
    assert torch.allclose(w.detach(), expected)
    assert sgd.param_groups[0]["weight_decay"] == 0.1  # handed back after the step
    assert opt.state_dict()["param_groups"][0]["weight_decay"] == 0.1


def test_larc_leaves_zero_norm_tensors_to_plain_sgd():
    w = nn.Parameter(torch.zeros(2))
    w.grad = torch.tensor([1.0, 0.0])
    LARC(torch.optim.SGD([w], lr=0.5, weight_decay=0.1), trust_coefficient=0.001).step()
    assert torch.allclose(w.detach(), torch.tensor([-0.5, 0.0]))  # no rescaling, no decay


def test_schedule_warmup_cosine_and_constant():
    assert lr_factor(0, 100, 10, "cosine") == 0.0
    assert lr_factor(5, 100, 10, "cosine") == 0.5
    assert lr_factor(10, 100, 10, "cosine") == 1.0
    assert lr_factor(55, 100, 10, "cosine", final_ratio=0.001) == pytest.approx(0.5 + 0.001 * 0.5)
    assert lr_factor(100, 100, 10, "cosine", final_ratio=0.001) == pytest.approx(0.001)
    assert lr_factor(77, 100, 0, "constant") == 1.0


def test_fixed_lr_group_and_batch_scaling():
    lin, pred = nn.Linear(2, 2), nn.Linear(2, 2)
    groups = [
        {"name": "encoder", "params": list(lin.parameters()), "fix_lr": False},
        {"name": "predictor", "params": list(pred.parameters()), "fix_lr": True},
    ]
    cfg = {"name": "sgd", "lr": 0.001, "predictor_lr": 0.05, "lr_batch_scaling": True, "weight_decay": 1e-4}
    opt = build_optimizer(groups, cfg, batch_size=512)  # × 512/256
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.002), pytest.approx(0.1)]
    apply_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.001), pytest.approx(0.1)]
    assert isinstance(build_optimizer(groups, {**cfg, "name": "sgd-larc"}, 256), LARC)
    assert isinstance(build_optimizer(groups, {**cfg, "name": "lars"}, 256), LARS)


def test_epoch_batches_split_each_global_batch_contiguously():
    single = list(EpochBatches(10, 4, seed=3, epoch=1))
    assert len(single) == 2  # 10 // 4, the last incomplete batch dropped
    ranks = [list(EpochBatches(10, 4, seed=3, epoch=1, rank=r, world_size=2)) for r in range(2)]
    for step in range(2):
        assert ranks[0][step] + ranks[1][step] == single[step]
    assert list(EpochBatches(10, 4, seed=3, epoch=1, start=1)) == single[1:]
    assert list(EpochBatches(10, 4, seed=3, epoch=2)) != single  # a new order each epoch
    flat = [i for batch in single for _, i in batch]
    assert len(set(flat)) == 8 and all(e == 1 for batch in single for e, _ in batch)


class _Noise:
    """A 'transform' whose output is pure torch randomness."""

    def __call__(self, image):
        return [torch.rand(2), torch.rand(2)]


def test_seeded_views_depend_only_on_seed_epoch_and_index():
    data = [(None, 0)] * 5
    ds = SeededViews(data, _Noise(), seed=1)
    a = ds[(0, 3)]
    torch.rand(100)  # the global generator moves on…
    b = ds[(0, 3)]
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0]))  # …the item does not
    assert not torch.equal(ds[(1, 3)][0][0], a[0][0])
    batch = collate_views([ds[(0, 1)], ds[(0, 2)]])
    assert batch.views[0].shape == (2, 2) and batch.indices.tolist() == [1, 2] and batch.failed == []


def test_unreadable_item_is_replaced_and_reported():
    class Flaky:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i == 1:
                raise OSError("truncated")
            return None, 0

    item = SeededViews(Flaky(), _Noise(), seed=0)[(0, 1)]
    assert item[1] == 1 and item[2] == 1


def test_global_batchnorm_is_batchnorm_without_a_process_group():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3), nn.BatchNorm1d(3)
    )
    ref = convert_sync_batchnorm(nn.Sequential(*[m for m in net]), "cpu")
    assert isinstance(ref[1], GlobalBatchNorm) and isinstance(ref[4], GlobalBatchNorm)
    assert set(ref.state_dict()) == set(net.state_dict())
    x = torch.randn(5, 3, 6, 6)
    assert torch.equal(ref(x), net(x))
    assert math.isclose(float(ref[1].num_batches_tracked), 2.0)  # shared buffers: both forwards counted


# -- the multi-tensor LARS and LARC against per-tensor references of the official formulas ---------


@torch.no_grad()
def _reference_lars_step(params, state, lr, wd, momentum, eta):
    """VICReg's ``main_vicreg.py`` LARS, one tensor at a time: 1-d tensors get neither the weight
    decay nor the trust ratio (``exclude_bias_and_norm`` as both filters)."""
    for p in params:
        if p.grad is None:
            continue
        dp = p.grad
        if p.ndim != 1:
            dp = dp.add(p, alpha=wd)
            param_norm, update_norm = torch.norm(p), torch.norm(dp)
            one = torch.ones_like(param_norm)
            ratio = torch.where(update_norm > 0, eta * param_norm / update_norm, one)
            q = torch.where(param_norm > 0.0, ratio, one)
            dp = dp.mul(q)
        mu = state.setdefault(p, torch.zeros_like(p))
        mu.mul_(momentum).add_(dp)
        p.add_(mu, alpha=-lr)


@torch.no_grad()
def _reference_larc_rescale(params, lr, wd, trust, clip, eps=1e-8):
    """Apex's ``LARC.step`` before the wrapped step: the norms compared on the host, per tensor."""
    for p in params:
        if p.grad is None:
            continue
        param_norm, grad_norm = torch.norm(p), torch.norm(p.grad)
        if param_norm != 0 and grad_norm != 0:
            adaptive_lr = trust * param_norm / (grad_norm + param_norm * wd + eps)
            if clip:
                adaptive_lr = min(adaptive_lr / lr, 1)
            p.grad += wd * p
            p.grad *= adaptive_lr


def _tiny_params(seed: int) -> list[torch.Tensor]:
    """Tensors of every kind a model has: conv and linear weights, biases and norm weights (1-d),
    an all-zero weight (‖w‖ = 0), a float64 weight (its own dtype group), one without gradient."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3, 3, 3), (5, 4), (5,), (4,), (2, 2), (3, 3), (6,)]
    params = [torch.randn(s, generator=g) for s in shapes]
    params[4] = torch.zeros(2, 2)
    params[5] = params[5].double()
    return [nn.Parameter(p) for p in params]


def _grads(params, step: int) -> None:
    g = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        p.grad = None if i == 6 else torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.1 + i)
    params[3].grad.zero_()  # ‖g‖ = 0 for one tensor


def _copies(params):
    return [nn.Parameter(p.detach().clone()) for p in params]


def test_multi_tensor_lars_equals_the_per_tensor_vicreg_lars():
    ours = _tiny_params(0)
    ref = _copies(ours)
    opt = LARS([{"params": ours[:4]}, {"params": ours[4:], "lr": 0.3}], lr=0.7, weight_decay=1e-3, eta=0.02)
    state_a, state_b = {}, {}
    for step in range(6):
        _grads(ours, step)
        _grads(ref, step)
        opt.step()
        _reference_lars_step(ref[:4], state_a, lr=0.7, wd=1e-3, momentum=0.9, eta=0.02)
        _reference_lars_step(ref[4:], state_b, lr=0.3, wd=1e-3, momentum=0.9, eta=0.02)
    moved = 0.0
    for a, b, start in zip(ours, ref, _tiny_params(0), strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-6)
        moved = max(moved, float((a.detach() - start.detach()).abs().max()))
    assert moved > 1e-2  # the steps moved the weights far beyond the tolerance
    assert torch.equal(ours[6].detach(), _tiny_params(0)[6].detach())  # no gradient: untouched
    assert set(opt.state_dict()["state"][0]) == {"mu"}  # the momentum buffer a saved state holds


@pytest.mark.parametrize("clip", [False, True])
def test_multi_tensor_larc_equals_the_per_tensor_apex_larc(clip):
    ours = _tiny_params(1)
    ref = _copies(ours)
    groups = lambda ps: [{"params": ps[:4]}, {"params": ps[4:], "lr": 0.05}]  # noqa: E731
    opt = LARC(torch.optim.SGD(groups(ours), lr=0.2, momentum=0.9, weight_decay=1e-2), 0.01, clip=clip)
    sgd = torch.optim.SGD(groups(ref), lr=0.2, momentum=0.9, weight_decay=1e-2)
    for step in range(6):
        _grads(ours, step)
        _grads(ref, step)
        opt.step()
        for group in sgd.param_groups:
            _reference_larc_rescale(group["params"], group["lr"], 1e-2, 0.01, clip)
            group["weight_decay"] = 0.0
        sgd.step()
        for group in sgd.param_groups:
            group["weight_decay"] = 1e-2
    moved = 0.0
    for a, b, start in zip(ours, ref, _tiny_params(1), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-6)
        moved = max(moved, float((a.detach() - start.detach()).abs().max()))
    assert moved > 1e-3
