"""The method registry: a method defined here, in one spec and one registry line, trains and exports.

The toy method below (a linear projector, a cosine loss between the two views) is unknown to the
package; registering its spec is all it takes for ``sslboost continue`` to train it from a
checkpoint and for ``sslboost export`` to write its backbone and a model card naming its paper.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from e2mc_cli import methods, papers
from e2mc_cli.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from e2mc_cli.data.augment import simsiam_views
from e2mc_cli.data.synthetic import SyntheticImages, write_image_folder
from e2mc_cli.errors import UserError
from e2mc_cli.methods import (
    Method,
    MethodOutput,
    MethodSpec,
    build_method,
    build_model,
    get_method_spec,
    method_names,
    register_method,
)
from e2mc_cli.methods.base import check_views
from e2mc_cli.papers import Paper


class Toy(Method):
    """Cosine agreement of the two views' projections: ``L = −scale · mean cos(z_a, z_b)``."""

    name = "toy"
    space = "hypersphere"

    def __init__(self, model, scale: float = 1.0):
        super().__init__(model)
        self.scale = float(scale)

    def forward(self, images: list[torch.Tensor]) -> MethodOutput:
        check_views(images, 2, "Toy")
        z = [self.model.projector(self.model.backbone(v)) for v in images]
        cosine = F.cosine_similarity(z[0].float(), z[1].float(), dim=1).mean()
        return MethodOutput(-self.scale * cosine, {"cosine": cosine.detach()}, z, self.space, z)


def _toy_heads(width: int, sizes: Mapping[str, object]) -> dict[str, nn.Module]:
    return {"projector": nn.Linear(width, int(sizes["dim"]))}


TOY = MethodSpec(
    method=Toy,
    display_name="ToyCos",
    heads={"dim": 8},
    head_builder=_toy_heads,
    head_reader=lambda sd: {"dim": sd["projector.weight"].shape[0]},
    head_scaler=lambda width: {"dim": width},
    view_builder=simsiam_views,
    view_options={"scale": (0.5, 1.0)},
    paper="toy",
    code="https://example.org/toy-code",
    licence="apache-2.0",
    licence_name="Apache 2.0",
    recipes="toy",
)
TOY_PAPER = Paper("A Toy Method of Agreeing Views", ("Ada Lovelace", "Alan Turing"), 2030, "Toy Workshop")

RECIPE = """
[recipe]
name = "toy-e2mc"
method = "toy"
source = "a test"

[run]
epochs = 1
batch_size = 8
log_every = 1

[optim]
name = "sgd"
lr = 0.01

[method]
scale = 2.0

[criterion]
name = "e2mc"
beta = 0.5

[views]
image_size = 16
scale = [0.6, 1.0]
"""


@pytest.fixture
def toy(monkeypatch):
    """The toy method registered (and its paper added) for one test, then gone again."""
    monkeypatch.setattr(methods, "_SPECS", dict(methods._SPECS))
    monkeypatch.setitem(papers.PAPERS, "toy", TOY_PAPER)
    register_method(TOY)
    return TOY


def test_registering_a_method_makes_it_buildable(toy):
    assert method_names()[-1] == "toy" and get_method_spec("toy") is toy
    model = build_model("toy", "resnet-mini")
    heads = [k for k in model.state_dict() if not k.startswith("backbone.")]
    assert heads == ["projector.weight", "projector.bias"]
    assert model.method == "toy" and model.heads == {"dim": 8} and model.projector.out_features == 8
    assert toy.infer_heads(model.state_dict()) == {"dim": 8}
    assert isinstance(build_method("toy", model, scale=3), Toy)
    with pytest.raises(UserError, match="unknown toy option"):
        build_method("toy", model, temperature=0.1)
    with pytest.raises(ValueError, match="already registered"):
        register_method(toy)


def test_the_registry_is_restored_after_the_test():
    assert "toy" not in method_names()
    with pytest.raises(UserError, match=r"unknown method 'toy'.*valid names: vicreg, swav, simsiam"):
        get_method_spec("toy")


def test_a_misspelt_method_suggests_the_closest():
    with pytest.raises(UserError, match=r"did you mean 'simsiam'"):
        get_method_spec("simsam")


def test_a_missing_head_tensor_is_one_user_error(toy):
    state = build_model("toy", "resnet-mini").state_dict()
    del state["projector.weight"]
    with pytest.raises(UserError, match="checkpoint has no 'projector.weight': not a complete toy model"):
        toy.infer_heads(state)


def test_continue_and_export_a_registered_method(cli, toy, tmp_path):
    data = write_image_folder(tmp_path / "data", {"train": SyntheticImages(4, n_classes=2, image_size=16)})
    base = tmp_path / "toy-base.safetensors"
    torch.manual_seed(0)
    save_checkpoint(base, build_model("toy", "resnet-mini", {"dim": 6}), base="toy-tiny", epoch=3)
    recipe = tmp_path / "toy.toml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"

    r = cli(
        "continue", "--base", base, "--data", data, "--out", out, "--recipe", recipe, "--workers", "0",
        "--max-steps", "1",
    )
    assert r.exit_code == 0, r.stderr
    meta = read_metadata(out / "sslboost.safetensors")
    assert (meta["method"], meta["arch"], meta["criterion"]) == ("toy", "resnet-mini", "e2mc")
    assert json.loads(meta["heads"]) == {"dim": 6}
    assert json.loads(meta["recipe"])["method"] == {"scale": 2.0}
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"toy.loss", "toy.cosine", "e2mc.ent", "e2mc.cov"} <= set(line)
    trained = load_checkpoint(out / "model.safetensors").build_model()
    assert trained.projector.out_features == 6

    r = cli("export", out)
    assert r.exit_code == 0, r.stderr
    backbone = load_file(str(out / "model.safetensors"))
    assert set(backbone) == {k[len("backbone.") :] for k in trained.state_dict() if k.startswith("backbone.")}
    card = (out / "README.md").read_text()
    assert "ToyCos" in card and "A Toy Method of Agreeing Views" in card and "Ada Lovelace" in card
    assert "https://example.org/toy-code" in card
    config = json.loads((out / "config.json").read_text())
    assert config["sslboost"]["method"] == "toy"

