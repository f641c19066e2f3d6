"""DINO as a method module: self-distillation from an EMA teacher with centring, temperature and
momentum schedules, multi-crop; its pure loss functions and its spec.

Facts from facebookresearch/dino ``main_dino.py`` (``DINOLoss``, ``train_one_epoch``,
``train_dino``) and ``utils.py`` (``cosine_scheduler``, ``cancel_gradients_last_layer``,
``MultiCropWrapper``); the architecture, release layout and views are in
:mod:`e2mc_cli.methods.dino_heads`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from e2mc_cli.distributed import is_distributed, world_size
from e2mc_cli.methods import dino_heads as H
from e2mc_cli.methods.base import Method, MethodOutput, check_views, resolution_groups
from e2mc_cli.methods.functional import momentum_update_
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.models import SSLModel
from e2mc_cli.precision import full_precision


def teacher_temperature(epoch: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """``DINOLoss.teacher_temp_schedule[epoch]``: ``np.linspace(warmup_temp, temp, warmup_epochs)``
    over the first ``warmup_epochs`` epochs (both ends included), then ``temp``."""
    if epoch >= warmup_epochs:
        return float(temp)
    if warmup_epochs == 1:
        return float(warmup_temp)
    return float(warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1))


def teacher_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """``utils.cosine_scheduler(base, final, …)[step]`` without warm-up, the teacher's EMA
    momentum: ``final + ½ (base − final)(1 + cos(π · step / total_steps))``."""
    return float(final + 0.5 * (base - final) * (1 + math.cos(math.pi * step / total_steps)))


def dino_loss(
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    center: torch.Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.07,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``DINOLoss.forward`` (Caron et al., ICCV 2021, Algorithm 1)::

        q_i = softmax((t_i − c) / τ_t)          for the teacher's logits t_i of the global crops
        L = mean over pairs (i, v ≠ i) of  mean_b −Σ_k q_i,bk · log softmax(s_v,b / τ_s)_k

    ``student[v]`` (B × K) are the student's logits of crop ``v`` (global crops first),
    ``teacher[i]`` the teacher's of global crop ``i`` (detached here), ``c`` the centre (1 × K).
    Computes in float32. Returns ``(loss, terms)``; ``terms["teacher_entropy"]`` is the mean
    entropy of the teacher's distributions (0 when they collapse onto one output, log K uniform).
    """
    if len(teacher) < 1 or len(student) < 2:
        raise ValueError("dino_loss needs the teacher's global crops and at least 2 student crops")
    with torch.no_grad():
        q = [F.softmax((t.detach().float() - center.float()) / teacher_temp, dim=-1) for t in teacher]
        entropy = torch.stack([-(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1).mean() for p in q]).mean()
    log_p = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student]
    total, terms = log_p[0].new_zeros(()), 0
    for i, qi in enumerate(q):
        for v, lp in enumerate(log_p):
            if v == i:  # the student and the teacher see the same view
                continue
            total = total + torch.sum(-qi * lp, dim=-1).mean()
            terms += 1
    return total / terms, {"teacher_entropy": entropy}


@torch.no_grad()
def updated_center(center: torch.Tensor, teacher: torch.Tensor, momentum: float = 0.9) -> torch.Tensor:
    """``DINOLoss.update_center``: ``c ← m·c + (1 − m)·mean(teacher logits)``, the mean over the
    rows of ``teacher`` (every global crop of the batch) of all processes (an all-reduce of the
    sum, divided by the global count, as the official code)."""
    batch = teacher.detach().float().sum(dim=0, keepdim=True)
    if is_distributed():
        dist.all_reduce(batch)
    batch = batch / (teacher.shape[0] * world_size())
    return center * momentum + batch * (1 - momentum)


class DINO(Method):
    """DINO: self-DIstillation with NO labels (Caron et al., ICCV 2021,
    https://arxiv.org/abs/2104.14294), ResNet-50 as its official release.

    The student (backbone, ``projector`` MLP to a 256-d bottleneck, :class:`~e2mc_cli.methods.
    dino_heads.DINOLastLayer` to ``out_dim`` logits) sees every crop, its backbone once per
    resolution (``MultiCropWrapper``); the teacher — an EMA of the student, the state modules
    ``teacher_*`` — sees the two global crops, under no gradient. The loss is
    :func:`dino_loss` at the student temperature 0.1 and the teacher temperature of
    :func:`teacher_temperature` (epoch of this run), then the centre ``dino_loss.center`` moves
    (:func:`updated_center`). After each optimiser step the teacher's parameters move to
    ``m·teacher + (1 − m)·student`` with ``m`` from :func:`teacher_momentum` over the run's
    steps (``on_train_start``; without it, ``m = momentum_teacher`` at every step). The teacher's
    BatchNorm statistics are its own, from its forward passes, as the official code (which EMAs
    parameters only). The last layer's gradients are dropped while the epoch is below
    ``freeze_last_layer`` (``cancel_gradients_last_layer``).

    An add-on criterion sees the 256-d bottleneck *before* its L2-normalisation, for the two
    global crops (every crop in ``all_embeddings``), in space ``"hypersphere"``: DINO compares
    directions only — the head normalises the bottleneck and the weight-normed last layer scores
    it by cosine against ``out_dim`` unit vectors, as SwAV's prototypes score its 128-d head output
    (whose pre-normalisation output the E2MC paper regularises) — so DINO belongs to the paper's
    normalising family, whose embeddings the criterion squashes with the Gaussian CDF.

    In a continuation (the ``dino-*`` recipes) the schedules that count epochs from the start of
    the base run are past their end — the teacher temperature is 0.07 from the first step
    (``warmup_teacher_temp_epochs = 0``) and no layer is frozen (``freeze_last_layer = 0``) —
    while the teacher momentum's cosine runs again from 0.996 to 1 over the continuation's steps:
    held at the base's final value 1 the teacher would not move at all. The canonical ``backbone``
    is the student's, the network training changes and sslboost exports and evaluates; DINO's own
    evaluations take the teacher's (``--checkpoint_key teacher``), kept as ``teacher_backbone``.
    """

    name = "dino"
    space = "hypersphere"

    def __init__(
        self,
        model: SSLModel,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 50,
        center_momentum: float = 0.9,
        momentum_teacher: float = 0.996,
        freeze_last_layer: int = 1,
        local_crops_number: int = 6,
    ):
        super().__init__(model)
        missing = [m for m in (*H.TEACHER, H.CENTRE, "last_layer") if not hasattr(model, m)]
        if missing:
            raise ValueError(f"DINO needs a model with {', '.join(missing)}")
        temps = (student_temp, teacher_temp, warmup_teacher_temp)
        if not all(float(t) > 0 for t in temps):
            raise ValueError("temperatures must be positive")
        if not (0 <= float(center_momentum) <= 1 and 0 <= float(momentum_teacher) <= 1):
            raise ValueError("center_momentum and momentum_teacher must lie in [0, 1]")
        if int(warmup_teacher_temp_epochs) < 0 or int(freeze_last_layer) < 0:
            raise ValueError("warmup_teacher_temp_epochs and freeze_last_layer must be ≥ 0")
        H.check_options({"local_crops_number": local_crops_number})
        self.student_temp, self.teacher_temp = float(student_temp), float(teacher_temp)
        self.warmup_teacher_temp = float(warmup_teacher_temp)
        self.warmup_teacher_temp_epochs = int(warmup_teacher_temp_epochs)
        self.center_momentum, self.momentum_teacher = float(center_momentum), float(momentum_teacher)
        self.freeze_last_layer, self.local_crops_number = int(freeze_last_layer), int(local_crops_number)
        self._epoch = 0
        self._total_steps: int | None = None

    # -- schedules ---------------------------------------------------------------------------
    def on_train_start(self, total_steps: int, steps_per_epoch: int) -> None:
        """The teacher momentum's cosine runs over this run's ``total_steps``."""
        self._total_steps = int(total_steps)

    def on_step_start(self, step: int, epoch: int) -> None:
        self._epoch = int(epoch)

    def current_teacher_temp(self) -> float:
        return teacher_temperature(
            self._epoch, self.warmup_teacher_temp, self.teacher_temp, self.warmup_teacher_temp_epochs
        )

    def momentum_at(self, step: int) -> float:
        """The EMA momentum after optimiser step ``step``: the cosine schedule over the run, or
        ``momentum_teacher`` when no run length was given."""
        if not self._total_steps:
            return self.momentum_teacher
        return teacher_momentum(step, self._total_steps, self.momentum_teacher)

    # -- hooks -------------------------------------------------------------------------------
    def on_after_backward(self, step: int) -> None:
        """Drop the last layer's gradients (``None``: no momentum, no weight decay) while the epoch
        is below ``freeze_last_layer``, as ``utils.cancel_gradients_last_layer``."""
        if self._epoch < self.freeze_last_layer:
            for p in self.model.last_layer.parameters():
                p.grad = None

    @torch.no_grad()
    def on_after_step(self, step: int) -> None:
        """``teacher ← m·teacher + (1 − m)·student`` for every parameter (buffers are the teacher's own)."""
        m = self.momentum_at(step)
        for teacher, student in H.STATE_COPIES:
            online = getattr(self.model, student).parameters()
            momentum_update_(getattr(self.model, teacher).parameters(), online, m)

    # -- forward -----------------------------------------------------------------------------
    def forward(self, images: list[torch.Tensor]) -> MethodOutput:
        check_views(images, 2 + self.local_crops_number, "DINO")
        bs, m = images[0].shape[0], self.model
        feats = torch.cat([m.backbone(torch.cat(images[a:b])) for a, b in resolution_groups(images)])
        h = m.projector(feats)  # every crop's bottleneck, before L2-normalisation (float32)
        student = m.last_layer(h)
        with torch.no_grad():
            teacher = m.teacher_last_layer(m.teacher_projector(m.teacher_backbone(torch.cat(images[:2]))))
        temp = self.current_teacher_temp()
        centre = m.dino_loss.center
        with full_precision(h.device):
            loss, terms = dino_loss(
                list(student.split(bs)), list(teacher.split(bs)), centre, self.student_temp, temp
            )
            centre.copy_(updated_center(centre, teacher, self.center_momentum))
        terms["teacher_temp"] = loss.new_tensor(temp).detach()
        crops = list(h.split(bs))
        return MethodOutput(loss, terms, crops[:2], self.space, crops)


SPEC = MethodSpec(
    method=DINO,
    display_name="DINO",
    heads=H.HEADS,
    head_builder=H.build_heads,
    head_reader=H.read_heads,
    head_scaler=H.scaled_heads,
    view_builder=H.dino_recipes,
    view_options=H.VIEW_OPTIONS,
    paper="dino",
    code="https://github.com/facebookresearch/dino",
    licence="apache-2.0",
    licence_name="Apache 2.0",
    recipes="dino",
    backbone_calls="resolution",
    shared_view_options=("local_crops_number",),
    options_check=H.check_options,
    official_keys=H.OFFICIAL_KEYS,
    state_builder=H.build_state,
    state_copies=H.STATE_COPIES,
    official_unwrap=H.official_unwrap,
)
