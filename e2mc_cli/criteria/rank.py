"""Spectral criteria: MMCR's nuclear norm, von Neumann entropy and SimMER's entropy and rank."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from e2mc_cli.criteria import functional as Fn
from e2mc_cli.criteria.base import Criterion

__all__ = ["MMCR", "VonNeumannEntropy", "SimMER"]


class MMCR(Criterion):
    """MMCR: maximum manifold capacity (Yerxa et al., NeurIPS 2023, https://arxiv.org/abs/2303.03307)
    as an add-on.

    ``C = (1/V) Σ_v normalize(z_v)`` is each image's centroid over all V crops (every crop, so
    ``views = "all"``), and ``loss = −λ‖C‖_*`` with the nuclear norm ``‖C‖_* = Σ σ_i(C)``;
    λ = 0.005 as in the SwAV ablation (V = 8) of E2MC (Chakraborty et al., AISTATS 2025,
    https://arxiv.org/abs/2411.15931), App. B.1.2, Eq. B.5.
    """

    views: ClassVar[str] = "all"
    display_name: ClassVar[str] = "MMCR (maximum manifold capacity representations)"
    formula: ClassVar[str] = "−λ·‖C‖_*,  C = mean_v z_v/‖z_v‖ (all crops)"
    paper: ClassVar[str] = "mmcr"
    where: ClassVar[str] = "as in E2MC App. B.1.2, Eq. B.5"
    over_views: ClassVar[str] = "centroid of all crops"
    weights: ClassVar[tuple[str, ...]] = ("lam",)

    def __init__(self, lam: float = 0.005, normalize: bool = True) -> None:
        super().__init__()
        self.lam, self.normalize = float(lam), bool(normalize)
        self._hparams = {"lam": self.lam, "normalize": self.normalize}

    def compute(self, views):
        z = torch.stack(views)
        if self.normalize:
            z = F.normalize(z, dim=-1)
        nuc = Fn.nuclear_norm(z.mean(dim=0))
        return -self.lam * nuc, {"nuclear_norm": nuc}


class VonNeumannEntropy(Criterion):
    """Von Neumann entropy maximisation (*Formulating a Non-contrastive Loss as a Difference of
    Entropies Using a Von Neumann Entropy Bound*, ICLR 2022 submission; Eq. 1 and Algorithm 1).

    ``u = normalize(z)``, ``ρ = uᵀu / n`` (trace 1), ``S = −Σ λ log λ`` over ρ's eigenvalues
    (computed from the n × n Gram matrix when n < d); ``loss = −coef · mean_v S(z_v)``.
    ``S ≤ log min(n, d)``. coef = 1 is the paper's weight of the entropy term.
    """

    display_name: ClassVar[str] = "von Neumann entropy"
    formula: ClassVar[str] = "−coef·mean_v S(ρ_v),  S = −Σλ log λ,  ρ = uᵀu/n"
    paper: ClassVar[str] = "vne"
    where: ClassVar[str] = "Eq. 1, Algorithm 1"
    over_views: ClassVar[str] = "mean"
    weights: ClassVar[tuple[str, ...]] = ("coef",)

    def __init__(self, coef: float = 1.0) -> None:
        super().__init__()
        self.coef = float(coef)
        self._hparams = {"coef": self.coef}

    def compute(self, views):
        s = torch.stack([Fn.von_neumann_entropy(z) for z in views]).mean()
        return -self.coef * s, {"vne": s}


class SimMER(Criterion):
    """SimMER's entropy and rank maximisation on the view-averaged embedding (SimMER, ICLR 2022
    submission, https://openreview.net/forum?id=77_zstKV8HQ; Eq. 5, 8–15).

    ``z̄ = mean_v z_v``, standardised per dimension first (the paper's heads end in a BatchNorm
    without affine; the criterion is otherwise unbounded in scale). Entropy:
    ``L_H = −mean_b log(min_{i≠b} ‖z̄_b − z̄_i‖ + eps)``; rank: ``L_R = −R(z̄)`` with ``rank=``
    ``"nuclear"`` (``‖z̄‖_*``, L_R2, the paper's default), ``"tlsm"`` (``σ_min(n,d)``, L_R1),
    ``"nuclear_l2"`` (``‖z̄‖_*/(r‖z̄‖₂)``, L_R3) or ``"nuclear_fro"`` (``(‖z̄‖_*/‖z̄‖_F)²/r``, L_R4),
    ``r = min(n, d)``. ``loss = α_H·L_H + α_R·L_R`` with α_H = 0.1, α_R = 2e-4 (the paper used
    α_R = 2e-3 for L_R1, L_R3, L_R4, Table 5). ``bias=True`` appends a column of ones (Sec. 2.3).
    """

    display_name: ClassVar[str] = "SimMER (nearest-neighbour entropy and rank)"
    formula: ClassVar[str] = "−α_H·mean_b log min_{i≠b}‖z̄_b − z̄_i‖ − α_R·‖z̄‖_*,  z̄ = mean_v z_v"
    paper: ClassVar[str] = "simmer"
    where: ClassVar[str] = "Eq. 5, 8–15"
    over_views: ClassVar[str] = "on the view-averaged embedding"
    weights: ClassVar[tuple[str, ...]] = ("alpha_h", "alpha_r")
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"rank": Fn.RANK_VARIANTS}

    def __init__(
        self,
        alpha_h: float = 0.1,
        alpha_r: float = 2e-4,
        rank: str = "nuclear",
        standardize: bool = True,
        bias: bool = False,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        self.check_choices("simmer", rank=rank)
        self.alpha_h, self.alpha_r, self.rank = float(alpha_h), float(alpha_r), rank
        self.standardize, self.bias, self.eps = bool(standardize), bool(bias), float(eps)
        self._hparams = {
            "alpha_h": self.alpha_h,
            "alpha_r": self.alpha_r,
            "rank": rank,
            "standardize": self.standardize,
            "bias": self.bias,
            "eps": self.eps,
        }

    def compute(self, views):
        z = torch.stack(views).mean(dim=0)
        if self.standardize:
            z = Fn.standardize(z)
        ent = Fn.nn_entropy(z, eps=self.eps)
        a = torch.cat([z, z.new_ones(z.shape[0], 1)], dim=1) if self.bias else z
        rank = Fn.rank_surrogate(a, self.rank)
        loss = -self.alpha_h * ent - self.alpha_r * rank
        return loss, {"nn_entropy": ent, "rank": rank}
