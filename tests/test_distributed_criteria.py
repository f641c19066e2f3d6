"""Two gloo processes with n/2 samples each give the loss of one process with n samples.

Each criterion all-gathers its inputs with gradients, so every process computes the full-batch
loss; the backward pass sums the gradient over processes, so a shard's gradient is
``world_size`` times the matching rows of the single-process gradient (see
:func:`e2mc_cli.distributed.gather_with_grad`).
"""

from __future__ import annotations

import torch
from two_processes import WORLD, on_two_processes

from e2mc_cli.criteria import CRITERIA, build_criterion

N, D = 24, 6  # logdet needs n > d; m-spacings needs n > √n


def _inputs():
    g = torch.Generator().manual_seed(1234)
    return {
        name: [torch.randn(N, D, generator=g, dtype=torch.float64) for _ in range(3)] for name in CRITERIA
    }


def _run(crit, views):
    views = [v.clone().requires_grad_() for v in views]
    out = crit(views)
    if out.loss.requires_grad:
        out.loss.backward()
    grads = [v.grad if v.grad is not None else torch.zeros_like(v) for v in views]
    return out.loss.detach(), grads


def _shard_results(rank: int) -> dict:
    """Every criterion's loss and input gradients on this process's half of the batch."""
    results = {}
    per = N // WORLD
    for name, views in _inputs().items():
        crit = build_criterion(name, space="hypersphere")
        k = 3 if crit.views == "all" else 2
        shard = [v[rank * per : (rank + 1) * per] for v in views[:k]]
        results[name] = _run(crit, shard)
        if name == "logdet":
            results["logdet_state"] = crit.running_cov.clone()
    return results


def test_two_processes_match_one_process(tmp_path):
    shards = on_two_processes(_shard_results, tmp_path)

    per = N // WORLD
    for name, views in _inputs().items():
        crit = build_criterion(name, space="hypersphere")
        k = 3 if crit.views == "all" else 2
        loss, grads = _run(crit, views[:k])
        for rank, res in enumerate(shards):
            shard_loss, shard_grads = res[name]
            assert torch.allclose(shard_loss, loss, rtol=1e-10, atol=1e-12), name
            for g, sg in zip(grads, shard_grads):
                expected = WORLD * g[rank * per : (rank + 1) * per]
                assert torch.allclose(sg, expected, rtol=1e-8, atol=1e-12), name
        if name == "logdet":
            for res in shards:  # the running state is the same everywhere, and equals one process's
                assert torch.allclose(res["logdet_state"], crit.running_cov)
    # the check has teeth: the gradients are not all zero
    assert shards[0]["e2mc"][1][0].abs().max() > 0
