"""Images reach the backbone in channels_last, and the features are those of the plain layout."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from e2mc_cli.evaluate.features import extract_features
from e2mc_cli.models.memory_format import images_to


def test_a_batch_of_images_is_moved_into_channels_last_with_the_same_values():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    y = images_to(x, "cpu")
    assert y.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(
        memory_format=torch.channels_last
    )
    assert y.stride() == (60, 1, 15, 3)  # NHWC: the channel varies fastest
    assert torch.equal(y, x)


def test_a_tensor_that_is_not_a_batch_of_images_is_only_moved():
    for x in (torch.randn(4, 7), torch.randn(3, 4, 5)):
        y = images_to(x, "cpu")
        assert y.stride() == x.stride() and torch.equal(y, x)


class Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 3


def test_extracted_features_are_the_contiguous_forward_pass_up_to_rounding():
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip
    backbone.eval()
    images = torch.randn(10, 3, 12, 12)
    with torch.inference_mode():
        expected = backbone(images)  # the layout the images come in
    layouts = []
    backbone.register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    feats, labels = extract_features(backbone, Images(images), np.arange(10), lambda x: x, batch_size=4)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-6)
    assert layouts == [True, True, True]  # three batches, each in channels_last
    assert labels.tolist() == [i % 3 for i in range(10)]
    assert next(backbone.parameters()).is_contiguous()  # the caller's model is left as it was
