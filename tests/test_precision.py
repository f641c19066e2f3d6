"""``--precision``: the resolution rules, the autocast of each precision, the float32 last layers of
every head, the float32 losses, and the authors' choice in every shipped recipe."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from e2mc_cli.errors import UserError
from e2mc_cli.methods import build_method, build_model
from e2mc_cli.models import Fp32Linear
from e2mc_cli.precision import (
    PRECISIONS,
    autocast,
    check_precision,
    describe,
    full_precision,
    grad_scaler,
    needs_grad_scaler,
    resolve_precision,
)
from e2mc_cli.training import recipe as R

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}
TINY_HEADS = {
    "vicreg": {"mlp": "32-32-32"},
    "swav": {"hidden_mlp": 32, "feat_dim": 16, "n_prototypes": 20},
    "simsiam": {"dim": 32, "pred_dim": 8},
}
# the last Linear of every head each method builds (module names in the model)
LAST_LAYERS = {
    "vicreg": ("projector.6",),
    "swav": ("projector.3", "prototypes"),
    "simsiam": ("projector.6", "predictor.3"),
}


# -- resolution rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("requested", PRECISIONS)
@pytest.mark.parametrize("device", [CPU, CUDA], ids=["cpu", "cuda"])
def test_an_explicit_precision_wins_on_every_device(requested, device):
    for recipe_default in PRECISIONS:
        assert resolve_precision(requested, recipe_default, device) == requested


@pytest.mark.parametrize("recipe_default", PRECISIONS)
def test_a_recipe_default_applies_on_cuda_and_the_cpu_trains_in_fp32(recipe_default):
    assert resolve_precision(None, recipe_default, CUDA) == recipe_default
    assert resolve_precision(None, recipe_default, CPU) == "fp32"


def test_unknown_precisions_are_one_user_error_naming_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown --precision 'fp8'.*bf16, fp16, fp32"):
        resolve_precision("fp8", "fp16", CUDA)
    with pytest.raises(UserError, match=r"unknown recipe run.precision 'half'"):
        resolve_precision(None, "half", CPU)  # checked even where the default does not apply
    with pytest.raises(UserError, match="did you mean 'fp16'"):
        check_precision("fp61")


def test_only_fp16_scales_its_gradients():
    assert [needs_grad_scaler(p) for p in PRECISIONS] == [False, True, False]
    assert isinstance(grad_scaler("fp16", CPU), torch.amp.GradScaler)
    assert grad_scaler("bf16", CPU) is None and grad_scaler("fp32", CPU) is None
    assert describe("fp32") == "fp32"
    assert describe("fp16").startswith("fp16 autocast + gradient scaler")
    assert describe("bf16").startswith("bf16 autocast (")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_is_the_dtype_of_a_product_under_its_autocast(precision):
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    with autocast(CPU, precision):
        y = F.linear(x, w)
        with full_precision(CPU):
            z = F.linear(x, w)
    assert y.dtype == LOW.get(precision, torch.float32)
    assert z.dtype == torch.float32 and torch.equal(z, F.linear(x, w))


# -- float32 heads and losses ------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_fp32_linear_is_the_float32_layer_on_the_upcast_input(precision):
    torch.manual_seed(0)
    layer = Fp32Linear(8, 5)
    x = torch.randn(6, 8).to(LOW[precision])  # what a low-precision layer hands it
    with autocast(CPU, precision):
        y = layer(x)
    assert y.dtype == torch.float32
    # by hand: x W^T + b in float64, rounded once to float32 (fp32 products of 8 terms are within 1e-6)
    expected = (x.double() @ layer.weight.double().T + layer.bias.double()).float()
    assert torch.allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(y, F.linear(x.float(), layer.weight, layer.bias))
    assert set(layer.state_dict()) == {"weight", "bias"}  # nn.Linear's keys: checkpoints unchanged


def _views(method: str) -> list[torch.Tensor]:
    n_small = 6 if method == "swav" else 0
    return [torch.randn(8, 3, 16, 16) for _ in range(2)] + [torch.randn(8, 3, 8, 8) for _ in range(n_small)]


def _capture(model, names):
    """Forward hooks recording each named module's ``(input, output)``."""
    seen, handles = {}, []
    for name in names:
        module = model.get_submodule(name)
        hook = lambda m, args, out, name=name: seen.setdefault(name, []).append((args[0].detach(), out))  # noqa: E731
        handles.append(module.register_forward_hook(hook))
    return seen, handles


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("method", list(TINY_HEADS))
def test_every_heads_last_layer_and_the_criterions_input_are_float32(method, precision):
    torch.manual_seed(0)
    model = build_model(method, "resnet-mini", TINY_HEADS[method])
    hidden = model.get_submodule(f"{LAST_LAYERS[method][0].split('.')[0]}.0")
    seen, handles = _capture(model, LAST_LAYERS[method])
    low = []
    handles.append(hidden.register_forward_hook(lambda m, a, out: low.append(out.dtype)))
    with autocast(CPU, precision):
        out = build_method(method, model)(_views(method))
    for h in handles:
        h.remove()
    assert set(low) == {LOW[precision]}  # the hidden layers do run in low precision
    for name in LAST_LAYERS[method]:
        assert isinstance(model.get_submodule(name), Fp32Linear), name
        for x, y in seen[name]:
            layer = model.get_submodule(name)
            assert y.dtype == torch.float32, name
            assert torch.equal(y, F.linear(x.float(), layer.weight, layer.bias)), name
    assert all(e.dtype == torch.float32 for e in (*out.embeddings, *out.all_embeddings))
    assert out.loss.dtype == torch.float32


def _vicreg_by_hand(x: torch.Tensor, y: torch.Tensor) -> float:
    """main_vicreg.py's loss (λ, μ, ν = 25, 25, 1) in float64."""
    x, y = x.double(), y.double()
    n, d = x.shape
    repr_loss = ((x - y) ** 2).mean()
    x, y = x - x.mean(0), y - y.mean(0)
    std_loss = sum(torch.relu(1 - (z.var(0) + 1e-4).sqrt()).mean() for z in (x, y)) / 2
    off = ~torch.eye(d, dtype=torch.bool)
    cov_loss = sum(((z.T @ z / (n - 1))[off] ** 2).sum() / d for z in (x, y))
    return float(25 * repr_loss + 25 * std_loss + cov_loss)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_vicregs_loss_is_float32_arithmetic_under_autocast(precision):
    torch.manual_seed(0)
    model = build_model("vicreg", "resnet-mini", {"mlp": "64-64-64"})
    with autocast(CPU, precision):
        out = build_method("vicreg", model)([torch.randn(16, 3, 16, 16) for _ in range(2)])
    z_a, z_b = (e.detach() for e in out.embeddings)
    # a covariance product rounded to bf16 / fp16 would be off by 1e-3 – 1e-2 relative
    assert float(out.loss.detach()) == pytest.approx(_vicreg_by_hand(z_a, z_b), rel=2e-6)


def test_swav_scores_and_simsiam_cosines_are_float32_under_fp16():
    torch.manual_seed(0)
    for method, name in (("swav", "prototypes"), ("simsiam", "predictor.3")):
        model = build_model(method, "resnet-mini", TINY_HEADS[method])
        seen, handles = _capture(model, [name])
        with autocast(CPU, "fp16"):
            out = build_method(method, model)(_views(method))
        assert all(y.dtype == torch.float32 for _, y in seen[name]), method
        assert all(t.dtype == torch.float32 for t in out.terms.values()), method
    z = out.embeddings  # SimSiam: L = −½ (cos(p_a, z_b) + cos(p_b, z_a)), in float64 by hand
    p_a, p_b = (y.detach().double() for _, y in seen["predictor.3"])
    cos = [F.cosine_similarity(p, t.detach().double(), dim=1).mean() for p, t in ((p_a, z[1]), (p_b, z[0]))]
    assert float(out.loss.detach()) == pytest.approx(float(-(cos[0] + cos[1]) / 2), rel=1e-6)


# -- the authors' choice in every shipped recipe -----------------------------------------------------


# main_vicreg.py (torch.cuda.amp), main_swav.py (apex O1), main_simsiam.py (no autocast),
# Barlow Twins' main.py (torch.cuda.amp), MoCo's main_moco.py (no autocast)
AUTHORS = {"vicreg": "fp16", "swav": "fp16", "simsiam": "fp32", "barlowtwins": "fp16", "mocov2": "fp32"}
AUTHORS["mocov3"] = "fp16"  # main_moco.py: torch.cuda.amp.autocast(True) with a GradScaler
AUTHORS["dino"] = "fp32"  # main_dino.py of the released RN50 run: use_fp16 off


@pytest.mark.parametrize("path", R.recipe_files(), ids=lambda p: p.stem)
def test_each_shipped_recipe_names_the_authors_precision(path):
    recipe = R.load_toml(path)
    method = recipe["recipe"]["method"]
    expected = "fp32" if path.stem.startswith("fmnist-") else AUTHORS[method]  # fmnist-*: CPU recipes
    assert recipe["run"]["precision"] == expected


def test_the_recipes_command_lists_each_recipes_precision(cli):
    rows = {row["name"]: row for row in json.loads(cli("recipes", "--json").stdout)}
    assert [rows[n]["precision"] for n in ("vicreg-e2mc", "swav-e2mc", "simsiam-e2mc", "fmnist-swav")] == [
        "fp16", "fp16", "fp32", "fp32",
    ]  # fmt: skip


def test_a_recipe_without_a_precision_trains_in_bf16_and_a_bad_one_is_one_line(tmp_path):
    recipe = R.resolve_recipe("vicreg", "e2mc")
    assert recipe["run"]["precision"] == "fp16"
    assert R.resolve_recipe("vicreg", "e2mc", sets=["run.precision=bf16"])["run"]["precision"] == "bf16"
    text = R.dumps(recipe).replace('precision = "fp16"\n', "")
    (tmp_path / "mine.toml").write_text(text)
    mine = R.resolve_recipe("vicreg", "e2mc", recipe_file=tmp_path / "mine.toml")
    assert mine["run"]["precision"] == "bf16"
    with pytest.raises(UserError, match=r"^recipe run.precision 'fp8': expected one of: bf16, fp16, fp32$"):
        R.resolve_recipe("vicreg", "e2mc", sets=["run.precision=fp8"])
