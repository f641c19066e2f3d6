"""DINO under two gloo processes: the centre's all-reduce gives the single-process centre of the
whole batch, and under DistributedDataParallel the centre and the teacher stay the same everywhere."""

from __future__ import annotations

import torch
from two_processes import on_two_processes

from e2mc_cli.methods import build_model
from e2mc_cli.methods.dino import DINO, dino_loss, updated_center

HEADS = {"mlp": "32-16", "out_dim": 40}


def _crops(bs: int, px: int = 16, small: int = 8) -> list[torch.Tensor]:
    return [torch.randn(bs, 3, px, px) for _ in range(2)] + [torch.randn(bs, 3, small, small)]


def _shared_logits():
    g = torch.Generator().manual_seed(3)
    student = [torch.randn(8, 7, generator=g) for _ in range(4)]
    teacher = [torch.randn(8, 7, generator=g) for _ in range(2)]
    return student, teacher, torch.randn(1, 7, generator=g)


def _centre_and_loss_of_a_shard(rank: int):
    student, teacher, centre = _shared_logits()
    shard = slice(rank * 4, (rank + 1) * 4)
    loss, _ = dino_loss([s[shard] for s in student], [t[shard] for t in teacher], centre)
    moved = updated_center(centre, torch.cat([t[shard] for t in teacher]))
    return loss, moved


def test_two_processes_move_the_centre_as_one_process_on_the_whole_batch(tmp_path):
    (loss_a, centre_a), (loss_b, centre_b) = on_two_processes(_centre_and_loss_of_a_shard, tmp_path)
    student, teacher, centre = _shared_logits()
    loss_ref, _ = dino_loss(student, teacher, centre)
    centre_ref = updated_center(centre, torch.cat(teacher))
    torch.testing.assert_close(centre_a, centre_ref)
    torch.testing.assert_close(centre_b, centre_ref)
    torch.testing.assert_close((loss_a + loss_b) / 2, loss_ref)  # a mean over each local batch


def _weights_after_two_ddp_steps(rank: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)  # the same initial weights on both processes
    method = DINO(build_model("dino", "resnet-mini", HEADS), local_crops_number=1, freeze_last_layer=0)
    method.on_train_start(total_steps=4, steps_per_epoch=2)
    ddp = DistributedDataParallel(method)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    torch.manual_seed(1 + rank)  # different images on each process
    for step in range(2):
        method.on_step_start(step, 0)
        loss = ddp(_crops(2)).loss
        opt.zero_grad()
        loss.backward()
        method.on_after_backward(step)
        opt.step()
        method.on_after_step(step)
    return {k: v for k, v in method.model.state_dict().items() if "running" not in k}


def test_under_ddp_the_centre_and_the_teacher_stay_the_same_on_every_process(tmp_path):
    a, b = on_two_processes(_weights_after_two_ddp_steps, tmp_path)
    torch.manual_seed(0)  # the weights both processes started from
    start = build_model("dino", "resnet-mini", HEADS).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(a["dino_loss.center"], start["dino_loss.center"])
    assert not torch.equal(a["teacher_last_layer.weight"], start["teacher_last_layer.weight"])
