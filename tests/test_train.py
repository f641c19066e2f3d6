"""``sslboost continue`` end to end on tiny models and tiny images (CPU, in-process)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from e2mc_cli.checkpoint import read_metadata, save_checkpoint
from e2mc_cli.methods import build_model
from e2mc_cli.run_layout import STATE_FILE
from e2mc_cli.training import loop as L
from e2mc_cli.training import recipe as R
from e2mc_cli.training.outputs import OUTPUTS
from e2mc_cli.training.plan import TrainOptions
from e2mc_cli.training.setup import plan_run
from e2mc_cli.training.state import load_training_state

TINY_HEADS = {
    "vicreg": {"mlp": "32-32-32"},
    "swav": {"hidden_mlp": 32, "feat_dim": 16, "n_prototypes": 20},
    "simsiam": {"dim": 32, "pred_dim": 8},
    "barlowtwins": {"mlp": "32-32-32"},
    "mocov2": {"dim": 16, "queue_size": 64},
    "dino": {"mlp": "32-16", "out_dim": 40},
}
TINY_HEADS["mocov3"] = {"dim": 16, "mlp_dim": 32}
N_IMAGES = 20  # + 1 corrupt file; batch 8 → 2 steps per epoch


def make_data(root: Path) -> Path:
    """Random 16–24 px PNGs in two class folders, one grayscale, plus one corrupt file."""
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        folder = root / "train" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        size = int(rng.integers(16, 25))
        shape = (size, size) if i == 0 else (size, size, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")
    (root / "train" / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def make_bases(root: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    paths = {}
    for method, heads in TINY_HEADS.items():
        paths[method] = root / f"{method}-tiny.safetensors"
        save_checkpoint(
            paths[method], build_model(method, "resnet-mini", heads), base=f"{method}-tiny", epoch=100
        )
    return paths


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return {"data": make_data(root / "data"), "bases": make_bases(root)}


SMALL = ["--batch-size", "8", "--image-size", "16", "--workers", "0"]


def run_cli(cli, env, method, out, *extra):
    return cli(
        "continue", "--base", env["bases"][method], "--data", env["data"], "--out", out, *SMALL, *extra
    )


@pytest.mark.parametrize("path", R.recipe_files("continue"), ids=lambda p: p.stem)
def test_each_recipe_runs_two_steps(cli, env, tmp_path, path):
    name = path.stem
    shipped = R.loads(path.read_text())
    method, criterion = shipped["recipe"]["method"], shipped["criterion"]["name"]
    # the recipe a base picks by (method, criterion), or any other shipped one with --recipe
    choose = [] if name == f"{method}-{criterion}" else ["--recipe", path]
    out = tmp_path / "run"
    args = [
        "--criterion",
        criterion,
        *choose,
        "--epochs",
        "2",
        "--max-steps",
        "2",
        "--set",
        "run.log_every=1",
    ]
    r = run_cli(cli, env, method, out, *args)
    assert r.exit_code == 0, r.stderr
    assert {p.name for p in out.iterdir()} == {*OUTPUTS}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "max_steps" and summary["steps"] == 2 and summary["data"] == str(env["data"])
    assert summary["images_seen"] == 16 and summary["skipped_files"] == 1
    assert summary["epoch"] == 101.0  # base epoch 100 + 2 steps of 2 per epoch
    meta = read_metadata(out / "sslboost.safetensors")
    assert (meta["base"], meta["criterion"], meta["epoch"]) == (str(env["bases"][method]), criterion, "101")
    recipe = json.loads(meta["recipe"])
    assert recipe == R.loads((out / "recipe.toml").read_text())
    assert recipe["recipe"]["name"] == name and recipe["views"]["image_size"] == 16
    assert meta["command"].startswith("sslboost continue --base ")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    for x in lines:
        assert x["loss"] == pytest.approx(x[f"{method}.loss"] + x[f"{criterion}.loss"], rel=1e-5, abs=1e-6)
        assert {"lr", "img_s", "epoch", "health/entropy", "health/eff_rank", "health/centre_sq"} <= set(x)
    assert summary["final_terms"] == {k: v for k, v in lines[-1].items() if k in summary["final_terms"]}
    state = load_training_state(out / STATE_FILE)
    assert state["step"] == 2 and state["recipe"] == recipe


def test_metrics_and_summary_of_a_full_run(cli, env, tmp_path):
    out = tmp_path / "run"
    r = run_cli(
        cli, env, "vicreg", out, "--epochs", "2", "--set", "run.log_every=3", "--set", "optim.warmup_epochs=1"
    )
    assert r.exit_code == 0, r.stderr
    assert "finished: 4 steps, 32 images" in r.stdout and "1 skipped files" in r.stdout
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]  # under 200 steps: every step, whatever log_every
    # effective lr = 0.003 · 8/256 after one warm-up epoch of 2 steps (constant afterwards)
    assert lines[2]["lr"] == pytest.approx(0.003 * 8 / 256)
    s = json.loads((out / "summary.json").read_text())
    assert (
        s["status"] == "finished" and s["steps"] == 4 and s["epochs_trained"] == 2.0 and s["epoch"] == 102.0
    )
    assert s["wall_time_s"] > 0 and s["images_per_s"] == pytest.approx(32 / s["wall_time_s"], rel=1e-2)
    # chain: the output is a base for the next run, whose epoch counts on
    r2 = cli(
        "continue",
        "--base",
        out / "model.safetensors",
        "--data",
        env["data"],
        "--out",
        tmp_path / "next",
        "--max-steps",
        "1",
        *SMALL,
    )
    assert r2.exit_code == 0, r2.stderr
    assert read_metadata(tmp_path / "next" / "sslboost.safetensors")["epoch"] == "102.5"


def test_existing_out_needs_resume_or_overwrite(cli, env, tmp_path):
    out = tmp_path / "run"
    assert run_cli(cli, env, "simsiam", out, "--max-steps", "1").exit_code == 0
    r = run_cli(cli, env, "simsiam", out, "--max-steps", "1")
    assert r.exit_code == 2 and "--resume" in r.stderr and "--overwrite" in r.stderr
    assert run_cli(cli, env, "simsiam", out, "--max-steps", "1", "--overwrite").exit_code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--criterion", "e2mcc"], "did you mean 'e2mc'"),
        (["--set", "criterion.betta=1"], "did you mean 'criterion.beta'"),
        (["--data", "/no/such/folder"], "no such folder"),
        (["--data", "EMPTY"], "no class folders"),
        (["--base", "/no/such/model.safetensors"], "model.safetensors"),
        (["--batch-size", "64"], "fewer than one batch"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, env, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    base = ["--base", env["bases"]["vicreg"]] if "--base" not in args else []
    data = ["--data", env["data"]] if "--data" not in args else []
    out = tmp_path / "run"
    r = cli("continue", *base, *data, "--out", out, *SMALL, *args)
    assert r.exit_code == 2
    assert message in r.stderr and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def _weights(path):
    return load_file(str(path))


def test_sigint_saves_exits_0_and_resume_is_bitwise_identical(cli, env, tmp_path, monkeypatch):
    args = ("--epochs", "2", "--set", "run.checkpoint_every=100", "--set", "optim.lr=0.5")
    ref = tmp_path / "ref"
    assert run_cli(cli, env, "swav", ref, *args, "--set", "method.queue_length=16").exit_code == 0

    original = L.train_step

    def interrupting(state, plan, views, epoch):
        record = original(state, plan, views, epoch)
        if state.step == 3:  # Ctrl-C arrives during step 3
            os.kill(os.getpid(), signal.SIGINT)
        return record

    out = tmp_path / "run"
    monkeypatch.setattr(L, "train_step", interrupting)
    r = run_cli(cli, env, "swav", out, *args, "--set", "method.queue_length=16")
    monkeypatch.setattr(L, "train_step", original)
    assert r.exit_code == 0, r.stderr
    assert "stopped at step 3" in r.stdout and "--resume" in r.stdout
    assert load_training_state(out / STATE_FILE)["step"] == 3
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler handed back

    r = cli("continue", "--out", out, "--resume", "--workers", "2")  # other worker count, same data
    assert r.exit_code == 0, r.stderr
    a, b = _weights(ref / "sslboost.safetensors"), _weights(out / "sslboost.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["projector.0.weight"], _weights(env["bases"]["swav"])["projector.0.weight"])
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # every step of a short run, each logged once across the resume


def test_nonfinite_loss_stops_names_the_term_and_keeps_the_checkpoint(cli, env, tmp_path, monkeypatch):
    from e2mc_cli.criteria import CRITERIA

    cls = CRITERIA["e2mc"]
    original = cls.compute
    calls = {"n": 0}

    def poisoned(self, views):
        calls["n"] += 1
        loss, terms = original(self, views)
        if calls["n"] == 3:  # the third step goes bad
            terms = {**terms, "ent": terms["ent"] * float("nan")}
            loss = loss * float("nan")
        return loss, terms

    monkeypatch.setattr(cls, "compute", poisoned)
    out = tmp_path / "run"
    r = run_cli(cli, env, "vicreg", out, "--epochs", "3", "--set", "run.checkpoint_every=1")
    assert r.exit_code == 1
    assert (
        "non-finite loss at step 3" in r.stderr
        and "e2mc.ent = nan" in r.stderr
        and "e2mc.loss = nan" in r.stderr
    )
    assert "vicreg.loss" not in r.stderr
    state = load_training_state(out / STATE_FILE)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())
    assert not (out / "sslboost.safetensors").exists() and not (out / "model.safetensors").exists()


def test_bad_set_value_writes_nothing(cli, tmp_path):
    """A mistyped --set value is caught before the run folder is created."""
    out = tmp_path / "run"
    r = cli(
        "continue",
        "--base",
        "fmnist-vicreg",
        "--criterion",
        "e2mc",
        "--set",
        "optim.schedule=linear",
        "--out",
        out,
        "--max-steps",
        "1",
    )
    assert r.exit_code == 2
    assert "optim.schedule 'linear'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_plan_run_writes_nothing_and_a_resumed_plan_reads_the_run_back(cli, env, tmp_path):
    out = tmp_path / "run"
    new = TrainOptions(
        base=str(env["bases"]["vicreg"]), data=str(env["data"]), out=str(out), batch_size=8, image_size=16
    )
    plan = plan_run(new, torch.device("cpu"))
    assert not out.exists()  # planning only reads
    assert not plan.resuming and plan.base is not None and plan.start_step == 0 and not plan.notes
    assert (plan.criterion_name, plan.steps_per_epoch, plan.total_steps) == ("e2mc", 2, 20)

    assert run_cli(cli, env, "vicreg", out, "--max-steps", "1").exit_code == 0
    resumed = plan_run(TrainOptions(out=str(out), resume=True, epochs=3), torch.device("cpu"))
    assert resumed.resuming and resumed.base is None and resumed.start_step == 1
    assert resumed.recipe == R.loads((out / "recipe.toml").read_text())
    assert resumed.notes and resumed.notes[0].startswith("note: resuming with the recipe saved in")
    for name in ("method_name", "arch", "base_name", "base_epoch", "steps_per_epoch", "total_steps"):
        assert getattr(resumed, name) == getattr(plan, name), name


def test_a_run_stopped_early_logs_at_the_steps_of_the_whole_run(env, tmp_path):
    """The metrics interval comes from the run's length, not from where this invocation stops, so a
    run stopped at --max-steps (or at a snapshot point) and resumed logs as one trained in one go."""
    common = dict(
        base=str(env["bases"]["vicreg"]), data=str(env["data"]), batch_size=1, image_size=16, epochs=20
    )
    whole = plan_run(TrainOptions(out=str(tmp_path / "whole"), **common), torch.device("cpu"))
    part = plan_run(TrainOptions(out=str(tmp_path / "part"), max_steps=10, **common), torch.device("cpu"))
    assert whole.total_steps == part.total_steps == 20 * whole.steps_per_epoch >= 400
    assert part.end_step == 10
    # the run's length // 100 points, under the recipe's log_every of 20; not every step (10 // 100 → 1)
    assert part.log_every == whole.log_every == whole.total_steps // 100 >= 4


def test_a_cpu_run_resumed_on_other_threads_says_it_no_longer_matches_bit_for_bit(cli, env, tmp_path):
    out = tmp_path / "run"
    assert run_cli(cli, env, "vicreg", out, "--max-steps", "1").exit_code == 0
    state = torch.load(out / STATE_FILE, weights_only=True)
    assert isinstance(state["cpu_threads"], int) and state["cpu_threads"] >= 1

    def notes_with(threads: int) -> list[str]:
        torch.save({**state, "cpu_threads": threads}, out / STATE_FILE)
        plan = plan_run(TrainOptions(out=str(out), resume=True), torch.device("cpu"))
        return [n for n in plan.notes if "CPU threads" in n]

    now = torch.get_num_threads()
    assert notes_with(now) == []
    (note,) = notes_with(now + 1)
    assert note == (
        f"note: this run trained on {now + 1} CPU threads and resumes on {now}; from here its weights "
        f"differ from an uninterrupted run's by floating-point rounding (OMP_NUM_THREADS={now + 1} "
        "resumes it bit for bit)"
    )
