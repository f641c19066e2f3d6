"""Recipes carry the paper's numbers; resolution order, typed ``--set`` and clear errors."""

from __future__ import annotations

import json

import pytest

from e2mc_cli.errors import UserError
from e2mc_cli.training import recipe as R

# Appendix B.1 of the E2MC paper (arXiv 2411.15931; CRITERIA.md §1): (criterion, optimiser, lr).
# The coefficients are the paper's; the view reduction and VCReg's space are what the authors'
# scripts ran (main_*_ent_ft.py and main_swav_unif_ft.py average over the two views;
# main_swav_vc_ft.py defaults to --reg_space hypersphere).
MEAN = {"view_reduction": "mean"}
PAPER = {
    "vicreg-e2mc": ({"name": "e2mc", "beta": 1000.0, "gamma": 100.0, **MEAN}, "lars", 0.003),
    "swav-e2mc": ({"name": "e2mc", "beta": 1.0, "gamma": 25.0, **MEAN}, "sgd-larc", 0.001),
    "simsiam-e2mc": ({"name": "e2mc", "beta": 0.001, "gamma": 0.01, **MEAN}, "sgd", 0.001),
    "vicreg-continued": ({"name": "continued"}, "lars", 0.003),
    "swav-continued": ({"name": "continued"}, "sgd-larc", 0.001),
    "simsiam-continued": ({"name": "continued"}, "sgd", 0.001),
    "swav-vcreg": ({"name": "vcreg", "mu": 0.1, "nu": 0.001, "reg_space": "hypersphere"}, "sgd-larc", 0.001),
    "swav-uniformity": ({"name": "uniformity", "lam": 0.5, "t": 2.0, **MEAN}, "sgd-larc", 0.001),
    "swav-mmcr": ({"name": "mmcr", "lam": 0.005}, "sgd-larc", 0.001),
}


def test_shipped_recipes_are_exactly_the_papers():
    names = {p.stem for p in R.recipe_files("continue")}
    assert set(PAPER) <= names
    for name, (criterion, optimizer, lr) in PAPER.items():
        method = name.split("-")[0]
        r = R.resolve_recipe(method, criterion["name"])
        assert r["recipe"]["name"] == name
        assert r["criterion"] == criterion
        assert (r["optim"]["name"], r["optim"]["lr"]) == (optimizer, lr)
        assert (r["run"]["batch_size"], r["run"]["epochs"]) == (512, 10)
        assert r["optim"]["schedule"] == "constant"  # "a fixed reduced learning rate"
        assert r["views"]["image_size"] == 224


def test_base_method_settings_are_the_official_ones():
    v = R.resolve_recipe("vicreg", "e2mc")
    assert v["method"] == {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0}
    assert (v["optim"]["weight_decay"], v["optim"]["eta"], v["optim"]["lr_batch_scaling"]) == (
        1e-6,
        0.001,
        True,
    )
    s = R.resolve_recipe("swav", "e2mc")
    assert s["method"]["temperature"] == 0.1 and s["method"]["epsilon"] == 0.05
    assert s["method"]["sinkhorn_iterations"] == 3 and s["method"]["crops_for_assign"] == [0, 1]
    assert s["views"]["nmb_crops"] == [2, 6] and s["views"]["size_crops"] == [224, 96]
    assert (s["optim"]["trust_coefficient"], s["optim"]["clip"], s["optim"]["weight_decay"]) == (
        0.001,
        False,
        1e-6,
    )
    m = R.resolve_recipe("simsiam", "e2mc")
    assert m["method"]["fix_pred_lr"] is True
    assert (m["optim"]["momentum"], m["optim"]["weight_decay"], m["optim"]["predictor_lr"]) == (
        0.9,
        1e-4,
        0.05,
    )


def test_other_pairs_start_from_the_control_with_the_criterion_defaults():
    from e2mc_cli.criteria import criterion_defaults

    r = R.resolve_recipe("vicreg", "vne")
    control = R.resolve_recipe("vicreg", "continued")
    assert r["optim"] == control["optim"] and r["method"] == control["method"]
    assert r["criterion"] == {"name": "vne", **criterion_defaults("vne")}
    assert r["recipe"]["source"].startswith("ours")


def test_resolution_order_and_typed_set():
    r = R.resolve_recipe(
        "swav",
        "e2mc",
        epochs=3,
        batch_size=64,
        lr=0.5,
        image_size=32,
        sets=[
            "optim.lr=1e-2",
            "criterion.beta=2",
            "run.seed=7",
            "views.size_crops=[32, 16]",
            "optim.clip=true",
        ],
    )
    assert r["run"]["epochs"] == 3 and r["run"]["batch_size"] == 64 and r["run"]["seed"] == 7
    assert r["optim"]["lr"] == 0.01  # --set comes after --lr
    assert r["criterion"]["beta"] == 2 and isinstance(r["criterion"]["beta"], int)
    assert r["views"]["size_crops"] == [32, 16] and r["views"]["image_size"] == 32
    assert r["optim"]["clip"] is True
    with pytest.raises(UserError, match="criterion.beta must be a finite number, got nan"):
        R.resolve_recipe("vicreg", "e2mc", sets=["criterion.beta=nan"])
    assert R.parse_value("lars") == "lars"  # a bare word is a string


def test_set_criterion_name_swaps_in_its_defaults():
    r = R.resolve_recipe("swav", "e2mc", sets=["criterion.name=mmcr"])
    assert r["criterion"] == {"name": "mmcr", "lam": 0.005, "normalize": True}


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("criterion.bta=3", "did you mean 'criterion.beta'"),
        ("optim.lrr=3", "did you mean 'optim.lr'"),
        ("method.temperature=0.2", "unknown key method.temperature"),  # a SwAV key on VICReg
        ("nosuch.key=1", "unknown section"),
        ("criterion.beta", "expected section.key=value"),
        ("run.epochs=0", "positive number"),
        ("run.batch_size=2.5", "positive integer"),
        ("method.sim_coeff=abc", "method.sim_coeff must be a number, got 'abc'"),
        ("optim.momentum=abc", "optim.momentum must be a number"),
        ("criterion.beta=abc", "criterion.beta must be a number"),
        ("optim.exclude_bias_and_norm=1", "must be true or false"),
        ("optim.schedule='linear'", "optim.schedule 'linear': expected one of: constant, cosine"),
        ("optim.final_lr_ratio=2", "final_lr_ratio must be ≤ 1"),
        ("optim.weight_decay=-1", "weight_decay must be a finite number ≥ 0"),
    ],
)
def test_bad_set_is_a_user_error(assignment, message):
    with pytest.raises(UserError, match=message):
        R.resolve_recipe("vicreg", "e2mc", sets=[assignment])


def test_fmnist_e2mc_recipes_use_the_authors_view_reduction():
    for path in R.recipe_files():
        crit = R.load_toml(path)["criterion"]
        if crit["name"] in ("e2mc", "uniformity"):
            assert crit["view_reduction"] == "mean", path.name


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("criterion.view_reduction=avg", "criterion.view_reduction 'avg': expected one of: mean, sum"),
        ("criterion.view_reduction=2", "criterion.view_reduction must be a string, got 2"),
        ("criterion.views=sum", "unknown key criterion.views"),  # not the crops a criterion reads
    ],
)
def test_bad_view_reduction_is_one_user_error(assignment, message):
    with pytest.raises(UserError, match=message):
        R.resolve_recipe("swav", "e2mc", sets=[assignment])


def test_view_reduction_and_reg_space_are_set_and_checked():
    r = R.resolve_recipe("swav", "e2mc", sets=["criterion.view_reduction=sum"])
    assert r["criterion"]["view_reduction"] == "sum"
    r = R.resolve_recipe("swav", "uniformity", sets=["criterion.view_reduction=sum"])
    assert r["criterion"]["view_reduction"] == "sum"
    r = R.resolve_recipe("swav", "vcreg", sets=["criterion.reg_space=projector"])
    assert r["criterion"]["reg_space"] == "projector"
    with pytest.raises(UserError, match="criterion.reg_space 'raw': expected one of: hypersphere, projector"):
        R.resolve_recipe("swav", "vcreg", sets=["criterion.reg_space=raw"])
    with pytest.raises(UserError, match="unknown key criterion.reg_space"):  # a VCReg key on E2MC
        R.resolve_recipe("swav", "e2mc", sets=["criterion.reg_space=projector"])


def test_recipe_file_with_a_bad_view_reduction_is_one_user_error(tmp_path):
    text = (R.RECIPES_DIR / "swav-e2mc.toml").read_text().replace('"mean"', '"average"')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match="criterion.view_reduction 'average': expected one of: mean, sum"):
        R.resolve_recipe("swav", "e2mc", recipe_file=path)


def test_unknown_criterion_suggests_a_close_name():
    with pytest.raises(UserError, match="did you mean 'e2mc'"):
        R.resolve_recipe("vicreg", "e2mcc")


def test_recipe_file_round_trip(tmp_path):
    r = R.resolve_recipe("simsiam", "e2mc", sets=["criterion.beta=0.5"])
    path = tmp_path / "mine.toml"
    path.write_text(R.dumps(r))
    again = R.resolve_recipe("simsiam", "ignored", recipe_file=path)
    assert again == r
    with pytest.raises(UserError, match="a recipe for simsiam"):
        R.resolve_recipe("vicreg", "e2mc", recipe_file=path)
    (tmp_path / "bad.toml").write_text("[optim]\nname = \n")
    with pytest.raises(UserError, match="not valid TOML"):
        R.resolve_recipe("vicreg", "e2mc", recipe_file=tmp_path / "bad.toml")


def test_recipes_command_lists_every_recipe(cli):
    r = cli("recipes", "--json")
    assert r.exit_code == 0
    rows = {row["name"]: row for row in json.loads(r.stdout) if row["kind"] == "continue"}
    assert set(PAPER) <= set(rows)
    assert rows["vicreg-e2mc"]["coefficients"] == {"beta": 1000.0, "gamma": 100.0, "view_reduction": "mean"}
    assert rows["swav-mmcr"]["criterion"] == "mmcr" and rows["swav-mmcr"]["method"] == "swav"
    table = cli("recipes")
    assert table.exit_code == 0 and "swav-uniformity" in table.stdout


@pytest.mark.parametrize(
    "method, sizes", [("swav", [32, 32] + [14] * 6), ("vicreg", [32, 32]), ("simsiam", [32, 32])]
)
def test_image_size_scales_every_crop_of_the_recipe(method, sizes):
    from PIL import Image

    from e2mc_cli.methods import view_transform

    views = dict(R.resolve_recipe(method, "e2mc", image_size=32)["views"])
    transform = view_transform(method, views.pop("image_size"), **views)
    out = transform(Image.new("RGB", (40, 40)))
    assert [v.shape[-1] for v in out] == sizes  # 224 → 32, 96 → round(32·96/224) = 14
