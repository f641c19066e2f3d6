"""Shared test fixtures: deterministic seeds, an isolated cache, and a CLI runner."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from e2mc_cli.cli import app


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch, tmp_path_factory):
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    # Never touch the user's cache or the network from a test.
    monkeypatch.setenv("SSLBOOST_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("SSLBOOST_MIRROR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def no_fmnist(monkeypatch, tmp_path):
    """Fashion-MNIST nowhere: no Debian folder (``no-debian``), no copy inside the package
    (``no-embedded``), ``$SSLBOOST_DATA`` unset and a download that fails (``network unreachable``)."""
    from e2mc_cli.data import fmnist

    def offline(root):
        raise OSError("network unreachable")

    monkeypatch.setattr(fmnist, "SYSTEM_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fmnist, "EMBEDDED_DIR", tmp_path / "no-embedded")
    monkeypatch.setattr(fmnist, "_torchvision_download", offline)
    monkeypatch.delenv("SSLBOOST_DATA", raising=False)


@pytest.fixture
def cli():
    """``cli("bases", "--json")`` runs the app in-process and returns click's Result
    (``exit_code``, ``stdout``, ``stderr``)."""
    runner = CliRunner()

    def run(*args: str, **kwargs):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return run


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """An ImageFolder of 12 px colour images: 3 classes, 6 training and 4 validation images each."""
    from e2mc_cli.data.synthetic import ColourImages, write_image_folder

    root = tmp_path_factory.mktemp("colours")
    write_image_folder(root, {"train": ColourImages(6, 3, 12, seed=0), "val": ColourImages(4, 3, 12, seed=1)})
    return root
