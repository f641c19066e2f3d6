"""E2MC: effective entropy maximisation with a covariance penalty (Chakraborty et al., AISTATS 2025)."""

from __future__ import annotations

from typing import ClassVar

import torch

from e2mc_cli.criteria import functional as Fn
from e2mc_cli.criteria.base import Criterion
from e2mc_cli.errors import UserError

__all__ = ["E2MC"]


class E2MC(Criterion):
    """E2MC (Chakraborty, LeCun, Rudner, Learned-Miller, AISTATS 2025, https://arxiv.org/abs/2411.15931,
    Appendix A).

    Each view's embeddings are mapped onto the unit cube, ``ž = Ψ(z)`` (``space="hypercube"``:
    sigmoid, for methods that do not normalise, e.g. VICReg; ``"hypersphere"``: the Gaussian CDF,
    for SwAV and SimSiam). With ``H_j`` the m-spacings entropy of dimension ``j`` and ``C`` the
    off-diagonal covariance penalty, ``L_ent = (1/d) Σ_j (H_j(ž_a) + H_j(ž_b))``,
    ``L_cov = C(ž_a) + C(ž_b)`` and ``loss = −β·L_ent + γ·L_cov``. The defaults β = 1, γ = 25 are
    the paper's SwAV setting (Appendix B.1.2, the Table 3 comparison); the paper uses β = 1000,
    γ = 100 for VICReg and β = 0.001, γ = 0.01 for SimSiam (the recipes carry these).
    The entropy is summed over the two views, as the paper's pseudocode writes it; the authors'
    released training scripts average it over the views instead, so at equal β their entropy
    weight is half of this one (halve β to reproduce those scripts exactly).
    Both views are processed in one batched sort and one batched Gram product; the paper's
    pseudocode itself is :func:`e2mc_cli.criteria.reference.e2mc_loss`.
    """

    display_name: ClassVar[str] = "E2MC (effective entropy maximization criterion)"
    formula: ClassVar[str] = "−β·(1/d)Σ_j Σ_v H_j(Ψ(z_v)) + γ·Σ_v Σ_{j≠k} cov(Ψ(z_v))_jk²/d"
    paper: ClassVar[str] = "e2mc"
    where: ClassVar[str] = "App. A"

    def __init__(
        self, space: str = "hypercube", beta: float = 1.0, gamma: float = 25.0, eps: float = 1e-7
    ) -> None:
        super().__init__()
        if space not in ("hypercube", "hypersphere"):
            raise UserError(f"e2mc: space must be 'hypercube' or 'hypersphere', not {space!r}")
        self.space, self.beta, self.gamma, self.eps = space, float(beta), float(gamma), float(eps)
        self._hparams = {"space": space, "beta": self.beta, "gamma": self.gamma, "eps": self.eps}

    def compute(self, views):
        u = Fn.to_unit_cube(torch.stack(views), self.space)  # (V, n, d)
        ent = Fn.m_spacings_entropy(u, eps=self.eps).sum(dim=0).mean()  # (1/d) Σ_j Σ_v H_j
        cov = Fn.offdiag_cov_penalty(u).sum()  # Σ_v C(ž_v)
        loss = self.gamma * cov - self.beta * ent
        return loss, {"ent": ent, "cov": cov}
