"""The Hub's names for the datasets a run is evaluated on: ``(dataset type, display name)``, as a
model card's ``model-index`` and results table give them."""

from __future__ import annotations

from pathlib import Path

# Hub dataset type and display name of the datasets `sslboost eval` reads by name.
HUB_DATASETS: dict[str, tuple[str, str]] = {
    "fmnist": ("fashion_mnist", "Fashion-MNIST"),
    "fashion-mnist": ("fashion_mnist", "Fashion-MNIST"),
    "imagenet": ("imagenet-1k", "ImageNet-1k"),
}


def hub_dataset(dataset: str) -> tuple[str, str]:
    """(Hub dataset type, display name) of an eval dataset spec (a name or a folder)."""
    key = dataset.lower().rstrip("/")
    if key in HUB_DATASETS:
        return HUB_DATASETS[key]
    name = Path(dataset).name or dataset
    if "imagenet" in name.lower():
        return HUB_DATASETS["imagenet"]
    return name, name
