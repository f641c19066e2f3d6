"""Variance/covariance and uniformity regularisers: the add-on ablations of the E2MC paper's Table 3."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from e2mc_cli.criteria import functional as Fn
from e2mc_cli.criteria.base import Criterion

__all__ = ["VCReg", "Uniformity"]


class VCReg(Criterion):
    """VCReg: VICReg's variance and covariance terms without the invariance term.

    ``loss = μ · mean_v mean_j relu(1 − √(Var(z_v,j) + 1e-4)) + ν · Σ_v Σ_{j≠k} cov(z_v)_jk² / d``
    (VICReg, Bardes et al., ICLR 2022, https://arxiv.org/abs/2105.04906), μ = 0.1 and ν = 0.001
    as in the SwAV ablation of E2MC (Chakraborty et al., AISTATS 2025,
    https://arxiv.org/abs/2411.15931), App. B.1.2 and Table 3.
    """

    display_name: ClassVar[str] = "VCReg (VICReg's variance and covariance terms)"
    formula: ClassVar[str] = "μ·mean_v mean_j relu(1 − std_j(z_v)) + ν·Σ_v Σ_{j≠k} cov(z_v)_jk²/d"
    paper: ClassVar[str] = "vicreg"
    where: ClassVar[str] = "as in E2MC App. B.1.2"

    def __init__(self, mu: float = 0.1, nu: float = 0.001) -> None:
        super().__init__()
        self.mu, self.nu = float(mu), float(nu)
        self._hparams = {"mu": self.mu, "nu": self.nu}

    def compute(self, views):
        z = torch.stack(views)
        var = Fn.variance_hinge(z).mean()
        cov = Fn.offdiag_cov_penalty(z).sum()
        return self.mu * var + self.nu * cov, {"var": var, "cov": cov}


class Uniformity(Criterion):
    """AUH uniformity (Wang & Isola, ICML 2020, https://arxiv.org/abs/2005.10242) as an add-on.

    On the L2-normalised embeddings ``u`` of each view,
    ``loss = λ · Σ_v log mean_{p≠q} exp(−t‖u_p − u_q‖²)``, λ = 0.5 and t = 2 as in the SwAV
    ablation of E2MC (Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931),
    App. B.1.2, Eq. B.3. ``normalize=False`` uses the embeddings as they come.
    """

    display_name: ClassVar[str] = "uniformity (alignment and uniformity on the hypersphere)"
    formula: ClassVar[str] = "λ·Σ_v log mean_{p≠q} exp(−t‖u_p − u_q‖²),  u = z/‖z‖"
    paper: ClassVar[str] = "uniformity"
    where: ClassVar[str] = "as in E2MC App. B.1.2, Eq. B.3"

    def __init__(self, lam: float = 0.5, t: float = 2.0, normalize: bool = True) -> None:
        super().__init__()
        self.lam, self.t, self.normalize = float(lam), float(t), bool(normalize)
        self._hparams = {"lam": self.lam, "t": self.t, "normalize": self.normalize}

    def compute(self, views):
        total = 0.0
        for z in views:
            u = F.normalize(z, dim=1) if self.normalize else z
            total = total + Fn.uniformity(u, t=self.t)
        return self.lam * total, {"uniformity": total}
