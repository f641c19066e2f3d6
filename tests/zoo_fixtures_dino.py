"""DINO's ResNet-50 release rebuilt from the official code, independently of ``e2mc_cli``.

``main_dino.py`` wraps backbone and head in ``utils.MultiCropWrapper`` (``backbone``, ``head``);
the released ResNet-50 head (facebookresearch/dino issues #189, #251) is ``head.mlp`` =
Linear-BatchNorm1d-GELU-Linear to the bottleneck, the L2-normalisation, and ``head.last_layer``,
a Linear without bias whose rows are used normalised (``norm_last_layer``: the public code's
``nn.utils.weight_norm`` with the gain fixed at 1). The full checkpoint is ``main_dino.py``'s
``save_dict``; the backbone-only file a bare torchvision state dict without ``fc``.
"""

from __future__ import annotations

import argparse
import io

import torch
import torch.nn.functional as F
from torch import nn
from zoo_fixtures import Official, backbone_width, official_backbone, prefixed, randomize_


class OfficialDINOHead(nn.Module):
    """``DINOHead`` of the ResNet-50 release: mlp → L2-normalise → weight-normed last layer (g = 1)."""

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.last_layer = nn.Linear(bottleneck, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        w = self.last_layer.weight
        return x @ (w / w.norm(dim=1, keepdim=True)).t()  # weight_norm(dim=0) with weight_g = 1


class MultiCropWrapper(nn.Module):
    """``utils.MultiCropWrapper``: the backbone once per run of equal-resolution crops, the head
    once on all the features."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        sizes = torch.tensor([c.shape[-1] for c in crops])
        ends = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0).tolist()
        start, out = 0, []
        for end in ends:
            out.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        return self.head(torch.cat(out))


def official_dino_loss(student_out, teacher_out, center, ncrops, student_temp, teacher_temp):
    """``DINOLoss.forward`` on the concatenated outputs (``chunk`` per crop)."""
    student = (student_out / student_temp).chunk(ncrops)
    teacher = F.softmax((teacher_out - center) / teacher_temp, dim=-1).detach().chunk(2)
    total, n = 0.0, 0
    for iq, q in enumerate(teacher):
        for v in range(len(student)):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(student[v], dim=-1), dim=-1).mean()
            n += 1
    return total / n


def networks(arch: str, hidden: int, bottleneck: int, out_dim: int) -> tuple[nn.Module, nn.Module]:
    """(student, teacher): two randomised MultiCropWrappers (the teacher an EMA: other values)."""
    width = backbone_width(arch)
    made = []
    for _ in range(2):
        net = MultiCropWrapper(official_backbone(arch), OfficialDINOHead(width, hidden, bottleneck, out_dim))
        made.append(randomize_(net))
    return made[0], made[1]


def _args(out_dim: int) -> argparse.Namespace:
    """The training script's arguments, pickled as main_dino.py does (``'args': args``)."""
    return argparse.Namespace(
        arch="resnet50", out_dim=out_dim, use_bn_in_head=True, norm_last_layer=True, momentum_teacher=0.996,
        optimizer="lars", lr=0.3, weight_decay=1e-6, global_crops_scale=(0.14, 1.0), local_crops_number=6,
    )  # fmt: skip


def _lars_state(student: nn.Module) -> dict:
    """utils.LARS state over get_params_groups(student): regularised, then not (biases, 1-d)."""
    named = list(student.named_parameters())
    regular = [i for i, (n, p) in enumerate(named) if not (n.endswith(".bias") or p.ndim == 1)]
    other = [i for i in range(len(named)) if i not in regular]
    group = {
        "lr": 0.0,
        "momentum": 0.9,
        "eta": 0.001,
        "weight_decay_filter": None,
        "lars_adaptation_filter": None,
    }
    return {
        "state": {i: {"mu": torch.randn_like(p)} for i, (_, p) in enumerate(named)},
        "param_groups": [
            {**group, "weight_decay": 1e-6, "params": regular},
            {**group, "weight_decay": 0.0, "params": other},
        ],
    }


def dino_full(
    arch: str = "resnet-mini",
    hidden: int = 32,
    bottleneck: int = 16,
    out_dim: int = 40,
    epoch: int = 800,
    teacher_prefix: str = "",
    extra: dict | None = None,
) -> Official:
    """``{student, teacher, optimizer, epoch, args, dino_loss}``: the student DDP-wrapped
    (``module.``), the teacher with ``teacher_prefix`` (``""`` as the released file is read,
    ``"module."`` as the public code saves a DDP-wrapped ResNet teacher)."""
    student, teacher = networks(arch, hidden, bottleneck, out_dim)
    center = torch.randn(1, out_dim)
    obj = {
        "student": prefixed("module.", student.state_dict()),
        "teacher": prefixed(teacher_prefix, teacher.state_dict()),
        "optimizer": _lars_state(student),
        "epoch": epoch,
        "args": _args(out_dim),
        "dino_loss": {"center": center},
        **(extra or {}),
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    source = {
        **prefixed("student.", obj["student"]),
        **prefixed("teacher.", obj["teacher"]),
        "dino_loss.center": center,
    }
    return Official(buf.getvalue(), source, {"student": student, "teacher": teacher, "center": center})


def dino_backbone_only(arch: str = "resnet-mini") -> Official:
    """dino_resnet50_pretrain.pth: the evaluated backbone, bare torchvision names, no ``fc``."""
    backbone = randomize_(official_backbone(arch))
    state = dict(backbone.state_dict())
    buf = io.BytesIO()
    torch.save(state, buf)
    return Official(buf.getvalue(), state, {"backbone": backbone})


# The canonical key of each official one (the official names, in the unwrapped container).
CANONICAL_OF = (
    ("student.module.backbone.", "backbone."),
    ("student.module.head.mlp.", "projector."),
    ("student.module.head.last_layer.", "last_layer."),
    ("teacher.module.backbone.", "teacher_backbone."),
    ("teacher.backbone.", "teacher_backbone."),
    ("teacher.module.head.mlp.", "teacher_projector."),
    ("teacher.head.mlp.", "teacher_projector."),
    ("teacher.module.head.last_layer.", "teacher_last_layer."),
    ("teacher.head.last_layer.", "teacher_last_layer."),
    ("dino_loss.", "dino_loss."),
)


def canonical_name(official: str) -> str:
    for prefix, canonical in CANONICAL_OF:
        if official.startswith(prefix):
            return canonical + official[len(prefix) :]
    raise KeyError(official)
