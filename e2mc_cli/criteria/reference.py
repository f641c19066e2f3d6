"""The E2MC paper's PyTorch pseudocode, transcribed literally: the reference the library is held to.

Chakraborty, LeCun, Rudner, Learned-Miller, *Improving Pre-trained Self-Supervised Embeddings
Through Effective Entropy Maximization*, AISTATS 2025 (https://arxiv.org/abs/2411.15931),
Appendix A, Algorithm 1. ``off_diagonal`` is not spelled out in the paper; it is VICReg's helper,
which the pseudocode calls. Kept deliberately unoptimised and unchanged (names, the ``type``
argument, the comments): the tests compare :class:`~e2mc_cli.criteria.E2MC` with it and
``sslboost bench criteria`` times the two side by side.
"""

from __future__ import annotations

import math

import torch

__all__ = ["e2mc_loss", "m_spacings_estimator", "max_ent_criterion", "off_diagonal", "sample_cov_estimator"]


def off_diagonal(x):
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def max_ent_criterion(x, type):
    if type == "hypercube":
        # apply the sigmoid transformation
        x_hyper = torch.sigmoid(x)
    elif type == "hypersphere":
        # apply the CDF of 0-mean, 1 variance gaussian
        x_hyper = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    ent_loss = m_spacings_estimator(x_hyper)
    cov_loss = sample_cov_estimator(x_hyper)
    return (ent_loss, cov_loss)


def m_spacings_estimator(x):
    n = x.shape[0]  # batch size
    m = round(math.sqrt(n))  # window size
    eps = 1e-7  # small constant to avoid underflow
    x, _ = torch.sort(x, dim=0)  # order statistics
    x = x[m:] - x[: n - m]  # m-spaced differences
    x = x * (n + 1) / m
    marginal_ents = torch.log(x + eps).sum(dim=0) / (n - m)
    return marginal_ents.mean()


def sample_cov_estimator(x):
    n, d = x.shape
    x = x - x.mean(dim=0)  # mean subtraction
    cov_x = (x.T @ x) / (n - 1)  # sample covariance matrix
    cov_loss = off_diagonal(cov_x).pow(2).sum().div(d)
    return cov_loss


def e2mc_loss(z_a, z_b, type, beta, gamma):
    """The criterion part of the paper's training step: ``(−beta·ent_loss + gamma·cov_loss,
    ent_loss, cov_loss)``, each summed over the two views."""
    ent_z_a, cov_z_a = max_ent_criterion(z_a, type)
    ent_z_b, cov_z_b = max_ent_criterion(z_b, type)
    ent_loss = ent_z_a + ent_z_b
    cov_loss = cov_z_a + cov_z_b
    return -beta * ent_loss + gamma * cov_loss, ent_loss, cov_loss
