"""The hostile corpus, bad input: recipe values, options, checkpoints, metadata, data folders and
evaluation records a careless or hostile user gives. Each is refused with exit code 2 and one
``error:`` line before anything is written (or, for a state that turns non-finite, exit code 1
with the last finite checkpoint kept); none leaves a traceback or a temporary file."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from test_train import SMALL, make_bases, make_data
from typer.testing import CliRunner

from e2mc_cli.checkpoint import read_metadata
from e2mc_cli.cli import app
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.run_layout import STATE_FILE
from e2mc_cli.training import step as S
from e2mc_cli.training.recipe import RECIPES_DIR
from e2mc_cli.training.state import load_training_state, nonfinite_tensors


def _images(folder: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{seed}-{i}.png")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Training images, tiny bases, an evaluation folder (train/ and val/, two classes), a
    one-class folder and two broken copies of the VICReg base."""
    root = tmp_path_factory.mktemp("hostile-input")
    bases = make_bases(root)
    for split, n in (("train", 6), ("val", 3)):
        for k, name in enumerate(("a", "b")):
            _images(root / "eval" / split / name, n, seed=10 * k + n)
    _images(root / "one" / "train" / "a", 6, seed=1)
    _images(root / "one" / "val" / "a", 3, seed=2)
    tensors, meta = load_file(str(bases["vicreg"])), read_metadata(bases["vicreg"])
    narrow = {**tensors, "backbone.conv1.weight": torch.zeros(8, 3, 3, 3)}
    save_file(narrow, str(root / "shape.safetensors"), meta)
    save_file(tensors, str(root / "heads.safetensors"), {**meta, "heads": "{not json"})
    save_file(tensors, str(root / "arch.safetensors"), {k: v for k, v in meta.items() if k != "arch"})
    return {
        "root": root,
        "data": make_data(root / "data"),
        "bases": bases,
        "eval": root / "eval",
        "one": root / "one",
        "shape": root / "shape.safetensors",
        "heads": root / "heads.safetensors",
        "arch": root / "arch.safetensors",
    }


def _continue(cli, env, out, *extra, method="vicreg", base=None):
    return cli(
        "continue", "--base", base or env["bases"][method], "--data", env["data"], "--out", out, *SMALL,
        "--max-steps", "2", *extra,
    )  # fmt: skip


def _nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))


# --- recipe values (--set, --lr, recipe files): refused before the run folder is made -----------

BAD_SETS = [
    ("run.seed=99999999999999999999", "run.seed must be an integer from 0 to 4294967295"),
    ("run.seed=-1", "run.seed must be an integer from 0"),
    ('views.scale=["a","b"]', "views.scale must be a non-empty list of finite numbers"),
    ("views.scale=[0.2]", "views.scale must be two numbers"),
    ("views.scale=[0.9, 0.1]", "views.scale must be two numbers 0 < low ≤ high ≤ 1"),
    ("criterion.beta=nan", "criterion.beta must be a finite number, got nan"),
    ("optim.eta=nan", "optim.eta must be a finite number ≥ 0, got nan"),
    ("optim.lr=inf", "optim.lr must be a finite number ≥ 0, got inf"),
    ("optim.weight_decay=-inf", "optim.weight_decay must be a finite number ≥ 0"),
    ("method.sim_coeff=1e999", "method.sim_coeff must be a finite number"),
    ("views.image_size=100000", "views.image_size must be an integer from 8 to 4096"),
    ("run.log_every=0", "run.log_every must be a positive integer"),
    ("criterion.betta=1", "unknown key criterion.betta (did you mean 'criterion.beta'?)"),
]


@pytest.mark.parametrize("assignment, message", BAD_SETS, ids=[a for a, _ in BAD_SETS])
def test_a_bad_set_is_refused_before_anything_is_written(
    cli, env, tmp_path, one_line_failure, assignment, message
):
    out = tmp_path / "run"
    one_line_failure(_continue(cli, env, out, "--set", assignment), 2, contains=message, folder=tmp_path)
    _nothing_written(out)


def test_a_swav_crop_that_does_not_exist_is_refused(cli, env, tmp_path, one_line_failure):
    out = tmp_path / "run"
    r = _continue(cli, env, out, "--set", "method.crops_for_assign=[0, 9]", method="swav")
    one_line_failure(r, 2, contains="crops_for_assign [0, 9] must name crops 0 to 7", folder=tmp_path)
    _nothing_written(out)


def test_an_infinite_learning_rate_option_is_refused(cli, env, tmp_path, one_line_failure):
    out = tmp_path / "run"
    one_line_failure(_continue(cli, env, out, "--lr", "inf"), 2, contains="optim.lr must be a finite number")
    _nothing_written(out)


E2MC = '[criterion]\nname = "e2mc"\n'
BAD_FILES = [
    (E2MC + '[run]\nseed = "abc"\n', "run.seed must be an integer from 0 to 4294967295, got 'abc'"),
    ("optim = 5\n" + E2MC, "[optim] must be a table"),
    ("[criterion]\nname = [1]\n", "unknown criterion '[1]'"),
    ("[recipe]\nsource = 3\n" + E2MC, "recipe.source must be a string"),
]


@pytest.mark.parametrize("text, message", BAD_FILES, ids=["seed", "section", "criterion", "source"])
def test_a_bad_recipe_file_is_refused(cli, env, tmp_path, one_line_failure, text, message):
    recipe = tmp_path / "mine.toml"
    recipe.write_text(text)
    out = tmp_path / "run"
    one_line_failure(_continue(cli, env, out, "--recipe", recipe), 2, contains=message)
    _nothing_written(out)


def test_a_recipe_file_that_is_not_text_is_refused(cli, env, tmp_path, one_line_failure):
    recipe = tmp_path / "mine.toml"
    recipe.write_bytes(b"\xff\xfe\x00binary")
    one_line_failure(_continue(cli, env, tmp_path / "run", "--recipe", recipe), 2, contains="not valid TOML")
    _nothing_written(tmp_path / "run")


# --- the checked state: a checkpoint only from finite tensors ----------------------------------


def test_a_state_turned_non_finite_is_not_saved_and_the_last_finite_step_is_named(
    cli, env, tmp_path, monkeypatch, one_line_failure
):
    original = S.backward_step

    def poisoned(method, optimizer, loss, step, scaler=None):
        original(method, optimizer, loss, step, scaler)
        if step == 1:  # the second step writes a NaN into the weights
            with torch.no_grad():
                weight = next(method.parameters())
                weight[(0,) * weight.ndim] = float("nan")

    monkeypatch.setattr(S, "backward_step", poisoned)
    out = tmp_path / "run"
    r = _continue(cli, env, out, "--checkpoint-every", "1", "--max-steps", "4")
    line = one_line_failure(r, 1, contains="non-finite values in the state after step 2", folder=tmp_path)
    assert f"the last good checkpoint is {out / STATE_FILE} (step 1)" in line
    kept = load_training_state(out / STATE_FILE)
    assert kept["step"] == 1 and nonfinite_tensors(kept["method"]) == []
    assert not (out / "model.safetensors").exists()


# --- checkpoints and their metadata ------------------------------------------------------------

BROKEN = [
    ("shape", "tensor backbone.conv1.weight: expected shape [16, 3, 3, 3], found [8, 3, 3, 3]"),
    ("heads", "metadata 'heads' is not JSON"),
    ("arch", "unknown arch None in metadata"),
]


@pytest.mark.parametrize("command", ["continue", "eval", "inspect"])
@pytest.mark.parametrize("which, message", BROKEN, ids=[w for w, _ in BROKEN])
def test_a_broken_checkpoint_is_refused(cli, env, tmp_path, one_line_failure, command, which, message):
    out = tmp_path / command
    args = {
        "continue": ["--base", env[which], "--data", env["data"], *SMALL],
        "eval": ["--weights", env[which], "--data", env["eval"], "--protocol", "knn"],
        "inspect": ["-w", env[which], "--data", env["eval"], "--image-size", "16"],
    }[command]
    one_line_failure(cli(command, *args, "--out", out), 2, contains=message)
    _nothing_written(out)


def _damaged(state: dict, what: str) -> None:
    if what == "shape":
        state["method"]["model.projector.0.weight"] = torch.zeros(3, 3)
    elif what == "recipe":
        state["recipe"]["run"]["seed"] = "abc"
    else:
        del state["model_info"]


DAMAGE = [
    ("shape", "saved tensor model.projector.0.weight: expected shape [32, 128], found [3, 3]"),
    ("recipe", "its saved recipe run.seed must be an integer from 0 to 4294967295, got 'abc'"),
    ("info", "a damaged training state (no valid model_info)"),
]


@pytest.mark.parametrize("what, message", DAMAGE, ids=[w for w, _ in DAMAGE])
def test_resume_from_a_damaged_state(cli, env, tmp_path, one_line_failure, what, message):
    out = tmp_path / "run"
    assert _continue(cli, env, out, "--max-steps", "1").exit_code == 0
    state = torch.load(out / STATE_FILE, weights_only=True)
    _damaged(state, what)
    torch.save(state, out / STATE_FILE)
    r = cli("continue", "--resume", "--out", out, "--workers", "0")
    one_line_failure(r, 2, contains=message)


# --- evaluation options and data ---------------------------------------------------------------

BAD_EVAL = [
    (("--workers", "-1"), "Invalid value for '--workers'"),
    (("--lr", "nan"), "--lr must be a finite number > 0, got nan"),
    (("--wd", "nan"), "--wd must be a finite number ≥ 0, got nan"),
    (("--protocol", "knn", "--temperature", "nan"), "--temperature must be a finite number > 0"),
    (("--epochs", "0"), "--epochs must be an integer from 1"),
    (("--protocol", "knn", "--epochs", "0"), "--epochs must be an integer from 1"),
    (("--image-size", "99999"), "--image-size must be from 8 to 4096 px"),
]


@pytest.mark.parametrize("args, message", BAD_EVAL, ids=[" ".join(a) for a, _ in BAD_EVAL])
def test_a_bad_eval_option_is_refused(cli, env, tmp_path, one_line_failure, args, message):
    out = tmp_path / "eval"
    r = cli("eval", "--weights", env["bases"]["vicreg"], "--data", env["eval"], "--out", out, *args)
    one_line_failure(r, 2, contains=message)
    assert not out.exists()


def test_eval_on_one_class_is_refused(cli, env, tmp_path, one_line_failure):
    out = tmp_path / "eval"
    weights = env["bases"]["vicreg"]
    r = cli("eval", "--weights", weights, "--data", env["one"], "--protocol", "knn", "--out", out)
    one_line_failure(r, 2, contains="1 class with images (a); an evaluation needs at least two")
    assert not out.exists()


def test_a_subset_file_that_is_not_text_is_refused(cli, env, tmp_path, one_line_failure):
    subset = tmp_path / "subset.txt"
    subset.write_bytes(bytes(range(256)))
    out = tmp_path / "eval"
    weights = env["bases"]["vicreg"]
    args = ["--subset-file", subset, "--out", out, "--json"]  # --json: no progress lines on stderr
    r = cli("eval", "--weights", weights, "--data", env["eval"], *args)
    one_line_failure(r, 2, contains="not a text file of image names")
    assert not out.exists()


def test_an_explicit_fmnist_folder_is_never_replaced(cli, env, tmp_path, one_line_failure):
    missing = tmp_path / "nonexistent"
    r = _continue(cli, env, tmp_path / "run", "--data", f"fmnist:{missing}")
    one_line_failure(r, 2, contains=f"{missing}: no such folder")
    _nothing_written(tmp_path / "run")


# --- data folders that hang or multiply ---------------------------------------------------------


def test_a_fifo_named_like_an_image_is_skipped_not_opened(cli, env, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    os.mkfifo(data / "train" / "a" / "pipe.png")
    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.alarm(120)  # a hang fails the test instead of blocking the suite
    try:
        r = _continue(cli, env, tmp_path / "run", "--data", data, "--max-steps", "1")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert r.exit_code == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_files"] == 2  # the corrupt PNG and the FIFO


def test_a_symlink_loop_does_not_multiply_images(tmp_path):
    _images(tmp_path / "train" / "a", 3, seed=1)
    _images(tmp_path / "train" / "b", 3, seed=2)
    os.symlink(tmp_path / "train" / "a", tmp_path / "train" / "a" / "loop")
    os.symlink(tmp_path / "train", tmp_path / "train" / "b" / "up")
    dataset = resolve_dataset(tmp_path, "train")
    assert len(dataset) == 6 + 3  # b's link to train/ adds a's three images once, as class b


# --- evaluation records ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluation(env, tmp_path_factory):
    """One kNN evaluation folder of the VICReg base."""
    out = tmp_path_factory.mktemp("evaluation") / "knn"
    args = ["eval", "--weights", str(env["bases"]["vicreg"]), "--data", str(env["eval"]), "--protocol", "knn"]
    r = CliRunner().invoke(app, [*args, "--labels", "100%", "--out", str(out), "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    return out


def _edited(evaluation: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "b"
    shutil.copytree(evaluation, copy)
    doc = json.loads((copy / "eval.json").read_text())
    edit(doc)
    (copy / "eval.json").write_text(json.dumps(doc))
    return copy


EDITS = [
    ("no-seed-row", lambda d: d["results"][0].update(seed=7), "not one of 'results' per seed"),
    ("nan-top1", lambda d: d["results"][0].update(top1=float("nan")), "no valid 'results.top1'"),
    ("no-dataset", lambda d: d.pop("dataset"), "no valid 'dataset'"),
    ("no-results", lambda d: d.pop("results"), "no valid 'results'"),
    ("seeds-not-int", lambda d: d.update(seeds=["0"]), "no valid 'seeds'"),
]


@pytest.mark.parametrize("name, edit, message", EDITS, ids=[n for n, _, _ in EDITS])
def test_compare_of_a_damaged_record(cli, evaluation, tmp_path, one_line_failure, name, edit, message):
    other = _edited(evaluation, tmp_path, edit)
    one_line_failure(cli("compare", evaluation, other), 2, contains=message)


def test_compare_of_a_record_without_the_predictions_of_its_seed(cli, evaluation, tmp_path, one_line_failure):
    a = _edited(evaluation, tmp_path, lambda d: (d["results"][0].update(seed=3), d.update(seeds=[3])))
    one_line_failure(cli("compare", a, a), 2, contains="no predictions of seed 3")


# --- pretrain, study, benchmarks -------------------------------------------------------------------


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("seed = 0", 'seed = "abc"', "run.seed must be an integer from 0 to 4294967295, got 'abc'"),
        ('mlp = "', 'mlp = "abc-def" # ', "[model] vicreg heads mlp 'abc-def': expected sizes joined by '-'"),
        ('mlp = "', 'mlp = "99999999-', "each size must be an integer from 1 to 65536"),
    ],
)
def test_a_bad_pretraining_recipe_is_refused(cli, tmp_path, one_line_failure, old, new, message):
    text = (RECIPES_DIR / "fmnist-vicreg.toml").read_text()
    assert old in text
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text.replace(old, new, 1))
    out = tmp_path / "run"
    one_line_failure(cli("pretrain", "--recipe", recipe, "--out", out), 2, contains=message)
    assert not out.exists() and not (Path(os.environ["SSLBOOST_CACHE"]) / "init").exists()


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("e2mc:criterion.betta=1", "the e2mc runs of the study: --set 'criterion.betta=1': unknown key"),
        ("criterion.beta=1", "the continued runs of the study: --set 'criterion.beta=1': unknown key"),
        ("e2mc:criterion.beta=nan", "criterion.beta must be a finite number, got nan"),
    ],
)
def test_a_study_set_no_recipe_takes_is_refused_before_any_cell(
    cli, env, tmp_path, one_line_failure, assignment, message
):
    out = tmp_path / "study"
    args = ["--base", env["bases"]["vicreg"], "--data", env["eval"], "--criteria", "continued,e2mc"]
    r = cli("study", *args, "--out", out, "--seeds", "1", "--max-steps", "1", "--set", assignment)
    one_line_failure(r, 2, contains=message)
    assert not out.exists()


def test_bench_criteria_refuses_what_the_device_cannot_hold(cli, one_line_failure):
    r = cli("bench", "criteria", "--dims", "99999999999", "--device", "cpu")
    one_line_failure(r, 2, contains="--dims 99999999999: a cell needs about")


def test_bench_eval_on_an_unknown_device(cli, one_line_failure):
    one_line_failure(cli("bench", "eval", "--device", "tpu"), 2, contains="--device tpu: expected auto, cpu")
