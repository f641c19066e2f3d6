"""MoCo v3 test helpers: the official ResNet model written out from facebookresearch/moco-v3's
``moco/builder.py`` (``MoCo._build_mlp``, ``MoCo_ResNet``) independently of ``e2mc_cli.models``,
and a file in the official layout of ``main_moco.py``'s ``save_checkpoint``."""

from __future__ import annotations

import io

import torch
from torch import nn
from zoo_fixtures import Official, backbone_width, official_backbone, prefixed, randomize_

# The official container's other entries: a GradScaler.state_dict() of a CUDA fp16 run.
SCALER = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
          "_growth_tracker": 17}  # fmt: skip


def build_mlp(num_layers: int, input_dim: int, mlp_dim: int, output_dim: int, last_bn: bool = True):
    """``MoCo._build_mlp``: bias-free Linear layers; BN + ReLU after each hidden one; a final
    BatchNorm without affine when ``last_bn``."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = input_dim if i == 0 else mlp_dim
        d_out = output_dim if i == num_layers - 1 else mlp_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


def encoder(arch: str, dim: int, mlp_dim: int) -> nn.Module:
    """A ResNet whose ``fc`` is the 2-layer projector
    (``MoCo_ResNet._build_projector_and_predictor_mlps``)."""
    model = official_backbone(arch)
    model.fc = build_mlp(2, backbone_width(arch), mlp_dim, dim)
    return randomize_(model)


def without_fc(model: nn.Module, arch: str) -> nn.Module:
    """The backbone of an encoder: the same tensors but the ``fc``."""
    backbone = official_backbone(arch)
    backbone.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    return backbone.eval()


def lars_state(params: list[torch.Tensor], trained: list[bool]) -> dict:
    """``moco/optimizer.py`` LARS's state dict over ``model.parameters()``: a momentum ``mu`` for
    each parameter that had gradients (not the momentum encoder's)."""
    return {
        "state": {i: {"mu": torch.randn_like(p)} for i, (p, t) in enumerate(zip(params, trained)) if t},
        "param_groups": [
            {
                "lr": 4.8,
                "weight_decay": 1.5e-6,
                "momentum": 0.9,
                "trust_coefficient": 0.001,
                "params": list(range(len(params))),
            }
        ],
    }


def mocov3_checkpoint(
    arch: str = "resnet-mini",
    dim: int = 16,
    mlp_dim: int = 32,
    epoch: int = 1000,
    momentum_encoder: bool = True,
    solver: bool = False,
) -> Official:
    """``{epoch, arch, state_dict, optimizer, scaler}``: ``module.base_encoder.*`` (fc = projector),
    ``module.momentum_encoder.*`` (other values than the base encoder's, as after training),
    ``module.predictor.*``; without ``momentum_encoder`` that part is left out of the file. The
    released files hold ``optimizer`` and ``scaler`` as ``None`` (users of the releases report a
    ``TypeError`` on ``None`` when ``main_moco.py --resume`` loads them); with ``solver`` they hold
    a LARS state and a scaler state, as a checkpoint ``main_moco.py`` writes during training."""
    base = encoder(arch, dim, mlp_dim)
    momentum = encoder(arch, dim, mlp_dim)
    predictor = randomize_(build_mlp(2, dim, mlp_dim, dim, last_bn=False))
    parts = [
        ("base_encoder", base, True),
        ("momentum_encoder", momentum, False),
        ("predictor", predictor, True),
    ]
    if not momentum_encoder:
        parts = [p for p in parts if p[0] != "momentum_encoder"]
    state = {}
    for name, module, _ in parts:
        state.update(prefixed(f"module.{name}.", module.state_dict()))
    named = [(f"module.{n}.{k}", p, t) for n, m, t in parts for k, p in m.named_parameters()]
    optimizer = lars_state([p for _, p, _ in named], [t for _, _, t in named])
    buf = io.BytesIO()
    solvers = {"optimizer": optimizer, "scaler": SCALER} if solver else {"optimizer": None, "scaler": None}
    container = {"epoch": epoch, "arch": arch, "state_dict": state, **solvers}
    torch.save(container, buf)
    modules = {
        "backbone": without_fc(base, arch),
        "projector": base.fc,
        "predictor": predictor,
        "momentum_backbone": without_fc(momentum, arch),
        "momentum_projector": momentum.fc,
    }
    return Official(buf.getvalue(), state, modules, optimizer, [n for n, _, _ in named])


def expected_source_key(canonical: str) -> str:
    """The official key of each canonical MoCo v3 key."""
    module, rest = canonical.split(".", 1)
    return {
        "backbone": f"module.base_encoder.{rest}",
        "projector": f"module.base_encoder.fc.{rest}",
        "predictor": f"module.predictor.{rest}",
        "momentum_backbone": f"module.momentum_encoder.{rest}",
        "momentum_projector": f"module.momentum_encoder.fc.{rest}",
    }[module]
