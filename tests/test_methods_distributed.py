"""Two gloo processes with n/2 samples each give the single-process losses and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from two_processes import on_two_processes

from e2mc_cli.methods import sinkhorn_knopp, swav_loss, vicreg_loss


def _data():
    g = torch.Generator().manual_seed(7)
    z_a = torch.randn(8, 6, generator=g)
    z_b = z_a + 0.5 * torch.randn(8, 6, generator=g)
    crops = [F.normalize(torch.randn(8, 5, generator=g), dim=1) for _ in range(3)]
    return z_a, z_b, crops


def _losses(z_a, z_b, crops):
    z_a, z_b = z_a.clone().requires_grad_(), z_b.clone().requires_grad_()
    crops = [c.clone().requires_grad_() for c in crops]
    v_loss, _ = vicreg_loss(z_a, z_b)
    s_loss, _ = swav_loss(crops, crops_for_assign=[0, 1])
    (v_loss + s_loss).backward()
    codes = sinkhorn_knopp(crops[0].detach())
    return v_loss.detach(), s_loss.detach(), z_a.grad, crops[2].grad, codes


def _shard_losses(rank: int):
    z_a, z_b, crops = _data()
    shard = slice(rank * 4, (rank + 1) * 4)
    return _losses(z_a[shard], z_b[shard], [c[shard] for c in crops])


def test_two_processes_match_one(tmp_path):
    parts = on_two_processes(_shard_losses, tmp_path)
    v_ref, s_ref, ga_ref, gc_ref, codes_ref = _losses(*_data())
    for rank, (v, _s, ga, gc, codes) in enumerate(parts):
        shard = slice(rank * 4, (rank + 1) * 4)
        # VICReg works on the gathered batch: the same loss on every process; each process's
        # gradient is world_size × the single-process one (DDP's averaging divides it back).
        torch.testing.assert_close(v, v_ref)
        torch.testing.assert_close(ga, 2 * ga_ref[shard])
        # Sinkhorn normalises over the samples of all processes.
        torch.testing.assert_close(codes, codes_ref[shard])
        # SwAV's loss is a mean over the local batch: processes' losses average to the global one,
        # and the local gradient is again world_size × the single-process one.
        torch.testing.assert_close(gc, 2 * gc_ref[shard])
    torch.testing.assert_close((parts[0][1] + parts[1][1]) / 2, s_ref)


def _swav_queue_and_weights_under_ddp(rank: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    from e2mc_cli.methods import SwAV, build_model

    torch.manual_seed(0)  # the same initial weights on both processes
    heads = {"hidden_mlp": 32, "feat_dim": 16, "n_prototypes": 20}
    method = SwAV(
        build_model("swav", "resnet-mini", heads), nmb_crops=[2, 2], queue_length=8, epoch_queue_starts=0
    )
    torch.manual_seed(1 + rank)  # different images on each process
    # Start the queue before wrapping (as when resuming from a checkpoint that holds one).
    method.on_step_start(0, 0)
    with torch.no_grad():
        method([torch.randn(2, 3, 16, 16) for _ in range(2)] + [torch.randn(2, 3, 8, 8) for _ in range(2)])
    ddp = DistributedDataParallel(method)
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    for step in range(3):
        method.on_step_start(step, 0)
        views = [torch.randn(2, 3, 16, 16) for _ in range(2)] + [torch.randn(2, 3, 8, 8) for _ in range(2)]
        out = ddp(views)
        opt.zero_grad()
        out.loss.backward()
        method.on_after_backward(step)
        opt.step()
    return {"queue": method.queue, "proj": method.model.projector[0].weight.detach()}


def test_swav_queue_stays_per_process_under_ddp(tmp_path):
    a, b = on_two_processes(_swav_queue_and_weights_under_ddp, tmp_path)
    # 8 rounded down to a multiple of the global batch (2 × 2) is 8: 4 slots on each process.
    assert a["queue"].shape == b["queue"].shape == (2, 4, 16)
    # Each process queues its own embeddings: not even the older half (which a broadcast of the
    # buffer from process 0 before the last step would have made equal) agrees.
    assert not torch.allclose(a["queue"][:, 2:], b["queue"][:, 2:])
    torch.testing.assert_close(a["proj"], b["proj"])  # while the weights stay in sync
