"""Variance/covariance and uniformity regularisers: the add-on ablations of the E2MC paper's Table 3."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from e2mc_cli.criteria import functional as Fn
from e2mc_cli.criteria.base import Criterion

__all__ = ["REG_SPACES", "VCReg", "Uniformity"]


REG_SPACES = ("hypersphere", "projector")


class VCReg(Criterion):
    """VCReg: VICReg's variance and covariance terms without the invariance term.

    ``loss = μ · mean_v mean_j relu(τ − √(Var(x_v,j) + 1e-4)) + ν · Σ_v Σ_{j≠k} cov(x_v)_jk² / d``
    (VICReg, Bardes et al., ICLR 2022, https://arxiv.org/abs/2105.04906), μ = 0.1 and ν = 0.001
    as in the SwAV ablation of E2MC (Chakraborty et al., AISTATS 2025,
    https://arxiv.org/abs/2411.15931), App. B.1.2 and Table 3. Where the terms act is
    ``reg_space``, the flag of the E2MC authors' ablation script (``main_swav_vc_ft.py``,
    https://github.com/deepc94/e2mc):

    - ``"hypersphere"`` (their default, and so the Table 3 run): ``x = z/‖z‖``, the L2-normalised
      embedding, with the std target ``τ = 1/√d`` (each coordinate of a point spread uniformly on
      the unit sphere has variance 1/d);
    - ``"projector"``: ``x = z`` as the criterion receives it (SwAV's head output before its
      L2-normalisation), with VICReg's own target ``τ = 1``.

    The variance term is averaged and the covariance summed over the views, as in that script.
    """

    display_name: ClassVar[str] = "VCReg (VICReg's variance and covariance terms)"
    formula: ClassVar[str] = (
        "μ·mean_v mean_j relu(τ − std_j(x_v)) + ν·Σ_v Σ_{j≠k} cov(x_v)_jk²/d,  "
        "x = z/‖z‖, τ = 1/√d (hypersphere) | x = z, τ = 1 (projector)"
    )
    paper: ClassVar[str] = "vicreg"
    where: ClassVar[str] = "as in E2MC App. B.1.2"
    over_views: ClassVar[str] = "variance mean, covariance sum"
    weights: ClassVar[tuple[str, ...]] = ("mu", "nu")
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"reg_space": REG_SPACES}

    def __init__(self, mu: float = 0.1, nu: float = 0.001, reg_space: str = "hypersphere") -> None:
        super().__init__()
        self.check_choices("vcreg", reg_space=reg_space)
        self.mu, self.nu, self.reg_space = float(mu), float(nu), reg_space
        self._hparams = {"mu": self.mu, "nu": self.nu, "reg_space": reg_space}

    def std_target(self, d: int) -> float:
        """The std each dimension is pushed up to: ``1/√d`` on the hypersphere, 1 on the projector."""
        return 1.0 / math.sqrt(d) if self.reg_space == "hypersphere" else 1.0

    def compute(self, views):
        z = torch.stack(views)  # (V, n, d)
        if self.reg_space == "hypersphere":
            z = F.normalize(z, dim=-1)
        var = Fn.variance_hinge(z, target=self.std_target(z.shape[-1])).mean()
        cov = Fn.offdiag_cov_penalty(z).sum()
        return self.mu * var + self.nu * cov, {"var": var, "cov": cov}


class Uniformity(Criterion):
    """AUH uniformity (Wang & Isola, ICML 2020, https://arxiv.org/abs/2005.10242) as an add-on.

    On the L2-normalised embeddings ``u`` of each view,
    ``loss = λ · R_v log mean_{p≠q} exp(−t‖u_p − u_q‖²)``, λ = 0.5 and t = 2 as in the SwAV
    ablation of E2MC (Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931),
    App. B.1.2. ``R_v`` combines the views by ``view_reduction``: ``"mean"`` (the default) as the
    authors' script ``main_swav_unif_ft.py`` (https://github.com/deepc94/e2mc) that produced
    Table 3, ``"sum"`` as the paper's Eq. B.3 writes it. ``normalize=False`` uses the embeddings
    as they come.
    """

    display_name: ClassVar[str] = "uniformity (alignment and uniformity on the hypersphere)"
    formula: ClassVar[str] = "λ·R_v log mean_{p≠q} exp(−t‖u_p − u_q‖²),  u = z/‖z‖,  R = mean | sum"
    paper: ClassVar[str] = "uniformity"
    where: ClassVar[str] = "as in E2MC App. B.1.2, Eq. B.3"
    over_views: ClassVar[str] = "{view_reduction}"
    weights: ClassVar[tuple[str, ...]] = ("lam",)
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"view_reduction": Fn.VIEW_REDUCTIONS}

    def __init__(
        self, lam: float = 0.5, t: float = 2.0, normalize: bool = True, view_reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.check_choices("uniformity", view_reduction=view_reduction)
        self.lam, self.t, self.normalize = float(lam), float(t), bool(normalize)
        self.view_reduction = view_reduction
        self._hparams = {
            "lam": self.lam,
            "t": self.t,
            "normalize": self.normalize,
            "view_reduction": view_reduction,
        }

    def compute(self, views):
        per_view = torch.stack(
            [Fn.uniformity(F.normalize(z, dim=1) if self.normalize else z, t=self.t) for z in views]
        )
        total = Fn.reduce_views(per_view, self.view_reduction)
        return self.lam * total, {"uniformity": total}
