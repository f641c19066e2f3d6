"""MoCo v2 as facebookresearch/moco defines it, written out independently of ``e2mc_cli``: the
module tree of ``moco/builder.py`` (``MoCo`` with ``mlp=True``), one training step of its forward
pass as the paper's Algorithm 1 and ``builder.py`` state it, and a checkpoint in the layout
``main_moco.py`` saves."""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from torch import nn
from zoo_fixtures import Official, backbone_width, official_backbone, prefixed, randomize_

# The README's download paths.
MOCOV2_PATHS = {
    "mocov2-200": "/moco/moco_checkpoints/moco_v2_200ep/moco_v2_200ep_pretrain.pth.tar",
    "mocov2-800": "/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
}


def mlp_encoder(arch: str, dim: int) -> nn.Module:
    """``base_encoder(num_classes=dim)`` with ``--mlp``: the ResNet's fc replaced by
    ``Sequential(Linear(w, w), ReLU(), Linear(w, dim))``."""
    encoder = official_backbone(arch)
    width = backbone_width(arch)
    encoder.fc = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, dim))
    return encoder


class OfficialMoCo(nn.Module):
    """builder.MoCo: encoder_q, encoder_k, buffers queue (dim × K, normalised columns) and queue_ptr."""

    def __init__(
        self, arch: str = "resnet-mini", dim: int = 16, K: int = 64, m: float = 0.999, T: float = 0.2
    ):
        super().__init__()
        self.K, self.m, self.T = K, m, T
        self.encoder_q = mlp_encoder(arch, dim)
        self.encoder_k = mlp_encoder(arch, dim)
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            pk.data.copy_(pq.data)
            pk.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def step(self, im_q: torch.Tensor, im_k: torch.Tensor) -> torch.Tensor:
        """One forward pass on one process (Algorithm 1): the loss; key encoder and queue updated."""
        q = F.normalize(self.encoder_q(im_q), dim=1)
        with torch.no_grad():
            for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
                pk.data = pk.data * self.m + pq.data * (1.0 - self.m)
            k = F.normalize(self.encoder_k(im_k), dim=1)
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        loss = F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))
        with torch.no_grad():
            ptr, n = int(self.queue_ptr), k.shape[0]
            self.queue[:, ptr : ptr + n] = k.T
            self.queue_ptr[0] = (ptr + n) % self.K
        return loss


def trained_moco(arch: str = "resnet-mini", dim: int = 16, K: int = 64, ptr: int = 24) -> OfficialMoCo:
    """An OfficialMoCo with distinct random values everywhere (the key encoder unlike the query
    encoder, as after training), a random normalised queue and its pointer at ``ptr``."""
    moco = OfficialMoCo(arch, dim, K)
    randomize_(moco.encoder_q)
    randomize_(moco.encoder_k)
    with torch.no_grad():
        moco.queue.copy_(F.normalize(torch.randn(dim, K), dim=0))
        moco.queue_ptr.fill_(ptr)
    return moco


def mocov2_checkpoint(arch: str = "resnet-mini", dim: int = 16, K: int = 64, epoch: int = 800) -> Official:
    """``{epoch, arch, state_dict, optimizer}`` of main_moco.py: the DDP state dict (module.queue,
    module.queue_ptr, module.encoder_q.*, module.encoder_k.*) and an SGD over
    ``model.parameters()`` (the key encoder's listed too, without state: it has no gradients)."""
    moco = trained_moco(arch, dim, K)
    params = list(moco.parameters())
    optimizer = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)
    for p in params:
        p.grad = torch.randn_like(p) if p.requires_grad else None
    optimizer.step()
    state = prefixed("module.", moco.state_dict())
    saved = optimizer.state_dict()
    buf = io.BytesIO()
    torch.save({"epoch": epoch, "arch": arch, "state_dict": state, "optimizer": saved}, buf)
    names = [f"module.{n}" for n, _ in moco.named_parameters()]
    return Official(buf.getvalue(), state, {"moco": moco}, saved, names)
