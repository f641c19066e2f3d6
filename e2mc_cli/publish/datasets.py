"""The Hub's names for the datasets a run is trained and evaluated on, and for the split an
evaluation measured: what a model card's ``datasets:``, ``model-index`` and results table say.

The split is never guessed from a folder name: an evaluation on the data's own evaluation split
(``eval.json``'s ``dataset.evaluated_on`` is ``val``) names that split as the Hub dataset does
(Fashion-MNIST's ``test``, ImageNet-1k's ``validation``, the one every paper reports); an
evaluation on images held out from the training split (``sslboost eval --holdout N``) is a
validation figure and says so, naming the held-out images, so it cannot pass for a test figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HubDataset:
    """A dataset as the Hub knows it: repository id, display name and its evaluation split."""

    repo_id: str | None  # None: not a Hub dataset (a folder of the user's)
    name: str
    eval_split: str


FASHION_MNIST = HubDataset("zalando-datasets/fashion_mnist", "Fashion-MNIST", "test")
IMAGENET = HubDataset("ILSVRC/imagenet-1k", "ImageNet-1k", "validation")

# The datasets `sslboost eval` and `continue` read by name.
HUB_DATASETS: dict[str, HubDataset] = {
    "fmnist": FASHION_MNIST,
    "fashion-mnist": FASHION_MNIST,
    "imagenet": IMAGENET,
}

HELD_OUT_SPLIT = "validation"  # what a --holdout evaluation measured


def hub_dataset(dataset: str) -> HubDataset:
    """The Hub dataset of a data spec (a name or a folder); a folder of ImageNet is ImageNet-1k."""
    key = dataset.lower().rstrip("/")
    if key in HUB_DATASETS:
        return HUB_DATASETS[key]
    name = Path(dataset).name or dataset
    if "imagenet" in name.lower():
        return IMAGENET
    return HubDataset(None, name, "val")


def split_name(dataset: str, evaluated_on: str) -> str:
    """The split an evaluation measured, as a card names it: the dataset's own evaluation split
    (``test`` for Fashion-MNIST), or ``validation (N images held out from the training split)``."""
    if evaluated_on == "val":
        return hub_dataset(dataset).eval_split
    return f"{HELD_OUT_SPLIT} ({evaluated_on})"
