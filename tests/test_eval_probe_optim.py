"""The linear probes' optimisers: SimSiam's LARC over every parameter, the others plain SGD.

SimSiam's ``main_lincls.py --lars`` wraps the SGD of ``[fc.weight, fc.bias]`` in apex's
``LARC(trust_coefficient=0.001, clip=False)``: before the SGD step each gradient ``g`` of a tensor
``w`` with ``‖w‖ > 0`` and ``‖g‖ > 0`` becomes ``(g + wd·w) · η‖w‖ / (‖g‖ + wd‖w‖ + ε)``, the bias
included; a tensor of norm 0 keeps its gradient. The expected values below are those formulas
worked by hand on small tensors with round norms.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from e2mc_cli.evaluate import linear as L
from e2mc_cli.evaluate.protocols import default_config, resolve_config
from e2mc_cli.training.optim import LARC

ETA, EPS = 0.001, 1e-8
W = [[3.0, 0.0, 4.0], [0.0, 0.0, 0.0]]  # ‖w‖ = 5
GW = [[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]  # ‖g_w‖ = 3
GB = [0.0, 0.5]  # ‖g_b‖ = 0.5


def _head(bias) -> nn.Linear:
    head = nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(W))
        head.bias.copy_(torch.tensor(bias))
    head.weight.grad, head.bias.grad = torch.tensor(GW), torch.tensor(GB)
    return head


def test_simsiam_probe_is_one_larc_group_of_weight_and_bias():
    head = nn.Linear(3, 2)
    for labels, lr in (("1%", 2.0), ("10%", 0.2 * 2048 / 256), ("100%", 0.1 * 2048 / 256)):
        opt = L.make_optimizer(head.parameters(), default_config("linear", "simsiam", labels))
        assert isinstance(opt, LARC) and isinstance(opt.optim, torch.optim.SGD)
        assert (opt.trust_coefficient, opt.clip) == (ETA, False)
        (group,) = opt.param_groups
        assert [p is q for p, q in zip(group["params"], (head.weight, head.bias))] == [True, True]
        assert group["lr"] == pytest.approx(lr) and group["momentum"] == 0.9 and group["weight_decay"] == 0.0


@pytest.mark.parametrize("method", ["vicreg", "swav"])
def test_other_probes_are_plain_sgd(method):
    opt = L.make_optimizer(nn.Linear(3, 2).parameters(), default_config("linear", method, "1%"))
    assert type(opt) is torch.optim.SGD


def test_larc_rescales_the_bias_by_its_trust_ratio():
    # ‖b‖ = 1, ‖g_b‖ = 0.5: the bias steps by lr · (0.001 · 1 / 0.5) · g_b = 2 · 0.002 · g_b,
    # where VICReg's LARS (1-d tensors left alone) would step by lr · g_b, 500 times as far.
    cfg = default_config("linear", "simsiam", "1%")  # lr 2.0 at batch 256, no weight decay
    head = _head([0.6, 0.8])
    opt = L.make_optimizer(head.parameters(), cfg)
    opt.step()
    lr = 2.0
    w_ratio = ETA * 5.0 / (3.0 + EPS)
    b_ratio = ETA * 1.0 / (0.5 + EPS)
    expected_w = torch.tensor(W) - lr * w_ratio * torch.tensor(GW)
    expected_b = torch.tensor([0.6, 0.8]) - lr * b_ratio * torch.tensor(GB)
    torch.testing.assert_close(head.weight.detach(), expected_w)
    torch.testing.assert_close(head.bias.detach(), expected_b)
    assert head.bias[1].item() == pytest.approx(0.8 - 0.002)


def test_larc_folds_weight_decay_into_the_ratio():
    # wd = 0.1: d = g + 0.1·w, ratio η‖w‖ / (‖g‖ + 0.1‖w‖) = 0.001 · 5 / 3.5 for the weight and
    # 0.001 · 1 / (0.5 + 0.1) for the bias; the wrapped SGD then steps without its own decay.
    cfg = resolve_config("linear", "simsiam", "1%", wd=0.1)
    head = _head([0.6, 0.8])
    opt = L.make_optimizer(head.parameters(), cfg)
    opt.step()
    w, b = torch.tensor(W), torch.tensor([0.6, 0.8])
    expected_w = w - 2.0 * (ETA * 5.0 / (3.0 + 0.5 + EPS)) * (torch.tensor(GW) + 0.1 * w)
    expected_b = b - 2.0 * (ETA * 1.0 / (0.5 + 0.1 + EPS)) * (torch.tensor(GB) + 0.1 * b)
    torch.testing.assert_close(head.weight.detach(), expected_w)
    torch.testing.assert_close(head.bias.detach(), expected_b)
    assert opt.param_groups[0]["weight_decay"] == 0.1  # given back after the step


def test_a_zero_bias_keeps_its_gradient_as_in_apex():
    # The classifier's bias starts at 0: ‖b‖ = 0, so apex's LARC leaves its gradient as it is and
    # the first step is plain SGD, b = −lr · g_b; from then on it is rescaled like the weight.
    cfg = default_config("linear", "simsiam", "1%")
    head = _head([0.0, 0.0])
    opt = L.make_optimizer(head.parameters(), cfg)
    opt.step()
    torch.testing.assert_close(head.bias.detach(), -2.0 * torch.tensor(GB))
    # second step, momentum 0.9: μ = 0.9 · g_b + ratio · g_b with ratio = η‖b‖ / ‖g_b‖ = 0.001 · 1 / 0.5
    head.bias.grad = torch.tensor(GB)
    head.weight.grad = torch.zeros(2, 3)  # ‖g‖ = 0: the weight's gradient stays 0
    before = head.bias.detach().clone()
    opt.step()
    ratio = ETA * before.norm().item() / (0.5 + EPS)
    expected = before - 2.0 * (0.9 * torch.tensor(GB) + ratio * torch.tensor(GB))
    torch.testing.assert_close(head.bias.detach(), expected)
