"""Backbones: torchvision ResNets (names and shapes as the official checkpoints) and a small
CPU-sized ResNet for the built-in Fashion-MNIST bases.

Every backbone has torchvision's parameter names, its ``fc`` replaced by ``nn.Identity`` (so a
state dict has no ``fc.*``), and an attribute ``num_features`` (width of the pooled feature).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from e2mc_cli.errors import UserError


def _torchvision_resnet(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        model = getattr(torchvision.models, name)(weights=None)
        model.num_features = model.fc.in_features
        model.fc = nn.Identity()
        return model

    return build


class MiniResNet(nn.Module):
    """A four-stage ResNet of BasicBlocks with torchvision's parameter names, for small images.

    Stem: 3×3 convolution, stride 1, no max-pool (28–32 px inputs keep their resolution);
    stages of one BasicBlock each with widths ``widths`` and strides 1, 2, 2, 2.
    With the default widths (16, 32, 64, 128): 0.31 M parameters, 12.6 MFLOPs (multiply-adds)
    per 28 × 28 image, 128-d features.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 64, 128), blocks: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        inplanes = widths[0]
        for i, (planes, stride) in enumerate(zip(widths, (1, 2, 2, 2)), start=1):
            layers = []
            for b in range(blocks):
                s = stride if b == 0 else 1
                downsample = None
                if s != 1 or inplanes != planes:
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes, kernel_size=1, stride=s, bias=False),
                        nn.BatchNorm2d(planes),
                    )
                layers.append(BasicBlock(inplanes, planes, stride=s, downsample=downsample))
                inplanes = planes
            setattr(self, f"layer{i}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()
        self.num_features = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "resnet50": _torchvision_resnet("resnet50"),
    "resnet18": _torchvision_resnet("resnet18"),
    "resnet-mini": MiniResNet,
}


def build_backbone(arch: str) -> nn.Module:
    """Build a backbone by registry name, ``fc`` removed."""
    if arch not in BACKBONES:
        raise UserError(f"unknown architecture {arch!r}; expected one of: {', '.join(BACKBONES)}")
    return BACKBONES[arch]()
