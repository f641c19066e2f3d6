"""MoCo v3 as a method module: its symmetric contrastive loss against a momentum encoder, the
momentum schedule, its asymmetric views and its spec (projector, predictor, momentum encoder).

Every fact is read off the official code, facebookresearch/moco-v3: ``moco/builder.py``
(``MoCo``, ``MoCo_ResNet``, ``concat_all_gather``), ``main_moco.py`` (views, AMP, LARS,
``adjust_moco_momentum``) and ``CONFIG.md`` (the ResNet-50 releases' commands).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from e2mc_cli.data.transforms import REFERENCE_SIZE
from e2mc_cli.data.views import BLUR_SIGMA, ViewRecipe, crop_scale
from e2mc_cli.distributed import concat_all_gather, rank
from e2mc_cli.methods.base import Method, MethodOutput, check_views
from e2mc_cli.methods.functional import momentum_update_
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.models import SSLModel, mlp
from e2mc_cli.precision import full_precision

# -- the pure math ---------------------------------------------------------------------------------


def cosine_momentum(progress: float, base: float) -> float:
    """The momentum at ``progress`` ∈ [0, 1] of the run, ``main_moco.py``'s
    ``adjust_moco_momentum`` (``--moco-m-cos``): ``m = 1 − ½ (1 + cos(π · progress)) · (1 − base)``,
    ``base`` at the start, 1 at the end. The official code's progress is
    ``(epoch + i / iters_per_epoch) / epochs``, i.e. ``step / total_steps``."""
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - base)


def contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``MoCo.contrastive_loss`` of ``moco/builder.py``, in float32::

        q̂ = q / ‖q‖,  k̂ = k / ‖k‖ (rows),  K = concat_all_gather(k̂)      (M = world · N rows)
        ctr(q, k) = 2τ · mean_i CE(q̂_i Kᵀ / τ, rank · N + i)

    Each of the process's N queries has its own key, row ``rank · N + i`` of the gathered keys,
    as the positive, and every other process's keys too as negatives. The keys get no gradient.
    """
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(
            f"contrastive_loss needs two n × d tensors of one shape, "
            f"got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    q = F.normalize(q.float(), dim=1)
    keys = concat_all_gather(F.normalize(k.float(), dim=1))
    logits = q @ keys.T / temperature
    n = q.shape[0]
    labels = torch.arange(n, device=q.device) + n * rank()
    return F.cross_entropy(logits, labels) * (2 * temperature)


def mocov3_loss(
    q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MoCo v3's symmetric loss (``MoCo.forward``): ``ctr(q1, k2) + ctr(q2, k1)``
    (:func:`contrastive_loss`), each view's queries against the other view's keys.

    Under a process group it is the loss of this process's queries (a mean over them) against
    every process's keys, as the official code: the mean over processes is the loss of the whole
    batch, and a query's gradient is ``world_size`` × that of one process holding the whole batch,
    which DistributedDataParallel's averaging divides back. Returns ``(loss, terms)`` with the two
    halves (detached).
    """
    l12 = contrastive_loss(q1, k2, temperature)
    l21 = contrastive_loss(q2, k1, temperature)
    return l12 + l21, {"ctr_12": l12.detach(), "ctr_21": l21.detach()}


# -- the method ------------------------------------------------------------------------------------


class MoCoV3(Method):
    """MoCo v3 (Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision
    Transformers", ICCV 2021, https://arxiv.org/abs/2104.02057), ResNet-50 as ``moco/builder.py``'s
    ``MoCo_ResNet``.

    Each view goes through the backbone and the projector (the base encoder's ``fc``, 2048-4096-256)
    to ``z`` and the predictor (256-4096-256) to the query ``q``; the momentum encoder (the
    state modules ``momentum_backbone`` + ``momentum_projector``, an EMA of backbone + projector)
    gives the keys ``k`` without gradient. The loss is ``ctr(q1, k2) + ctr(q2, k1)``
    (:func:`mocov3_loss`, τ = 1.0 for ResNet: ``--moco-t`` default, which CONFIG.md's ResNet-50
    commands keep). As the official ``forward``, the momentum encoder is updated
    (:func:`momentum_update_`, parameters only: its BatchNorm statistics are its own) *before* it
    computes the keys, with the current momentum; that happens in training mode only.

    Momentum: ``momentum`` (``--moco-m``) raised to 1 over the run by a half-cycle cosine
    (:func:`cosine_momentum`) when ``momentum_cosine`` (``--moco-m-cos``, set by every ResNet-50
    command of CONFIG.md), from the step and the run's total steps (:meth:`on_train_start`,
    :meth:`on_step_start`); without them (benchmarks) it stays at ``momentum``. A continuation runs
    the schedule over its own steps, from ``momentum`` again, not from the momentum the base ended
    at (1 − 1e-13 after the 1000-epoch run's last step): at 1 the momentum encoder stays frozen at
    the base's weights and the keys never follow what the criterion changes (a fixed teacher,
    another method), while the E2MC paper continues each family with its own recipe restarted at
    a reduced learning rate rather than the ≈ 0 its cosine ended at; the cosine still brings the
    momentum to 1 by the end of the continuation. ``momentum_cosine = false`` keeps ``momentum``
    constant (e.g. 0.9999 for a slow teacher).

    An add-on criterion sees the projector outputs ``z1, z2`` (256-d, with gradients, before the
    predictor) in space ``"hypersphere"``: the loss compares L2-normalised queries and keys. ``z``
    is the embedding the momentum encoder mirrors (the keys are the momentum projector's outputs),
    while the predictor is an online-only map onto the keys, so ``z`` is where the representation
    both branches share lives, as SimSiam's ``z`` before its predictor is in the E2MC paper; ``z``
    leaves a BatchNorm without affine, each dimension standardised over the batch, which suits the
    Gaussian-CDF map Ψ of the hypersphere space.
    """

    name = "mocov3"
    space = "hypersphere"

    def __init__(
        self,
        model: SSLModel,
        temperature: float = 1.0,
        momentum: float = 0.99,
        momentum_cosine: bool = True,
    ):
        super().__init__(model)
        needed = ("predictor", "momentum_backbone", "momentum_projector")
        missing = [n for n in needed if n not in (*model.head_names, *model.state_names)]
        if missing:
            raise ValueError(f"MoCo v3 needs a model with {', '.join(missing)}")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.momentum_cosine = bool(momentum_cosine)
        self.current_momentum = self.momentum
        self._total_steps = 0

    # -- hooks ------------------------------------------------------------------------------
    def on_train_start(self, total_steps: int, steps_per_epoch: int) -> None:
        """Note the run's total steps (the cosine momentum schedule's length)."""
        self._total_steps = int(total_steps)

    def on_step_start(self, step: int, epoch: int) -> None:
        """The momentum of global step ``step`` (:func:`cosine_momentum` of ``step / total``)."""
        if self.momentum_cosine and self._total_steps > 0:
            self.current_momentum = cosine_momentum(step / self._total_steps, self.momentum)

    # -- the momentum encoder ------------------------------------------------------------------
    def _pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        m = self.model
        target = [*m.momentum_backbone.parameters(), *m.momentum_projector.parameters()]
        online = [*m.backbone.parameters(), *m.projector.parameters()]
        return target, online

    def update_momentum_encoder(self, m: float) -> None:
        """The official EMA step over the backbone's and the projector's parameters."""
        momentum_update_(*self._pairs(), m)

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """The momentum encoder's output for ``x`` (no gradient)."""
        with torch.no_grad():
            return self.model.momentum_projector(self.model.momentum_backbone(x))

    # -- forward ----------------------------------------------------------------------------
    def forward(self, images: list[torch.Tensor]) -> MethodOutput:
        check_views(images, 2, "MoCo v3")
        m = self.model
        z1 = m.projector(m.backbone(images[0]))
        z2 = m.projector(m.backbone(images[1]))
        q1, q2 = m.predictor(z1), m.predictor(z2)
        if self.training:
            self.update_momentum_encoder(self.current_momentum)
        k1, k2 = self.keys(images[0]), self.keys(images[1])
        with full_precision(z1.device):
            loss, terms = mocov3_loss(q1, q2, k1, k2, self.temperature)
        terms["momentum"] = loss.new_full((), self.current_momentum).detach()  # a fill: no copy from the host
        views = [z1, z2]
        return MethodOutput(loss, terms, views, self.space, views)


# -- views, heads, state, spec --------------------------------------------------------------------


def mocov3_recipes(px: int, scale: Sequence[float]) -> list[ViewRecipe]:
    """``main_moco.py``'s two views ("follow BYOL's augmentation recipe"), each in the official
    order: RandomResizedCrop(224, scale (crop_min, 1), bilinear, the torchvision default),
    ColorJitter(0.4, 0.4, 0.2, 0.1) p = 0.8, grayscale p = 0.2, Gaussian blur σ ∈ [0.1, 2]
    (``moco/loader.py``), solarisation (PIL ``ImageOps.solarize``, threshold 128), then the flip;
    ``augmentation1`` blurs with p = 1.0 and never solarises, ``augmentation2`` blurs with p = 0.1
    and solarises with p = 0.2. ImageNet mean and std (0.229, 0.224, 0.225). At ``px`` pixels
    the blur's σ range scales by ``px / 224``."""
    f = px / REFERENCE_SIZE
    common = dict(
        size=px,
        scale=crop_scale(scale),
        interpolation="bilinear",
        flip_last=True,
        jitter=(0.4, 0.4, 0.2, 0.1),
        jitter_p=0.8,
        grayscale_p=0.2,
        blur_sigma=(BLUR_SIGMA[0] * f, BLUR_SIGMA[1] * f),
    )
    return [ViewRecipe(**common, blur_p=1.0), ViewRecipe(**common, blur_p=0.1, solarize_p=0.2)]


def _heads(width: int, sizes: Mapping[str, object]) -> dict[str, nn.Module]:
    """``MoCo._build_mlp`` without biases: projector ``_build_mlp(2, width, mlp_dim, dim)``
    Linear-BN-ReLU-Linear-BN(affine=False), keys 0, 1, 3, 4; predictor
    ``_build_mlp(2, dim, mlp_dim, dim, last_bn=False)`` Linear-BN-ReLU-Linear, keys 0, 1, 3."""
    dim, hidden = int(sizes["dim"]), int(sizes["mlp_dim"])
    return {
        "projector": mlp([width, hidden, dim], hidden_bias=False, out_bias=False, out_norm=True),
        "predictor": mlp([dim, hidden, dim], hidden_bias=False, out_bias=False),
    }


def _state(
    backbone: nn.Module, heads: Mapping[str, nn.Module], sizes: Mapping[str, object]
) -> dict[str, nn.Module]:
    """The momentum encoder: copies of backbone and projector, as ``MoCo.__init__`` starts it
    (``param_m.data.copy_(param_b.data)``)."""
    return {
        "momentum_backbone": copy.deepcopy(backbone),
        "momentum_projector": copy.deepcopy(heads["projector"]),
    }


def _read_heads(state_dict: Mapping[str, torch.Tensor]) -> dict:
    if "predictor.0.weight" not in state_dict:
        raise KeyError("predictor.0.weight")  # a model without its predictor is incomplete
    return {
        "dim": state_dict["projector.3.weight"].shape[0],
        "mlp_dim": state_dict["projector.0.weight"].shape[0],
    }


def _scaled_heads(width: int) -> dict:
    """Hidden 2w, output w/8 (4096 and 256 on ResNet-50)."""
    return {"dim": max(width // 8, 1), "mlp_dim": 2 * width}


SPEC = MethodSpec(
    method=MoCoV3,
    display_name="MoCo v3",
    heads={"dim": 256, "mlp_dim": 4096},  # --moco-dim, --moco-mlp-dim
    head_builder=_heads,
    head_reader=_read_heads,
    head_scaler=_scaled_heads,
    view_builder=mocov3_recipes,
    # --crop-min: 0.08 is the argparse default, 0.2 what every ResNet-50 command of CONFIG.md sets
    view_options={"scale": (0.2, 1.0)},
    paper="mocov3",
    code="https://github.com/facebookresearch/moco-v3",
    licence="cc-by-nc-4.0",
    licence_name="CC-BY-NC 4.0",
    recipes="mocov3",
    state_builder=_state,
    state_copies=(("momentum_backbone", "backbone"), ("momentum_projector", "projector")),
    # {epoch, arch, state_dict, optimizer, scaler} (main_moco.py save_checkpoint; the releases hold
    # optimizer and scaler as None): module.base_encoder.* a torchvision ResNet whose fc is the
    # projector (fc.{0,1,3,4}), module.momentum_encoder.* its EMA copy, module.predictor.{0,1,3}.*.
    # First match wins: the fc prefixes before the encoders.
    official_keys=(
        ("base_encoder.fc.", "projector."),
        ("momentum_encoder.fc.", "momentum_projector."),
        ("predictor.", "predictor."),
        ("momentum_encoder.", "momentum_backbone."),
        ("base_encoder.", "backbone."),
    ),
)
