"""DINO's ResNet-50 release as sslboost builds it: the head, the teacher and centre, the views and
the official checkpoint container.

Facts from facebookresearch/dino (``main_dino.py``, ``vision_transformer.py``, ``utils.py``) and
what the released ResNet-50 files hold:

- **Head** (``DINOHead``): an MLP from the 2048-d pooled features to a bottleneck, the
  bottleneck L2-normalised, then a weight-normalised linear layer without bias to ``out_dim``
  logits. The public code builds 3 layers of 2048 with ``nn.utils.weight_norm``; the ResNet-50
  release was trained otherwise: its full checkpoint holds ``head.mlp.{0,1,3}`` — Linear(2048 →
  4096), BatchNorm1d(4096) (``--use_bn_in_head true``), GELU, Linear(4096 → 256) — and a plain
  ``head.last_layer.weight`` of 60000 × 256, not weight-normed (facebookresearch/dino issues
  #189 and #251). ``--norm_last_layer true`` fixes the weight-norm gain at 1, so the layer's
  weight is ``v / ‖v‖`` row by row. sslboost keeps the release's one tensor as
  ``last_layer.weight`` and normalises its rows in the forward pass (:class:`DINOLastLayer`):
  the same function as the public code's weight-normed layer with ``g = 1``, and a canonical
  tensor that round-trips exactly.
- **State** (trained without gradients, carried by the full checkpoint): the teacher, an EMA of
  the student (``teacher_backbone``, ``teacher_projector``, ``teacher_last_layer``, each starting
  as a copy of the student's, as ``teacher_without_ddp.load_state_dict(student.module.state_dict())``),
  and ``DINOLoss``'s buffer ``center`` (1 × ``out_dim``, zeros at the start) as ``dino_loss.center``.
- **Container** (``main_dino.py``'s ``save_dict``): ``{student, teacher, optimizer, epoch, args,
  dino_loss[, fp16_scaler]}``; ``student`` and ``teacher`` are ``MultiCropWrapper`` state dicts
  (``backbone.*``, ``head.mlp.*``, ``head.last_layer.*``) with ``module.`` in front when the
  network was wrapped in DistributedDataParallel (the student always; the teacher of a ResNet
  too in the public code, while loaders of the released teacher read it without ``module.``):
  both are accepted. The backbone-only file ``dino_resnet50_pretrain.pth`` is a bare state dict
  with torchvision names and no ``fc`` (``eval_linear.py`` loads it strictly into a torchvision
  ResNet-50 whose ``fc`` is an identity).
- **Views** (``DataAugmentationDINO``): two global crops (224 px, bicubic) and
  ``local_crops_number`` local crops (96 px, bicubic), each: flip p = 0.5, ColorJitter(0.4, 0.4,
  0.2, 0.1) p = 0.8, grayscale p = 0.2, then Gaussian blur (σ ∈ [0.1, 2]) with p = 1.0 on the first
  global crop, p = 0.1 and solarisation p = 0.2 on the second, p = 0.5 on the local crops;
  normalised with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). The ResNet-50 run:
  6 local crops, global scale (0.14, 1), local scale (0.05, 0.14).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from e2mc_cli.data.transforms import REFERENCE_SIZE
from e2mc_cli.data.views import BLUR_SIGMA, ViewRecipe, crop_scale, scaled_size
from e2mc_cli.errors import UserError
from e2mc_cli.models import Fp32Linear, parse_dims
from e2mc_cli.precision import full_precision

# The ResNet-50 release: head.mlp 2048-4096-256 (with BatchNorm), last layer 256 → 60000.
HEADS = {"mlp": "4096-256", "out_dim": 60000}
VIEW_OPTIONS = {"local_crops_number": 6, "global_crops_scale": (0.14, 1.0), "local_crops_scale": (0.05, 0.14)}
LOCAL_SIZE = 96  # DataAugmentationDINO's local crops, at the 224-px reference
TEACHER = ("teacher_backbone", "teacher_projector", "teacher_last_layer")
STATE_COPIES = tuple(zip(TEACHER, ("backbone", "projector", "last_layer")))
CENTRE = "dino_loss"  # the state module holding DINOLoss's ``center`` buffer


class DINOLastLayer(nn.Module):
    """The end of ``DINOHead``: ``x / ‖x‖`` (the bottleneck L2-normalised), then the linear layer
    ``W`` with each row scaled to unit length (weight norm with the gain fixed at 1,
    ``norm_last_layer``), no bias: ``logits = (x / ‖x‖) (W / ‖W‖_rows)ᵀ``.

    One parameter, ``weight`` (``out_dim × in_dim``), as the ResNet-50 release stores it. Computes
    in float32 under any autocast (the logits are divided by temperatures down to 0.04).
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        layer = nn.Linear(in_dim, out_dim, bias=False)  # nn.Linear's initialisation, as the official layer
        self.weight = nn.Parameter(layer.weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with full_precision(x.device):
            x = F.normalize(x.float(), dim=-1, p=2)
            return F.linear(x, F.normalize(self.weight.float(), dim=1, p=2))


class DINOCentre(nn.Module):
    """``DINOLoss``'s centre of the teacher's logits, a ``1 × out_dim`` buffer (zeros at the start)."""

    def __init__(self, out_dim: int):
        super().__init__()
        self.register_buffer("center", torch.zeros(1, out_dim))


def projector(width: int, dims: Sequence[int]) -> nn.Sequential:
    """``DINOHead.mlp`` with ``use_bn``: (Linear-BN-GELU) per hidden size, then a Linear to the
    bottleneck ``dims[-1]`` (an :class:`~e2mc_cli.models.Fp32Linear`); keys 0, 1, 3, … as the
    official ``nn.Sequential``. Weights truncated-normal with std 0.02, biases 0
    (``DINOHead._init_weights``)."""
    if len(dims) < 2:
        raise UserError(
            f"dino heads mlp {'-'.join(map(str, dims))}: give the hidden size(s) and the bottleneck, "
            "e.g. 4096-256"
        )
    sizes = [int(width), *map(int, dims)]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.GELU()]
    layers.append(Fp32Linear(sizes[-2], sizes[-1]))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def build_heads(width: int, sizes: Mapping[str, object]) -> dict[str, nn.Module]:
    """The student's head: ``projector`` (the MLP to the bottleneck) and ``last_layer``."""
    dims = parse_dims(sizes["mlp"], "dino heads mlp")
    return {"projector": projector(width, dims), "last_layer": DINOLastLayer(dims[-1], int(sizes["out_dim"]))}


def build_state(
    backbone: nn.Module, heads: Mapping[str, nn.Module], sizes: Mapping[str, object]
) -> dict[str, nn.Module]:
    """The teacher (copies of the student's backbone, projector and last layer) and the centre."""
    teacher = [copy.deepcopy(m) for m in (backbone, heads["projector"], heads["last_layer"])]
    return {**dict(zip(TEACHER, teacher)), CENTRE: DINOCentre(int(sizes["out_dim"]))}


def read_heads(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """``{"mlp": "4096-256", "out_dim": 60000}`` read off the student's tensors."""
    layers = sorted(
        int(k.split(".")[1])
        for k, v in state_dict.items()
        if k.startswith("projector.") and k.endswith(".weight") and v.ndim == 2
    )
    if not layers:
        raise KeyError("projector.0.weight")
    mlp = "-".join(str(state_dict[f"projector.{i}.weight"].shape[0]) for i in layers)
    return {"mlp": mlp, "out_dim": state_dict["last_layer.weight"].shape[0]}


def scaled_heads(width: int) -> dict:
    """Hidden 2w, bottleneck w/8 and 60000·w/2048 outputs (4096-256 and 60000 on ResNet-50)."""
    return {"mlp": f"{2 * width}-{max(1, width // 8)}", "out_dim": max(10, round(60000 * width / 2048))}


def check_options(options: Mapping[str, object]) -> None:
    """``local_crops_number`` is a count of crops (an integer ≥ 0); else a UserError."""
    n = options["local_crops_number"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserError(f"dino local_crops_number must be an integer ≥ 0, got {n!r}")


def dino_recipes(
    px: int, local_crops_number: int, global_crops_scale: Sequence[float], local_crops_scale: Sequence[float]
) -> list[ViewRecipe]:
    """``DataAugmentationDINO``'s crops, global ones first: 2 × ``px`` and ``local_crops_number`` ×
    round(96 · px / 224); the blur's σ range scales with ``px`` as every method's does."""
    check_options({"local_crops_number": local_crops_number})
    f = px / REFERENCE_SIZE
    common = dict(
        interpolation="bicubic",
        jitter=(0.4, 0.4, 0.2, 0.1),
        blur_sigma=(BLUR_SIGMA[0] * f, BLUR_SIGMA[1] * f),
    )
    glob = crop_scale(global_crops_scale, "views.global_crops_scale")
    local = crop_scale(local_crops_scale, "views.local_crops_scale")
    first = ViewRecipe(size=px, scale=glob, blur_p=1.0, **common)
    second = ViewRecipe(size=px, scale=glob, blur_p=0.1, solarize_p=0.2, **common)
    small = ViewRecipe(size=scaled_size(LOCAL_SIZE, px), scale=local, blur_p=0.5, **common)
    return [first, second] + [small] * int(local_crops_number)


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def official_unwrap(obj) -> dict | None:
    """``main_dino.py``'s ``{student, teacher, dino_loss, …}`` as a common container: one flat state
    dict of ``student.<key>``, ``teacher.<key>`` (``module.`` dropped) and ``dino_loss.center``,
    beside the other entries unchanged (``epoch`` kept; ``optimizer``, ``args``, ``fp16_scaler``
    dropped by the conversion, anything else refused); ``None`` for any other object."""
    if not isinstance(obj, Mapping) or not all(
        isinstance(obj.get(k), Mapping) for k in ("student", "teacher")
    ):
        return None
    flat: dict[str, object] = {}
    for part in ("student", "teacher"):
        for key, value in obj[part].items():
            name = f"{part}.{_strip_module(str(key))}"
            if name in flat:
                raise UserError(f"{part}: {key} appears with and without its module. prefix")
            flat[name] = value
    rest = {k: v for k, v in obj.items() if k not in ("student", "teacher", "dino_loss")}
    loss = obj.get("dino_loss")
    if isinstance(loss, Mapping):
        flat.update({f"{CENTRE}.{k}": v for k, v in loss.items()})
    elif "dino_loss" in obj:
        rest["dino_loss"] = loss  # not DINOLoss's state dict: the conversion names it foreign
    return {"state_dict": flat, **rest}


# (official prefix in the unwrapped state dict, canonical prefix), first match wins.
OFFICIAL_KEYS = (
    ("student.backbone.", "backbone."),
    ("student.head.mlp.", "projector."),
    ("student.head.last_layer.", "last_layer."),
    ("teacher.backbone.", "teacher_backbone."),
    ("teacher.head.mlp.", "teacher_projector."),
    ("teacher.head.last_layer.", "teacher_last_layer."),
    (f"{CENTRE}.", f"{CENTRE}."),
)
