"""The base methods' losses as pure functions (CRITERIA.md §2).

Every function computes in float32 whatever the input dtype (so bf16 autocast changes only the
network, not the loss arithmetic) and, when a process group is initialised, works on the batch of
all processes exactly as the official code does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from e2mc_cli.distributed import gather_with_grad, is_distributed, world_size


def _offdiag_sq_sum(x: torch.Tensor) -> torch.Tensor:
    """Σ_{j≠k} (xᵀx)_jk² for a centred ``n × d`` matrix, through the smaller Gram matrix.

    ‖xᵀx‖_F = ‖x xᵀ‖_F, so with n < d the n × n Gram matrix gives the same sum as the d × d one
    (the diagonal of xᵀx is the column sums of squares either way).
    """
    n, d = x.shape
    gram = x @ x.T if n < d else x.T @ x
    diag = x.pow(2).sum(dim=0)
    return gram.pow(2).sum() - diag.pow(2).sum()


def vicreg_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg (Bardes, Ponce, LeCun, ICLR 2022), as ``main_vicreg.py``::

        L = λ·mse(z_a, z_b) + μ·½(mean_j relu(1 − s_a,j) + mean_j relu(1 − s_b,j)) + ν·(C(z_a) + C(z_b))
        s_j = sqrt(Var(z_:,j) + 1e-4),   C(z) = Σ_{j≠k} Cov(z)_jk² / d,   Var, Cov with n − 1

    with λ, μ, ν = 25, 25, 1. Under a process group both views are first all-gathered with
    gradients (the official ``FullGatherLayer``). The official code takes the invariance term on
    each process's own shard; here it is taken on the gathered batch, which gives the same value
    averaged over processes and the same parameter gradients after DistributedDataParallel's
    averaging, and makes the logged loss identical on every process.

    Returns ``(loss, terms)`` with the unweighted ``invariance``, ``variance`` and ``covariance``
    terms (detached).
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(
            f"vicreg_loss needs two n × d tensors of one shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    x = gather_with_grad(z_a.float())
    y = gather_with_grad(z_b.float())
    n, d = x.shape
    if n < 2:
        raise ValueError("vicreg_loss needs at least 2 samples (variance and covariance use n − 1)")

    invariance = F.mse_loss(x, y)

    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 1e-4)
    std_y = torch.sqrt(y.var(dim=0) + 1e-4)
    variance = F.relu(1 - std_x).mean() / 2 + F.relu(1 - std_y).mean() / 2

    covariance = (_offdiag_sq_sum(x) + _offdiag_sq_sum(y)) / ((n - 1) ** 2 * d)

    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    terms = {
        "invariance": invariance.detach(),
        "variance": variance.detach(),
        "covariance": covariance.detach(),
    }
    return loss, terms


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, eps: float = 0.05, n_iters: int = 3) -> torch.Tensor:
    """Soft cluster assignments (codes) of SwAV (Caron et al., NeurIPS 2020), as the official
    ``distributed_sinkhorn``.

    ``scores`` is ``B × K`` (samples × prototypes). With ``Q = exp(scores / ε)ᵀ`` (K × B) scaled
    to sum to 1, each of ``n_iters`` iterations rescales the rows (prototypes) to sum to 1/K and
    then the columns (samples) to sum to 1/B; the result times B is returned transposed, ``B × K``,
    so that each sample's code sums to 1 and each prototype receives ≈ B/K in total. Under a
    process group, B counts the samples of all processes and the sums over samples are all-reduced
    (the processes must hold equally many samples, as in the official code). The scores are shifted
    by their global maximum before the exponential: the first normalisation cancels the constant,
    so the codes are unchanged, but ``exp`` cannot overflow.
    """
    out = scores.detach().float()
    top = out.max()
    if is_distributed():
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    q = torch.exp((out - top) / eps).t()  # K × B
    k, b = q.shape
    b_total = b * world_size()

    total = q.sum()
    if is_distributed():
        dist.all_reduce(total)
    q /= total
    for _ in range(n_iters):
        rows = q.sum(dim=1, keepdim=True)
        if is_distributed():
            dist.all_reduce(rows)
        q /= rows
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b_total
    q *= b_total
    return q.t()


def swav_loss(
    scores: Sequence[torch.Tensor],
    crops_for_assign: Sequence[int] = (0, 1),
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    queue_scores: Sequence[torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SwAV's swapped-prediction loss (Caron et al., NeurIPS 2020), as ``main_swav.py``::

        L = 1/|A| Σ_{a∈A} 1/(V−1) Σ_{v≠a} −mean_b Σ_k q_a,bk · log softmax(p_v,b / τ)_k

    ``scores[v]`` (B × K) are the prototype scores of crop ``v`` (dot products of the normalised
    embedding with the normalised prototypes), ``A = crops_for_assign``, V = ``len(scores)``,
    τ = ``temperature``. The codes ``q_a`` come from :func:`sinkhorn_knopp` (ε = ``epsilon``,
    ``sinkhorn_iterations``) on the detached scores of crop ``a``; with a queue,
    ``queue_scores[i]`` (scores of the queued embeddings for the i-th assigned crop, or ``None``)
    is concatenated in front of them and only the last B codes are kept.

    Returns ``(loss, terms)``; ``terms["entropy_codes"]`` is the mean entropy of the codes
    (detached, for monitoring collapse of the assignments).
    """
    n_crops = len(scores)
    if n_crops < 2:
        raise ValueError("swav_loss needs at least 2 crops")
    if any(not 0 <= c < n_crops for c in crops_for_assign):
        raise ValueError(f"crops_for_assign {list(crops_for_assign)} out of range for {n_crops} crops")
    bs = scores[0].shape[0]
    loss = scores[0].new_zeros((), dtype=torch.float32)
    code_entropy = torch.zeros((), device=scores[0].device)
    for i, crop_id in enumerate(crops_for_assign):
        with torch.no_grad():
            out = scores[crop_id].detach().float()
            extra = queue_scores[i] if queue_scores is not None else None
            if extra is not None:
                out = torch.cat((extra.float(), out))
            q = sinkhorn_knopp(out, epsilon, sinkhorn_iterations)[-bs:]
            code_entropy += -(q * torch.log(q.clamp_min(1e-12))).sum(dim=1).mean()
        subloss = loss.new_zeros(())
        for v in range(n_crops):
            if v == crop_id:
                continue
            logp = F.log_softmax(scores[v].float() / temperature, dim=1)
            subloss = subloss - (q * logp).sum(dim=1).mean()
        loss = loss + subloss / (n_crops - 1)
    loss = loss / len(crops_for_assign)
    return loss, {"entropy_codes": code_entropy / len(crops_for_assign)}


def simsiam_loss(
    p_a: torch.Tensor, p_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimSiam (Chen & He, CVPR 2021), as ``main_simsiam.py``::

        L = −½ (mean cos(p_a, sg(z_b)) + mean cos(p_b, sg(z_a)))

    ``sg`` is the stop-gradient: the targets are detached here, so callers may pass the
    projector outputs with their gradients (which an add-on criterion needs).
    Returns ``(loss, terms)`` with ``terms["cosine"]`` the mean of the two cosines (detached).
    """
    cos_a = F.cosine_similarity(p_a.float(), z_b.detach().float(), dim=1).mean()
    cos_b = F.cosine_similarity(p_b.float(), z_a.detach().float(), dim=1).mean()
    loss = -(cos_a + cos_b) * 0.5
    return loss, {"cosine": (-loss).detach()}


@torch.no_grad()
def momentum_update_(target: Sequence[torch.Tensor], online: Sequence[torch.Tensor], m: float) -> None:
    """``θ_t ← θ_t · m + θ_o · (1 − m)`` for every pair of tensors, in place: the momentum (EMA)
    update of MoCo's key encoder (``_momentum_update_key_encoder``, ``_update_momentum_encoder``)
    and DINO's teacher, with the same products and sum as their per-tensor loops, on all tensors at
    once."""
    target, online = list(target), [t.detach() for t in online]
    if len(target) != len(online):
        raise ValueError(f"momentum update of {len(target)} tensors from {len(online)}")
    torch._foreach_mul_(target, m)
    torch._foreach_add_(target, torch._foreach_mul(online, 1.0 - m))
