"""SwAV as a method module: multi-crop forward, prototypes, Sinkhorn codes, queue; and its spec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from e2mc_cli.data.views import swav_recipes
from e2mc_cli.distributed import world_size
from e2mc_cli.errors import UserError
from e2mc_cli.methods.base import Method, MethodOutput, check_views, resolution_groups
from e2mc_cli.methods.functional import swav_loss
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.models import Fp32Linear, SSLModel, mlp
from e2mc_cli.precision import full_precision


def check_crops(crops_for_assign: Sequence[int], nmb_crops: Sequence[int]) -> None:
    """``crops_for_assign`` names crops that exist: indices below ``sum(nmb_crops)``; else a UserError."""
    total = sum(int(n) for n in nmb_crops)
    if not crops_for_assign or any(not 0 <= int(c) < total for c in crops_for_assign):
        raise UserError(
            f"swav crops_for_assign {list(crops_for_assign)} must name crops 0 to {total - 1} "
            f"(nmb_crops {list(nmb_crops)})"
        )


def _check_options(options: Mapping[str, object]) -> None:
    check_crops(options["crops_for_assign"], options["nmb_crops"])


class SwAV(Method):
    """SwAV: Swapping Assignments between multiple Views (Caron et al., NeurIPS 2020,
    https://arxiv.org/abs/2006.09882).

    Multi-crop: 2 full-resolution crops + 6 low-resolution ones; the backbone runs once per
    resolution (consecutive crops of one size are concatenated), the projection head
    (2048-2048-128) once on all crops; ``z = h / ‖h‖``, scores ``p = C z`` with the prototypes
    ``C`` (rows renormalised to unit length before every step). Codes ``q`` come from
    Sinkhorn-Knopp on the scores of the crops in ``crops_for_assign`` (optionally with a queue of
    past embeddings in front of them), and the loss is
    ``1/|A| Σ_a 1/(V−1) Σ_{v≠a} −mean Σ_k q_a,k log softmax(p_v/τ)_k``
    (:func:`~e2mc_cli.methods.functional.swav_loss`). Prototypes get no gradient during the first
    ``freeze_prototypes_niters`` steps. An add-on criterion sees the 128-d head outputs ``h``
    *before* L2-normalisation (two full-resolution crops; every crop in ``all_embeddings``), in
    space ``"hypersphere"``.

    The queue (``queue_length`` > 0, official value 3840 when used) is a persistent buffer
    ``queue`` of shape ``len(crops_for_assign) × L × feat_dim`` — saved and restored with the
    module's state dict — created at the first step of epoch ``epoch_queue_starts`` with
    ``L = (queue_length − queue_length mod (B·world_size)) / world_size`` as the official code,
    filled with the current batch's normalised embeddings of the assigned crops (newest first)
    and used once full. It is per-process, so DistributedDataParallel is told to leave it alone.
    """

    name = "swav"
    space = "hypersphere"

    def __init__(
        self,
        model: SSLModel,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        crops_for_assign: Sequence[int] = (0, 1),
        nmb_crops: Sequence[int] = (2, 6),
        queue_length: int = 0,
        epoch_queue_starts: int = 15,
        freeze_prototypes_niters: int = 313,
    ):
        super().__init__(model)
        if "prototypes" not in model.head_names:
            raise ValueError("SwAV needs a model with prototypes")
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.crops_for_assign = [int(c) for c in crops_for_assign]
        self.nmb_crops = [int(c) for c in nmb_crops]
        self.queue_length = int(queue_length)
        self.epoch_queue_starts = int(epoch_queue_starts)
        self.freeze_prototypes_niters = int(freeze_prototypes_niters)
        check_crops(self.crops_for_assign, self.nmb_crops)
        self.feat_dim = model.prototypes.weight.shape[1]
        self.register_buffer("queue", torch.zeros(0), persistent=True)
        # Each process keeps its own queue (as the official code): DDP must not broadcast it.
        self._ddp_params_and_buffers_to_ignore = ["queue"]
        self._epoch = 0
        self._use_the_queue = False

    # -- hooks ------------------------------------------------------------------------------
    def on_step_start(self, step: int, epoch: int) -> None:
        """L2-normalise the prototype rows (no gradient) and note the epoch (queue start)."""
        with torch.no_grad():
            w = self.model.prototypes.weight
            w.copy_(F.normalize(w, dim=1, p=2))
        if epoch != self._epoch:
            self._use_the_queue = False  # the official flag lives for one epoch
        self._epoch = int(epoch)

    def on_after_backward(self, step: int) -> None:
        """Drop the prototypes' gradients while ``step < freeze_prototypes_niters``.

        As the official code the gradient is set to ``None`` (not zero), so the optimiser leaves
        the prototypes untouched: no momentum, no weight decay.
        """
        if step < self.freeze_prototypes_niters:
            for p in self.model.prototypes.parameters():
                p.grad = None

    # -- queue ------------------------------------------------------------------------------
    @property
    def queue_active(self) -> bool:
        return self.queue.numel() > 0

    def _maybe_start_queue(self, bs: int, device: torch.device) -> None:
        if self.queue_length <= 0 or self.queue_active or self._epoch < self.epoch_queue_starts:
            return
        global_bs = bs * world_size()
        length = (self.queue_length - self.queue_length % global_bs) // world_size()
        if length > 0:
            self.queue = torch.zeros(len(self.crops_for_assign), length, self.feat_dim, device=device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The queue's shape is decided when it starts: take the saved one's before loading it.
        saved = state_dict.get(prefix + "queue")
        if saved is not None and saved.shape != self.queue.shape:
            self.queue = torch.zeros_like(saved, device=self.queue.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, images: list[torch.Tensor]) -> MethodOutput:
        check_views(images, sum(self.nmb_crops), "SwAV")
        bs = images[0].shape[0]
        feats = torch.cat(
            [self.model.backbone(torch.cat(images[a:b])) for a, b in resolution_groups(images)]
        )
        h = self.model.projector(feats)  # every crop, before L2-normalisation
        # Scores in float32 even under autocast: they are divided by ε = 0.05 and τ = 0.1.
        with torch.autocast(h.device.type, enabled=False):
            z = F.normalize(h.float(), dim=1, p=2)
            scores = self.model.prototypes(z)
        crop_scores = list(scores.split(bs))

        self._maybe_start_queue(bs, h.device)
        queue_scores = None
        if self.queue_active:
            with torch.no_grad():
                if self._use_the_queue or not bool(torch.all(self.queue[0, -1] == 0)):
                    self._use_the_queue = True
                if self._use_the_queue:
                    w = self.model.prototypes.weight.detach().float()
                    with torch.autocast(h.device.type, enabled=False):
                        queue_scores = [self.queue[i] @ w.t() for i in range(len(self.crops_for_assign))]
        with full_precision(h.device):
            loss, terms = swav_loss(
                crop_scores,
                self.crops_for_assign,
                self.temperature,
                self.epsilon,
                self.sinkhorn_iterations,
                queue_scores,
            )
        if self.queue_active:
            with torch.no_grad():
                for i, crop_id in enumerate(self.crops_for_assign):
                    self.queue[i, bs:] = self.queue[i, :-bs].clone()
                    self.queue[i, :bs] = z[crop_id * bs : (crop_id + 1) * bs].detach()
        terms["queue_used"] = loss.new_tensor(float(queue_scores is not None)).detach()
        crops_h = list(h.split(bs))
        return MethodOutput(loss, terms, crops_h[:2], self.space, crops_h)


def _heads(width: int, sizes: Mapping[str, object]) -> dict[str, nn.Module]:
    """Projection head Linear-BN-ReLU-Linear (2048-2048-128), keys 0, 1, 3; prototypes
    Linear(128 → 3000, no bias); the head's last Linear and the prototypes compute in float32."""
    hidden, feat, n = int(sizes["hidden_mlp"]), int(sizes["feat_dim"]), int(sizes["n_prototypes"])
    return {"projector": mlp([width, hidden, feat]), "prototypes": Fp32Linear(feat, n, bias=False)}


def _read_heads(state_dict: Mapping[str, torch.Tensor]) -> dict:
    return {
        "hidden_mlp": state_dict["projector.0.weight"].shape[0],
        "feat_dim": state_dict["projector.3.weight"].shape[0],
        "n_prototypes": state_dict["prototypes.weight"].shape[0],
    }


def _scaled_heads(width: int) -> dict:
    """Hidden w, output 128 (at most w), 3000·w/2048 prototypes: 3000 prototypes on a 128-d
    backbone would make the prototype layer and Sinkhorn cost up to 13 % of a low-resolution
    crop's backbone pass against 0.6 % on ResNet-50."""
    return {
        "hidden_mlp": width,
        "feat_dim": min(128, width),
        "n_prototypes": max(10, round(3000 * width / 2048)),
    }


SPEC = MethodSpec(
    method=SwAV,
    display_name="SwAV",
    heads={"hidden_mlp": 2048, "feat_dim": 128, "n_prototypes": 3000},
    head_builder=_heads,
    head_reader=_read_heads,
    head_scaler=_scaled_heads,
    view_builder=swav_recipes,
    view_options={
        "nmb_crops": (2, 6),
        "size_crops": (224, 96),
        "min_scale_crops": (0.14, 0.05),
        "max_scale_crops": (1.0, 0.14),
    },
    paper="swav",
    code="https://github.com/facebookresearch/swav",
    licence="cc-by-nc-4.0",
    licence_name="CC-BY-NC 4.0",
    recipes="swav",
    backbone_calls="resolution",
    shared_view_options=("nmb_crops",),
    options_check=_check_options,
    # A bare DDP state dict (or {epoch, state_dict, optimizer[, amp]}): module.<torchvision
    # backbone names>, module.projection_head.{0,1,3}.*, module.prototypes.weight.
    official_keys=(("projection_head.", "projector."), ("prototypes.", "prototypes.")),
    official_dropped=(("queue", "SwAV queue of past embeddings (training state)"),),
)
