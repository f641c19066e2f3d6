"""MoCo v2 as a method module: InfoNCE against a queue of keys from a momentum (key) encoder,
the key encoder and the queue as state modules, shuffled batch norm under DDP; and its spec.

Every fact below is from facebookresearch/moco (``moco/builder.py``, ``main_moco.py``,
``moco/loader.py``, README), the code of the MoCo v2 report (Chen, Fan, Girshick, He, arXiv 2020)
on top of MoCo (He, Fan, Wu, Xie, Girshick, CVPR 2020): :data:`e2mc_cli.papers.PAPERS`
``"mocov2"`` and ``"moco"``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from e2mc_cli.data.transforms import IMAGENET_STD, REFERENCE_SIZE
from e2mc_cli.data.views import BLUR_SIGMA, ViewRecipe, crop_scale
from e2mc_cli.distributed import concat_all_gather, is_distributed, rank, world_size
from e2mc_cli.errors import UserError
from e2mc_cli.methods.base import Method, MethodOutput, check_views
from e2mc_cli.methods.functional import momentum_update_
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.models import Fp32Linear, SSLModel
from e2mc_cli.precision import full_precision

# -- the math -----------------------------------------------------------------------------------


def infonce_loss(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MoCo's InfoNCE (``MoCo.forward`` of ``moco/builder.py`` and the cross-entropy of
    ``main_moco.py``)::

        logits = [q·k⁺, q·queue] / τ          (N × (1 + K))
        L = mean_n CE(logits_n, 0) = −mean_n log(exp(q_n·k_n/τ) / (exp(q_n·k_n/τ) + Σ_j exp(q_n·c_j/τ)))

    ``q`` (N × d, the L2-normalised queries, with gradients), ``k`` (N × d, their normalised
    positive keys; detached here), ``queue`` (d × K, normalised keys as columns; detached), τ =
    ``temperature`` (0.2 for MoCo v2, ``--moco-t 0.2``). The loss is the mean over this process's
    queries, as the official ``nn.CrossEntropyLoss``; computed in float32. ``terms``: ``top1``,
    the share (%) of queries whose positive logit is the largest (the official ``acc1`` of the
    (K+1)-way contrast), and ``positive``, the mean cosine ``q·k⁺`` (detached).
    """
    if q.ndim != 2 or q.shape != k.shape or queue.ndim != 2 or queue.shape[0] != q.shape[1]:
        raise ValueError(
            f"infonce_loss needs q, k of one N × d shape and a d × K queue, got {tuple(q.shape)}, "
            f"{tuple(k.shape)} and {tuple(queue.shape)}"
        )
    q, k, queue = q.float(), k.detach().float(), queue.detach().float()
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    loss = F.cross_entropy(logits, labels)
    with torch.no_grad():
        top1 = (logits.argmax(dim=1) == 0).float().mean() * 100
    return loss, {"top1": top1, "positive": l_pos.detach().mean()}


@torch.no_grad()
def batch_shuffle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MoCo's shuffling BN (``_batch_shuffle_ddp``): the global batch permuted by one random
    permutation (drawn from torch's generator, process 0's broadcast to all), this process's
    share of it, and the inverse permutation (``None``, and ``x`` unchanged, on one process: a
    permutation within one batch-norm batch changes nothing). The key encoder's batch norm thus
    sees images of other processes, so its statistics cannot tell a query's own key apart."""
    if not is_distributed():
        return x, None
    gathered = concat_all_gather(x)
    perm = torch.randperm(gathered.shape[0]).to(x.device)
    dist.broadcast(perm, src=0)
    mine = perm.view(world_size(), -1)[rank()]
    return gathered[mine], torch.argsort(perm)


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, inverse: torch.Tensor | None) -> torch.Tensor:
    """Undo :func:`batch_shuffle` (``_batch_unshuffle_ddp``): each process gets back the rows of
    its own images, in their order."""
    if inverse is None:
        return x
    return concat_all_gather(x)[inverse.view(world_size(), -1)[rank()]]


class KeyQueue(nn.Module):
    """MoCo's dictionary (``moco/builder.py``): ``keys``, ``dim × size`` L2-normalised keys as
    columns (initially ``normalize(randn(dim, size), dim=0)``), and ``ptr``, the column the next
    batch of keys is written to (a ``long`` tensor of one element, initially 0). The official
    ``queue`` and ``queue_ptr`` buffers, under the canonical names ``queue.keys``, ``queue.ptr``."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(dim, size), dim=0))
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the ``B × dim`` ``keys`` (the keys of every process, :func:`concat_all_gather`)
        over the oldest ``B`` columns, from ``ptr`` on, and move ``ptr`` by ``B`` modulo the
        size (``_dequeue_and_enqueue``). The size must be a multiple of ``B``, as the official
        ``assert``; the pointer stays on the device (no host synchronisation)."""
        batch, size = keys.shape[0], self.keys.shape[1]
        if size % batch:
            raise UserError(
                f"mocov2 queue_size {size} is not a multiple of the global batch of {batch} "
                "keys (batch size × processes), as MoCo's queue needs"
            )
        columns = (self.ptr + torch.arange(batch, device=self.ptr.device)) % size
        self.keys.index_copy_(1, columns, keys.to(self.keys.dtype).t())
        self.ptr.add_(batch).remainder_(size)


# -- the method ---------------------------------------------------------------------------------


class MoCoV2(Method):
    """MoCo v2: Improved Baselines with Momentum Contrastive Learning (Chen, Fan, Girshick, He,
    arXiv 2020, https://arxiv.org/abs/2003.04297), on MoCo (He et al., CVPR 2020).

    As ``MoCo.forward`` of ``moco/builder.py`` (asymmetric: one loss term per pair of views):
    the query view goes through the encoder (backbone + the MLP head that replaces ResNet's fc,
    2048-2048-128), ``q = h_q / ‖h_q‖``; then, without gradients, the key encoder
    (``momentum_backbone`` + ``momentum_projector``) is moved towards the encoder,
    ``θ_k ← m·θ_k + (1 − m)·θ_q`` with m = ``momentum`` (0.999), *before* it computes the keys
    ``k = h_k / ‖h_k‖`` of the key view — under DDP on a shuffled global batch
    (:func:`batch_shuffle`); the loss is :func:`infonce_loss` of ``q`` against ``k`` and the
    queue (τ = ``temperature``, 0.2), and the keys of every process are then written into the
    queue (:class:`KeyQueue`), the same on every process.

    Space ``"hypersphere"``: MoCo compares L2-normalised embeddings. An add-on criterion sees
    ``h_q``, the encoder's 128-d head output *before* the normalisation (as for SwAV), of the
    query view alone: it is the only embedding of the official forward pass with gradients (the
    keys come from the key encoder, which no gradient reaches), and the encoder is the network
    sslboost exports. Nothing is computed beyond the official forward pass.

    Batch norm is each process's own under DDP (:attr:`global_batchnorm` False), as the official
    code, which uses no SyncBatchNorm and shuffles the key encoder's batch instead.
    """

    name = "mocov2"
    space = "hypersphere"
    global_batchnorm = False

    def __init__(self, model: SSLModel, temperature: float = 0.2, momentum: float = 0.999):
        super().__init__(model)
        missing = [
            m for m in ("momentum_backbone", "momentum_projector", "queue") if m not in model.state_names
        ]
        if missing:
            raise ValueError(f"MoCo v2 needs a model with {', '.join(missing)}")
        if not temperature > 0 or not 0 <= momentum <= 1:
            raise ValueError(f"temperature must be > 0 and momentum in [0, 1], got {temperature}, {momentum}")
        self.temperature = float(temperature)
        self.momentum = float(momentum)

    def _pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        m = self.model
        key = [*m.momentum_backbone.parameters(), *m.momentum_projector.parameters()]
        query = [*m.backbone.parameters(), *m.projector.parameters()]
        return key, query

    @torch.no_grad()
    def update_key_encoder(self) -> None:
        """The momentum update of the key encoder (``_momentum_update_key_encoder``): its
        parameters (not its batch-norm statistics, which it keeps itself) towards the encoder's."""
        key, query = self._pairs()
        momentum_update_(key, query, self.momentum)

    @torch.no_grad()
    def keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """The normalised keys of a batch of key views (shuffled batch norm under DDP)."""
        shuffled, inverse = batch_shuffle(im_k)
        h = self.model.momentum_projector(self.model.momentum_backbone(shuffled))
        with full_precision(h.device):
            k = F.normalize(h.float(), dim=1)
        return batch_unshuffle(k, inverse)

    def forward(self, images: list[torch.Tensor]) -> MethodOutput:
        check_views(images, 2, "MoCo v2")
        im_q, im_k = images
        h_q = self.model.projector(self.model.backbone(im_q))  # float32 (Fp32Linear)
        with torch.no_grad():
            self.update_key_encoder()
            k = self.keys(im_k)
        queue = self.model.queue
        with full_precision(h_q.device):
            q = F.normalize(h_q.float(), dim=1)
            # The loss reads the queue as it was (a copy, as the official clone): the new keys
            # are written into it below, before backward.
            loss, terms = infonce_loss(q, k, queue.keys.clone(), self.temperature)
        queue.enqueue(concat_all_gather(k))
        return MethodOutput(loss, terms, [h_q], self.space, [h_q])


# -- heads, state, views, spec -------------------------------------------------------------------


def _heads(width: int, sizes: Mapping[str, object]) -> dict[str, nn.Module]:
    """The MLP head of ``--mlp`` (``moco/builder.py``): Linear(w, w)-ReLU-Linear(w, dim), keys 0
    and 2 (no batch norm); the last Linear computes in float32."""
    dim = int(sizes["dim"])
    return {"projector": nn.Sequential(nn.Linear(width, width), nn.ReLU(), Fp32Linear(width, dim))}


def _state(backbone: nn.Module, heads: Mapping[str, nn.Module], sizes: Mapping[str, object]) -> dict:
    """The key encoder, a copy of the encoder (``param_k.data.copy_(param_q.data)``), and the
    queue of ``queue_size`` random normalised keys, as ``MoCo.__init__``."""
    return {
        "momentum_backbone": copy.deepcopy(backbone),
        "momentum_projector": copy.deepcopy(heads["projector"]),
        "queue": KeyQueue(int(sizes["dim"]), int(sizes["queue_size"])),
    }


def _read_heads(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """``dim`` off the head, ``queue_size`` off the queue when there is one (a file of the
    encoder alone leaves it to the given or official size)."""
    sizes = {"dim": state_dict["projector.2.weight"].shape[0]}
    if "queue.keys" in state_dict:
        sizes["queue_size"] = state_dict["queue.keys"].shape[1]
    return sizes


def _scaled_heads(width: int) -> dict:
    """Output 128 (at most w) and a queue of 65536·w/2048 keys: on a small backbone the official
    65536 keys would make the N × K logits cost more than the backbone itself."""
    return {"dim": min(128, width), "queue_size": max(256, 65536 * width // 2048)}


def mocov2_recipes(px: int, scale: Sequence[float]) -> list[ViewRecipe]:
    """MoCo v2's two views, one recipe applied twice (``TwoCropsTransform`` of ``moco/loader.py``)
    with ``--aug-plus`` (``main_moco.py``): RandomResizedCrop(224, scale 0.2–1, bilinear: the
    torchvision default), ColorJitter(0.4, 0.4, 0.4, 0.1) p = 0.8, grayscale p = 0.2, Gaussian
    blur σ ∈ [0.1, 2] p = 0.5 (``loader.GaussianBlur``), then the flip, last (``flip_last``);
    normalised with ImageNet's mean and std (0.229, 0.224, 0.225). At ``px`` pixels the crop is
    ``px`` and the blur's σ range scales by px / 224."""
    f = px / REFERENCE_SIZE
    recipe = ViewRecipe(
        size=px,
        scale=crop_scale(scale),
        interpolation="bilinear",
        flip_p=0.5,
        flip_last=True,
        jitter_p=0.8,
        jitter=(0.4, 0.4, 0.4, 0.1),
        grayscale_p=0.2,
        blur_p=0.5,
        blur_sigma=(BLUR_SIGMA[0] * f, BLUR_SIGMA[1] * f),
        std=IMAGENET_STD,
    )
    return [recipe, recipe]


SPEC = MethodSpec(
    method=MoCoV2,
    display_name="MoCo v2",
    heads={"dim": 128, "queue_size": 65536},  # --moco-dim, --moco-k (main_moco.py)
    head_builder=_heads,
    head_reader=_read_heads,
    head_scaler=_scaled_heads,
    view_builder=mocov2_recipes,
    view_options={"scale": (0.2, 1.0)},
    paper="mocov2",
    code="https://github.com/facebookresearch/moco",
    # The README's licence section names CC-BY-NC 4.0, under which the weights were released in
    # 2020; the code was relicensed MIT in 2023 (LICENSE), the README still names CC-BY-NC.
    licence="cc-by-nc-4.0",
    licence_name="CC-BY-NC 4.0",
    recipes="mocov2",
    # {epoch, arch, state_dict, optimizer} of main_moco.py's save_checkpoint: module.queue
    # (dim × K), module.queue_ptr, then module.encoder_q.* and module.encoder_k.*, torchvision
    # ResNets whose fc is the MLP head (fc.0, fc.2).
    official_keys=(
        ("encoder_q.fc.", "projector."),
        ("encoder_k.fc.", "momentum_projector."),
        ("encoder_k.", "momentum_backbone."),
        ("encoder_q.", "backbone."),
        ("queue_ptr", "queue.ptr"),
        ("queue", "queue.keys"),
    ),
    state_builder=_state,
    state_copies=(("momentum_backbone", "backbone"), ("momentum_projector", "projector")),
)
