"""CorInfoMax's log-determinant criterion with running means and covariances (Özsoy, M.Sc. thesis 2022)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from e2mc_cli.criteria import functional as Fn
from e2mc_cli.criteria.base import Criterion
from e2mc_cli.errors import UserError

__all__ = ["LogDet"]


class LogDet(Criterion):
    """Log-determinant (second-order entropy) maximisation of CorInfoMax (Özsoy, *Self-Supervised
    Learning with an Information Maximization Criterion*, M.Sc. thesis, Koç University 2022,
    Eq. 4.2; the method's paper: Ozsoy et al., NeurIPS 2022, https://arxiv.org/abs/2209.07999).

    Per view ``v``, on the L2-normalised embeddings ``z`` (n × d), with forgetting factor λ:
    ``μ_v ← λμ_v + (1−λ)·mean(z)``, ``R_v ← λR_v + (1−λ)·(z−μ_v)ᵀ(z−μ_v)/n`` (old state detached;
    ``R_v`` starts at the identity and ``μ_v`` at zero, as in the thesis' code), and
    ``loss = −coef · Σ_v logdet(R_v + εI) / d``, computed in float64 (Cholesky, eigenvalues as the
    fallback). λ = 0.01 and ε = 1e-8 are the thesis' values; the attraction term is the base
    method's. Needs more samples than dimensions (n > d, after gathering across processes).
    The running state lives in buffers (``running_mean``, ``running_cov``), created on the first
    call, and is only updated in training mode.
    """

    display_name: ClassVar[str] = "log-determinant (second-order entropy, CorInfoMax)"
    formula: ClassVar[str] = "−coef·Σ_v logdet(R_v + εI)/d,  R_v ← λR_v + (1−λ)·cov(z_v)"
    paper: ClassVar[str] = "corinfomax-thesis"
    where: ClassVar[str] = "Eq. 4.2"
    over_views: ClassVar[str] = "sum"
    weights: ClassVar[tuple[str, ...]] = ("coef",)

    def __init__(
        self, coef: float = 1.0, forgetting: float = 0.01, eps: float = 1e-8, normalize: bool = True
    ) -> None:
        super().__init__()
        if not 0.0 <= forgetting < 1.0:
            raise UserError(f"logdet: forgetting must be in [0, 1), got {forgetting}")
        self.coef, self.forgetting, self.eps = float(coef), float(forgetting), float(eps)
        self.normalize = bool(normalize)
        self._hparams = {
            "coef": self.coef,
            "forgetting": self.forgetting,
            "eps": self.eps,
            "normalize": self.normalize,
        }
        self.register_buffer("running_mean", None)
        self.register_buffer("running_cov", None)

    def _init_state(self, n_views: int, d: int, device) -> None:
        self.running_mean = torch.zeros(n_views, d, dtype=torch.float64, device=device)
        self.running_cov = torch.eye(d, dtype=torch.float64, device=device).repeat(n_views, 1, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The buffers are created lazily; take their shapes from the checkpoint being loaded.
        mean, cov = state_dict.get(prefix + "running_mean"), state_dict.get(prefix + "running_cov")
        if mean is not None and cov is not None:
            self._init_state(mean.shape[0], mean.shape[1], mean.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def compute(self, views):
        n, d = views[0].shape
        if n <= d:
            raise UserError(
                f"logdet (CorInfoMax) needs more samples than dimensions per step, got n={n} samples "
                f"for d={d} dimensions: raise the batch size or use a criterion without this limit (e.g. vne)"
            )
        if self.running_cov is None or self.running_cov.shape != (len(views), d, d):
            self._init_state(len(views), d, views[0].device)
        lam = self.forgetting
        z = torch.stack(views)
        if self.normalize:
            z = F.normalize(z, dim=-1)
        z = z.double()
        mean = lam * self.running_mean + (1.0 - lam) * z.mean(dim=1)  # (V, d)
        zc = z - mean[:, None, :]
        cov = lam * self.running_cov + (1.0 - lam) * (zc.transpose(1, 2) @ zc) / n  # (V, d, d)
        logdets = Fn.psd_logdet(cov, eps=self.eps)  # (V,)
        if self.training:
            self.running_mean = mean.detach()
            self.running_cov = cov.detach()
        total = logdets.sum() / d
        return (-self.coef * total).to(views[0].dtype), {"logdet": total}
