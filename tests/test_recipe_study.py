"""A recipe's study reference: built from a study document, found for the recipe unchanged, quoted
under the before/after table of `sslboost continue --eval-after`."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e2mc_cli.checkpoint import save_checkpoint
from e2mc_cli.cli.tables import study_reference_lines
from e2mc_cli.data.synthetic import SyntheticImages, write_image_folder
from e2mc_cli.errors import UserError
from e2mc_cli.methods import build_model
from e2mc_cli.study import reference as REF
from e2mc_cli.trackers import before_after_results
from e2mc_cli.training import recipe as R

REPO = Path(__file__).resolve().parents[1]
RECIPE = R.RECIPES_DIR / "fmnist-vicreg-e2mc.toml"
STUDY = "studies/fmnist-vicreg-fig4"
SE3 = 0.1 / math.sqrt(3)  # differences 0.1, 0.3, 0.2: s = 0.1, SE = s / sqrt(3)


def _cell(values: list[float], p: float | None = None, seeds=(0, 1, 2)) -> dict:
    out = {"values": values, "n": len(values)}
    if p is not None:
        pooled = {"n01": 120, "n10": 80, "chi2": 8.0, "p_chi2": p / 2, "p_exact": p}
        out["mcnemar_vs_continued"] = {"pooled": pooled, "per_seed": [], "seeds": list(seeds)}
    return out


def _rows(done=(0, 1, 2)) -> list[dict]:
    """1 %: differences e2mc − continued 0.1, 0.3, 0.2; 10 %: −0.1, 0.2, 0.0."""
    return [
        {"name": "base", "linear 1%": _cell([81.0, 81.5, 81.2]), "linear 10%": _cell([83.0, 83.4, 83.2])},
        {
            "name": "continued",
            "linear 1%": _cell([81.0, 81.2, 81.3]),
            "linear 10%": _cell([84.0, 84.1, 84.2]),
            "seeds_done": [0, 1, 2],
        },
        {
            "name": "e2mc",
            "linear 1%": _cell([81.1, 81.5, 81.5], 0.0057),
            "linear 10%": _cell([83.9, 84.3, 84.2], 0.41),
            "seeds_done": list(done),
        },
    ]


def _config(**kw) -> dict:
    cfg = {"base": "fmnist-vicreg", "seeds": 3, "epochs": 3, "holdout": 0, "probe_mode": "cached"}
    return {**cfg, "eval_epochs": None, **kw}


COMMAND = "sslboost study --base fmnist-vicreg --seeds 3 --epochs 3 --criteria continued,e2mc"


def one_length(**config) -> dict:
    return {
        "format": "sslboost-study/1",
        "config": _config(**config),
        "columns": ["linear 1%", "linear 10%"],
        "rows": _rows(),
        "data": "fmnist",
        "command": COMMAND,
        "complete": True,
    }


def over_lengths() -> dict:
    """Points at 1, 3 and 10 epochs; only the point at 3 holds the figures of :func:`_rows`."""
    late = _rows()
    late[2]["linear 1%"]["values"] = [90.0, 90.0, 90.0]
    by_length = ((1, late), (3, _rows()), (10, late))
    points = [{"epochs": e, "rows": rows, "complete": True} for e, rows in by_length]
    return {
        "format": "sslboost-study-epochs/1",
        "config": _config(epochs=[1, 3, 10]),
        "columns": ["linear 1%", "linear 10%"],
        "epochs": [1, 3, 10],
        "points": points,
        "data": "fmnist",
        "command": COMMAND.replace("--epochs 3", "--epochs 1,3,10"),
    }


def cell_recipe(epochs=3, seed=1, sets=()) -> dict:
    """The resolved recipe of one e2mc cell of the study (its own seed, as the cell writes it)."""
    extra = [f"run.snapshot_epochs={json.dumps([1, 3, 10])}"] if epochs == 10 else []
    return R.resolve_recipe(
        "vicreg", "e2mc", recipe_file=RECIPE, sets=[f"run.epochs={epochs}", f"run.seed={seed}", *extra, *sets]
    )


def run_recipe(**kw) -> dict:
    """The recipe `sslboost continue --base fmnist-vicreg --epochs 3` resolves (seed 0)."""
    return R.resolve_recipe("vicreg", "e2mc", recipe_file=RECIPE, **{"epochs": 3, **kw})


@pytest.fixture
def refdir(tmp_path, monkeypatch) -> Path:
    """A recipes folder of the test's own for the shipped references."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    monkeypatch.setattr(REF, "REFERENCE_DIR", folder)
    return folder


def _ship(folder: Path, ref: dict) -> Path:
    path = folder / f"{ref['recipe']}.study.json"
    path.write_text(json.dumps(ref))
    return path


# -- building the reference ----------------------------------------------------------------------


@pytest.mark.parametrize("doc", [one_length(), over_lengths()], ids=["one length", "over lengths"])
def test_reference_from_both_formats(doc):
    recipe = cell_recipe(epochs=3 if doc["format"] == "sslboost-study/1" else 10)
    ref = REF.recipe_study(doc, criterion="e2mc", epochs=3, recipe=recipe, study=STUDY)
    assert (ref["format"], ref["recipe"], ref["criterion"], ref["epochs"]) == (
        "sslboost-recipe-study/1",
        "fmnist-vicreg-e2mc",
        "e2mc",
        3,
    )
    assert (ref["base"], ref["command"], ref["study"]) == ("fmnist-vicreg", doc["command"], STUDY)
    assert ref["training"]["run"]["epochs"] == 3
    assert not {"seed", "checkpoint_every", "log_every", "snapshot_epochs"} & set(ref["training"]["run"])
    assert ref["training"]["criterion"] == {"name": "e2mc", "beta": 1000.0, "gamma": 100.0, **{
        k: v for k, v in recipe["criterion"].items() if k not in ("name", "beta", "gamma")}}  # fmt: skip
    one = ref["columns"]["linear 1%"]
    assert one["seeds"] == [0, 1, 2]
    assert one["top1"] == {
        "base": [81.0, 81.5, 81.2],
        "continued": [81.0, 81.2, 81.3],
        "e2mc": [81.1, 81.5, 81.5],
    }
    assert one["differences"] == pytest.approx([0.1, 0.3, 0.2])
    assert one["mean_difference"] == pytest.approx(0.2)
    assert one["se_difference"] == pytest.approx(SE3) and one["se_difference"] == pytest.approx(0.0577350)
    assert (one["above_zero"], one["n"], one["p_mcnemar_pooled"]) == (3, 3, 0.0057)
    assert one["mcnemar_pooled"]["n01"] == 120
    assert one["base"]["mean"] == pytest.approx(81.2333333)
    ten = ref["columns"]["linear 10%"]
    # −0.1, 0.2, 0.0: mean 1/30; Σd² − n·mean² = 0.05 − 1/300, s² = that / 2, SE = s / sqrt(3)
    assert ten["differences"] == pytest.approx([-0.1, 0.2, 0.0], abs=1e-9)
    assert ten["mean_difference"] == pytest.approx(1 / 30)
    assert ten["se_difference"] == pytest.approx(math.sqrt((0.05 - 1 / 300) / 2 / 3))
    assert (ten["above_zero"], ten["p_mcnemar_pooled"]) == (1, 0.41)


def test_one_length_study_without_epochs_is_the_recipe_s_length():
    doc = one_length(epochs=None)
    ref = REF.recipe_study(doc, criterion="e2mc", epochs=3, recipe=cell_recipe(epochs=3), study=STUDY)
    assert ref["epochs"] == 3
    with pytest.raises(UserError, match="continued for 3 epochs, not 1"):
        REF.recipe_study(doc, criterion="e2mc", epochs=1, recipe=cell_recipe(epochs=3), study=STUDY)


def _without(doc: dict, name: str) -> dict:
    doc["rows"] = [r for r in doc["rows"] if r["name"] != name]
    return doc


def _cosine(epochs: int) -> dict:
    return cell_recipe(epochs=epochs, sets=["optim.schedule=cosine"])


@pytest.mark.parametrize(
    ("doc", "kw", "message"),
    [
        (_without(one_length(), "e2mc"), {}, "no 'e2mc' runs"),
        (_without(one_length(), "continued"), {}, "no 'continued' runs"),
        (one_length(seeds=1), {}, "1 seed"),
        (one_length(epochs=1), {}, "continued for 1 epochs, not 3"),
        (one_length(holdout=10000), {}, "held out from the training split"),
        (one_length(probe_mode="standard"), {}, "probe is 'standard'"),
        (one_length(eval_epochs=5), {}, "--eval-epochs"),
        ({**one_length(), "rows": _rows(done=(0, 1))}, {}, r"not all done \(seeds 0, 1 of 3\)"),
        (one_length(), {"criterion": "vcreg"}, "criterion 'e2mc', not 'vcreg'"),
        (one_length(), {"criterion": "continued"}, "the control"),
        (one_length(), {"recipe": cell_recipe(epochs=1)}, "trains 1 epochs, not the study's 3"),
        (over_lengths(), {"epochs": 2, "recipe": cell_recipe(epochs=10)}, r"no point at 2 epochs \(its"),
        (over_lengths(), {"recipe": _cosine(10)}, "cosine schedule over the whole run"),
        ({**one_length(), "format": "sslboost-curve/1"}, {}, "not a study document"),
        ({**one_length(), "columns": ["knn"]}, {}, "no column with the base"),
    ],
)
def test_refusals(doc, kw, message):
    args = {"criterion": "e2mc", "epochs": 3, "recipe": cell_recipe(epochs=3), "study": STUDY, **kw}
    with pytest.raises(UserError, match=message):
        REF.recipe_study(doc, **args)


def test_the_last_point_of_a_cosine_run_is_that_run():
    ref = REF.recipe_study(over_lengths(), criterion="e2mc", epochs=10, recipe=_cosine(10), study=STUDY)
    assert ref["training"]["optim"]["schedule"] == "cosine"
    assert ref["columns"]["linear 1%"]["top1"]["e2mc"] == [90.0, 90.0, 90.0]


# -- finding it for a run ------------------------------------------------------------------------


def _shipped(refdir: Path) -> Path:
    ref = REF.recipe_study(one_length(), criterion="e2mc", epochs=3, recipe=cell_recipe(), study=STUDY)
    return _ship(refdir, ref)


def test_matching_reference_for_the_recipe_unchanged(refdir):
    _shipped(refdir)
    ref = REF.matching_reference(run_recipe(), "fmnist-vicreg")
    assert ref is not None and ref["study"] == STUDY
    # as `continue` saves it (TOML) and read back, the epochs written 3.0: the same training
    again = R.loads(R.dumps(run_recipe(epochs=3.0)))
    assert REF.matching_reference(again, "fmnist-vicreg", data="fmnist") is not None


@pytest.mark.parametrize(
    ("recipe", "base", "data"),
    [
        (run_recipe(lr=0.01), "fmnist-vicreg", None),
        (run_recipe(sets=["criterion.beta=100"]), "fmnist-vicreg", None),
        (run_recipe(epochs=1), "fmnist-vicreg", None),
        (run_recipe(batch_size=128), "fmnist-vicreg", None),
        (run_recipe(sets=["views.scale=[0.08, 1.0]"]), "fmnist-vicreg", None),
        (run_recipe(), "fmnist-swav", None),
        (run_recipe(), None, None),
        (run_recipe(), "fmnist-vicreg", "/data/my-images"),
    ],
    ids=["lr", "criterion coefficient", "epochs", "batch size", "views", "another base", "no base", "data"],
)
def test_no_reference_for_another_training(refdir, recipe, base, data):
    _shipped(refdir)
    assert REF.matching_reference(recipe, base, data=data) is None


def test_no_reference_for_other_weights_under_the_base_s_name(refdir, monkeypatch):
    _shipped(refdir)
    spec = REF.BASES["fmnist-vicreg"]
    monkeypatch.setitem(REF.BASES, "fmnist-vicreg", dataclasses.replace(spec, sha256="0" * 64))
    assert REF.matching_reference(run_recipe(), "fmnist-vicreg") is None


def test_no_reference_file_no_reference(refdir):
    assert REF.matching_reference(run_recipe(), "fmnist-vicreg") is None


def test_an_unreadable_shipped_file_is_a_logged_note_at_run_time(refdir, caplog):
    path = refdir / "fmnist-vicreg-e2mc.study.json"
    path.write_text('{"format": "sslboost-recipe-study/1", "recipe": "fmnist-vicreg-e2mc"')
    with caplog.at_level(logging.WARNING, logger="e2mc_cli.study.reference"):
        assert REF.matching_reference(run_recipe(), "fmnist-vicreg") is None
    assert "not a readable JSON file" in caplog.text
    with pytest.raises(UserError, match="not a readable JSON file"):
        REF.read_reference(path)


def shipped_references() -> list[Path]:
    return sorted(R.RECIPES_DIR.glob("*.study.json"))


@pytest.mark.parametrize("path", shipped_references(), ids=lambda p: p.name)
def test_every_shipped_reference_reads_and_names_a_shipped_recipe(path):
    ref = REF.read_reference(path)
    recipe = R.load_toml(R.RECIPES_DIR / f"{ref['recipe']}.toml")
    assert recipe["criterion"]["name"] == ref["criterion"]
    assert all(col["n"] >= 2 for col in ref["columns"].values())


# -- the entry point -----------------------------------------------------------------------------


def _study_files(tmp_path: Path) -> tuple[Path, Path]:
    study = tmp_path / "study" / "study.json"
    study.parent.mkdir()
    study.write_text(json.dumps(one_length()))
    recipe = tmp_path / "study" / "cells" / "e2mc-seed0" / "train" / "recipe.toml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(R.dumps(cell_recipe(seed=0)))
    return study, recipe


def test_entry_point_round_trip(tmp_path, refdir, capsys):
    study, recipe = _study_files(tmp_path)
    out = refdir / "fmnist-vicreg-e2mc.study.json"
    argv = [str(study), "--criterion", "e2mc", "--epochs", "3", "--recipe-file", str(recipe)]
    assert REF.main([*argv, "--study", STUDY, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    ref = REF.matching_reference(run_recipe(), "fmnist-vicreg")
    assert ref == REF.read_reference(out) and ref["columns"]["linear 1%"]["above_zero"] == 3
    # a file the runs of the recipe would not find is refused
    assert REF.main([*argv, "--study", STUDY, "--out", str(refdir / "vicreg.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --out") and "fmnist-vicreg-e2mc.study.json" in err


def test_entry_point_bad_input_is_one_line_exit_2(tmp_path):
    study, recipe = _study_files(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "e2mc_cli.study.reference", str(study), "--criterion", "e2mc",
           "--epochs", "4", "--recipe-file", str(recipe), "--study", STUDY,
           "--out", str(tmp_path / "x")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "error: the study continued for 3 epochs, not 4\n"
    assert not (tmp_path / "x").exists()


def test_entry_point_missing_options_are_one_line_exit_2(tmp_path, capsys):
    study, _ = _study_files(tmp_path)
    assert REF.main([str(study), "--criterion", "e2mc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "required" in err


# -- what the main job says ----------------------------------------------------------------------


def test_reference_lines_exact():
    ref = REF.recipe_study(one_length(), criterion="e2mc", epochs=3, recipe=cell_recipe(), study=STUDY)
    # base at 1 %: 81.0, 81.5, 81.2 → 81.23 ± 0.145; at 10 %: 83.0, 83.4, 83.2 → 83.2 ± 0.115
    assert study_reference_lines(ref, ["1%", "10%", "100%"]) == [
        "study of this recipe (3 seeds, studies/fmnist-vicreg-fig4): e2mc − continued at 1%: +0.20 ± 0.06 "
        "points (seeds +0.10, +0.30, +0.20; 3 of 3 above 0), pooled McNemar p = 0.0057; base 81.2 ± 0.1",
        "study of this recipe (3 seeds, studies/fmnist-vicreg-fig4): e2mc − continued at 10%: +0.03 ± 0.09 "
        "points (seeds -0.10, +0.20, +0.00; 1 of 3 above 0), pooled McNemar p = 0.41; base 83.2 ± 0.1",
    ]


def test_before_after_results_carry_the_reference():
    ref = REF.recipe_study(one_length(), criterion="e2mc", epochs=3, recipe=cell_recipe(), study=STUDY)
    rows = [{"labels": "1%", "before": 81.0, "after": 81.5, "difference": 0.5, "p_mcnemar": 0.2}]
    plain = before_after_results(rows)
    assert plain == {"eval/1pct/before_top1": 81.0, "eval/1pct/after_top1": 81.5,
                     "eval/1pct/difference": 0.5, "eval/1pct/p_mcnemar": 0.2}  # fmt: skip
    got = before_after_results(rows, ref)
    assert {k: v for k, v in got.items() if k not in plain} == {
        "eval/1pct/study_difference": pytest.approx(0.2),
        "eval/1pct/study_difference_se": pytest.approx(SE3),
        "eval/1pct/study_seeds": 3,
        "eval/1pct/study_above_zero": 3,
        "eval/1pct/study_p_mcnemar": 0.0057,
    }


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory):
    """A tiny base (resnet-mini) and a 16 px ImageFolder of 4 classes: the main job in miniature."""
    root = tmp_path_factory.mktemp("tiny-job")
    torch.manual_seed(0)
    model = build_model("vicreg", "resnet-mini", {"mlp": "16-16-16"})
    save_checkpoint(root / "base.safetensors", model, base="tiny", epoch=1)
    data = write_image_folder(
        root / "data",
        {
            "train": SyntheticImages(10, n_classes=4, image_size=16, seed=0),
            "val": SyntheticImages(5, n_classes=4, image_size=16, seed=1),
        },
    )
    return root / "base.safetensors", data


def test_main_job_prints_the_study_of_its_recipe(cli, tiny_job, tmp_path, refdir):
    """The line under the before/after table for the recipe as the study ran it; none with a --set."""
    base, data = tiny_job
    common = ["--base", base, "--data", data, "--image-size", "16", "--device", "cpu", "--batch-size", "8",
              "--workers", "0", "--epochs", "1"]  # fmt: skip
    r = cli("continue", *common, "--out", tmp_path / "plain", "--no-eval-after")
    assert r.exit_code == 0, r.stderr
    cell = R.load_toml(tmp_path / "plain" / "recipe.toml")  # the recipe a study cell of this run trains
    doc = {**one_length(base=str(base), epochs=1), "data": str(data)}
    ref = REF.recipe_study(doc, criterion="e2mc", epochs=1, recipe=cell, study="studies/tiny")
    assert ref["recipe"] == "vicreg-e2mc"
    _ship(refdir, ref)

    r = cli("continue", *common, "--out", tmp_path / "run", "--eval-after", "--log", "csv")
    assert r.exit_code == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("study of this recipe")]
    assert lines == study_reference_lines(ref, ["1%", "10%"])
    assert "study_p_mcnemar" in (tmp_path / "run" / "results.csv").read_text()

    # a recipe changed by --set is not the recipe the study ran: no reference for its before/after table
    r = cli("continue", *common, "--out", tmp_path / "other", "--no-eval-after", "--set", "criterion.beta=10")
    assert r.exit_code == 0, r.stderr
    assert REF.run_reference(tmp_path / "run", str(base), data=str(data)) == ref
    assert REF.run_reference(tmp_path / "other", str(base), data=str(data)) is None
