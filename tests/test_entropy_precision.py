"""The m-spacings entropy error of rounded inputs (``sslboost bench criteria``'s second table)."""

from __future__ import annotations

import json

import pytest
import torch

from e2mc_cli.benchmarks import entropy_precision as EP
from e2mc_cli.methods import get_method_spec
from e2mc_cli.training import recipe as R

# The embedding each method hands E2MC, read off its head sizes (official or a recipe's [model]).
EMBEDDING_DIM = {
    "vicreg": lambda heads: int(str(heads["mlp"]).split("-")[-1]),
    "swav": lambda heads: int(heads["feat_dim"]),
    "simsiam": lambda heads: int(heads["dim"]),
    "barlowtwins": lambda heads: int(str(heads["mlp"]).split("-")[-1]),
    "mocov2": lambda heads: int(heads["dim"]),
    "dino": lambda heads: int(str(heads["mlp"]).split("-")[-1]),
}
EMBEDDING_DIM["mocov3"] = lambda heads: int(heads["dim"])


def test_recipe_shapes_are_the_shipped_recipes():
    e2mc = {p.stem: R.load_toml(p) for p in R.recipe_files() if R.load_toml(p)["criterion"]["name"] == "e2mc"}
    assert {s.recipe for s in EP.RECIPE_SHAPES} == set(e2mc)
    for shape in EP.RECIPE_SHAPES:
        recipe = e2mc[shape.recipe]
        method = recipe["recipe"]["method"]
        spec = get_method_spec(method)
        assert shape.n == recipe["run"]["batch_size"], shape
        assert shape.space == spec.method.space, shape
        if shape.recipe.startswith("fmnist-"):  # the built-in base's own pre-training recipe
            heads = {**spec.heads, **R.load_toml(R.RECIPES_DIR / f"fmnist-{method}.toml")["model"]}
        else:
            heads = spec.heads
        assert shape.d == EMBEDDING_DIM[method](heads), shape


def test_spacing_ulps_hand_value():
    # n = 4, m = 2: sorted 1, 1.25, 1.5, 1.75; both m-spacings are 0.5 wide, their upper ends lie in
    # [1, 2), where bf16 steps by 2⁻⁷ (0.5 = 64 ulps) and fp16 by 2⁻¹⁰ (512 ulps).
    z = torch.tensor([[1.5], [1.0], [1.75], [1.25]], dtype=torch.float64)
    assert EP.spacing_ulps(z, torch.bfloat16) == 64.0
    assert EP.spacing_ulps(z, torch.float16) == 512.0
    # in [0.5, 1) the step halves: 0.25-wide spacings of 0.5 … 0.875 are 64 bf16 ulps too.
    assert EP.spacing_ulps(z / 2, torch.bfloat16) == 64.0


def test_inputs_representable_in_bf16_have_only_float32_errors():
    # Multiples of 2⁻⁵ in [−2, 2) are exact in bf16: rounding is the identity, so the bf16 and the
    # fp32 spacings and entropies are the same (both only the float32 arithmetic), and tiny; the
    # gradient differs only by its own rounding to bf16, at most half an ulp (2⁻⁸ relative).
    gen = torch.Generator().manual_seed(0)
    z = (torch.randint(-64, 64, (64, 8), generator=gen).double()) / 32
    bf16 = EP.entropy_errors(z, "hypersphere", torch.bfloat16)
    fp32 = EP.entropy_errors(z, "hypersphere", torch.float32)
    for key in ("spacing_rel_err", "entropy_rel_err_mean", "entropy_rel_err_max"):
        assert bf16[key] == fp32[key] and bf16[key] < 1e-5, key
    assert fp32["grad_rel_err_max"] < 1e-5 < bf16["grad_rel_err_max"] < 2**-8


def test_errors_shrink_with_the_mantissa():
    shape = EP.RecipeShape("tiny", 256, 64, "hypercube")
    rows = {r.dtype: r for r in EP.entropy_precision([shape])}
    bf16, fp16, fp32 = rows["bf16"], rows["fp16"], rows["fp32"]
    # 3 more mantissa bits: 8× more ulps per spacing and about 8× smaller spacing errors.
    assert fp16.spacing_ulps / bf16.spacing_ulps == pytest.approx(8.0, rel=0.05)
    assert 5.0 < bf16.spacing_rel_err / fp16.spacing_rel_err < 12.0
    assert fp32.spacing_rel_err < 1e-5 < fp16.spacing_rel_err < bf16.spacing_rel_err < 0.05
    assert fp32.entropy_rel_err_max < fp16.entropy_rel_err_max < bf16.entropy_rel_err_max
    assert fp32.grad_rel_err_mean < fp16.grad_rel_err_mean < bf16.grad_rel_err_mean
    assert bf16.entropy_rel_err_mean <= bf16.entropy_rel_err_max


def test_bench_json_carries_the_precision_rows(cli, monkeypatch):
    monkeypatch.setattr(EP, "RECIPE_SHAPES", (EP.RecipeShape("tiny", 64, 8, "hypersphere"),))
    tiny = ("bench", "criteria", "--dims", "8", "--n", "16", "--repeats", "1")
    r = cli(*tiny, "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["entropy_precision"]
    assert [(row["recipe"], row["n"], row["d"], row["dtype"]) for row in rows] == [
        ("tiny", 64, 8, "bf16"),
        ("tiny", 64, 8, "fp16"),
        ("tiny", 64, 8, "fp32"),
    ]
    assert rows[0]["grad_rel_err_mean"] > rows[2]["grad_rel_err_mean"]
    table = cli(*tiny)
    assert table.exit_code == 0 and "m-spacings entropy of rounded inputs" in table.stdout
    assert "tiny" in table.stdout and "bf16" in table.stdout
    skipped = cli(*tiny, "--json", "--no-entropy-errors")
    assert json.loads(skipped.stdout)["entropy_precision"] == []
