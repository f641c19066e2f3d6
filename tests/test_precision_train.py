"""``continue`` and ``pretrain`` with ``--precision``: the plan's precision, what the run records,
the fp16 gradient scaler's state saved and resumed bit for bit (CPU fp16 autocast), a resumed run
keeping its precision, and bad input as one line with exit code 2."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train import SMALL, make_bases, make_data

from e2mc_cli.checkpoint import read_metadata
from e2mc_cli.run_layout import STATE_FILE
from e2mc_cli.training import recipe as R
from e2mc_cli.training.plan import TrainOptions
from e2mc_cli.training.setup import plan_run
from e2mc_cli.training.state import load_training_state

INITIAL_SCALE = 65536.0  # torch.amp.GradScaler's init_scale


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    return {"data": make_data(root / "data"), "bases": make_bases(root)}


def run_cli(cli, env, method, out, *extra):
    return cli(
        "continue", "--base", env["bases"][method], "--data", env["data"], "--out", out, *SMALL, *extra
    )


def _weights(path):
    return load_file(str(path))


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _options(env, method, out, **changes) -> TrainOptions:
    base, data = str(env["bases"][method]), str(env["data"])
    return TrainOptions(base=base, data=data, out=str(out), batch_size=8, image_size=16, **changes)


@pytest.mark.parametrize(
    ("method", "device", "requested", "expected"),
    [
        ("vicreg", "cuda", None, "fp16"),  # the recipe's (the authors') choice on CUDA
        ("swav", "cuda", None, "fp16"),
        ("simsiam", "cuda", None, "fp32"),
        ("vicreg", "cpu", None, "fp32"),  # a recipe default does not apply on the CPU
        ("vicreg", "cpu", "fp16", "fp16"),  # --precision does
        ("simsiam", "cuda", "bf16", "bf16"),
    ],
)
def test_the_plan_takes_precision_from_the_option_the_recipe_and_the_device(
    env, tmp_path, method, device, requested, expected
):
    plan = plan_run(_options(env, method, tmp_path / "run", precision=requested), torch.device(device))
    assert plan.precision == expected and plan.recipe["run"]["precision"] == expected


def test_an_fp16_run_resumes_bitwise_with_its_gradient_scaler(cli, env, tmp_path):
    # 4 steps of 2 + 2 crops (fp16 convolutions are slow on a CPU)
    args = ("--precision", "fp16", "--epochs", "2", "--set", "views.nmb_crops=[2, 2]")
    ref = tmp_path / "ref"
    r = run_cli(cli, env, "swav", ref, *args)  # SwAV: its hook drops the prototypes' gradients
    assert r.exit_code == 0, r.stderr
    assert "fp16 autocast + gradient scaler" in r.stdout  # the start-up display
    assert json.loads((ref / "summary.json").read_text())["precision"] == "fp16"
    assert R.loads((ref / "recipe.toml").read_text())["run"]["precision"] == "fp16"
    assert json.loads(read_metadata(ref / "sslboost.safetensors")["recipe"])["run"]["precision"] == "fp16"
    final = load_training_state(ref / STATE_FILE)["scaler"]

    out = tmp_path / "run"
    assert run_cli(cli, env, "swav", out, *args, "--max-steps", "2").exit_code == 0
    saved = load_training_state(out / STATE_FILE)
    # fp16 overflowed at the initial scale: the scaler backed off, a state a fresh one would not have
    assert saved["scaler"]["scale"] < INITIAL_SCALE
    lost = tmp_path / "lost"
    lost.mkdir()
    for name in ("recipe.toml", "metrics.jsonl"):
        (lost / name).write_bytes((out / name).read_bytes())
    (lost / "checkpoints").mkdir()
    torch.save({**saved, "scaler": {}}, lost / STATE_FILE)

    r = cli("continue", "--out", out, "--resume", "--max-steps", "4")  # no --precision: it keeps its own
    assert r.exit_code == 0, r.stderr
    assert _same_weights(ref / "sslboost.safetensors", out / "sslboost.safetensors")
    assert load_training_state(out / STATE_FILE)["scaler"] == final
    # the same resume from a state without its scaler (a fresh one, scale 65536) ends with another
    # scaler state: the saved one is what makes the resumed run the uninterrupted one
    assert cli("continue", "--out", lost, "--resume", "--max-steps", "4").exit_code == 0
    assert load_training_state(lost / STATE_FILE)["scaler"] != final


def test_fp32_and_bf16_runs_have_no_scaler_and_a_resume_keeps_the_precision(cli, env, tmp_path):
    out = tmp_path / "run"
    r = run_cli(cli, env, "vicreg", out, "--precision", "bf16", "--max-steps", "1")
    assert r.exit_code == 0, r.stderr
    assert "device cpu, bf16 autocast (heads' last layers and losses in fp32)" in r.stdout
    assert load_training_state(out / STATE_FILE)["scaler"] == {}
    r = cli("continue", "--out", out, "--resume", "--precision", "fp16", "--max-steps", "2")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {out}: this run trains in bf16, not --precision fp16; resume it without --precision, "
        "or start a new run with another --out"
    ]
    r = cli("continue", "--out", out, "--resume", "--precision", "bf16", "--max-steps", "2")
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["precision"] == "bf16"
    default = tmp_path / "default"
    assert run_cli(cli, env, "simsiam", default, "--max-steps", "1").exit_code == 0
    assert json.loads((default / "summary.json").read_text())["precision"] == "fp32"


@pytest.mark.parametrize("command", ["continue", "pretrain"])
def test_a_bad_precision_is_one_line_and_exit_code_2(cli, env, tmp_path, command):
    out = tmp_path / "run"
    if command == "continue":
        r = run_cli(cli, env, "vicreg", out, "--precision", "fp8")
    else:
        r = cli("pretrain", "--recipe", "fmnist-vicreg", "--out", out, "--precision", "half")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown --precision" in lines[0] and "bf16, fp16, fp32" in lines[0]
    assert not out.exists()
    r = run_cli(cli, env, "vicreg", out, "--set", "run.precision=fp64")
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: recipe run.precision 'fp64': expected one of: bf16, fp16, fp32"


def test_pretrain_records_the_precision_it_was_given(cli, tmp_path):
    out = tmp_path / "scratch"
    r = cli(
        "pretrain", "--recipe", "fmnist-simsiam", "--out", out, "--precision", "bf16",
        "--max-steps", "1", "--batch-size", "8", "--workers", "0",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert R.loads((out / "recipe.toml").read_text())["run"]["precision"] == "bf16"
    assert json.loads((out / "summary.json").read_text())["precision"] == "bf16"
