"""Snapshots of a run at chosen epochs (``run.snapshot_epochs``): the model at exactly that step,
written once, kept across a resume, listed in the summary; bad points are one line (tiny runs)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train import make_bases, make_data

from e2mc_cli.errors import UserError
from e2mc_cli.training import snapshots as S

# An epoch of the test data is 2 steps (20 images, batch 8). A constant learning rate without
# warm-up: the update of step k then depends on nothing but the steps before it, so the first k
# steps of a longer run are exactly those of a run of k steps (under the cosine schedule the
# learning rate of step k depends on the run's length, and the two would differ).
TINY = ["--batch-size", "8", "--image-size", "8", "--workers", "0"]
CONSTANT = ["--set", "optim.schedule=constant", "--set", "optim.warmup_epochs=0", "--criterion", "continued"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("snapshots")
    return {"data": make_data(root / "data"), "bases": make_bases(root)}


def train(cli, env, out, *extra):
    args = ("continue", "--base", env["bases"]["vicreg"], "--data", env["data"], "--out", out)
    return cli(*args, *TINY, *CONSTANT, "--no-eval-after", *extra)


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_snapshot_is_the_model_of_a_run_stopped_there_and_survives_a_resume(cli, env, tmp_path):
    full = tmp_path / "full"
    r = train(cli, env, full, "--epochs", "2", "--set", "run.snapshot_epochs=[0.5, 1]")
    assert r.exit_code == 0, r.stderr
    short = tmp_path / "short"
    assert train(cli, env, short, "--epochs", "1").exit_code == 0
    snap = S.snapshot_file(full, 1)
    assert snap == full / "snapshots" / "epoch-1" / "sslboost.safetensors"
    assert same(weights(snap), weights(short / "sslboost.safetensors"))  # bitwise: step 2 of both
    assert not same(weights(snap), weights(full / "sslboost.safetensors"))  # and not the end of the run
    info = S.read_snapshot(full, 1)
    assert (info["step"], info["epochs"], info["epoch"], info["images_seen"]) == (2, 1.0, 101.0, 16)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["snapshots"] == [
        {"epochs": 0.5, "step": 1, "path": "snapshots/epoch-0.5/sslboost.safetensors", "written": True},
        {"epochs": 1.0, "step": 2, "path": "snapshots/epoch-1/sslboost.safetensors", "written": True},
    ]

    # Stopped exactly on the point (state saved there), its snapshot lost: a resume writes it first.
    part = tmp_path / "part"
    r = train(cli, env, part, "--epochs", "2", "--set", "run.snapshot_epochs=[0.5, 1]", "--max-steps", "2")
    assert r.exit_code == 0, r.stderr
    (S.snapshot_dir(part, 1) / S.SNAPSHOT_INFO).unlink()
    r = cli("continue", "--out", part, "--resume", "--max-steps", "3", "--workers", "0", "--no-eval-after")
    assert r.exit_code == 0, r.stderr
    assert same(weights(S.snapshot_file(part, 1)), weights(snap))
    stamps = {e: S.snapshot_file(part, e).stat().st_mtime_ns for e in (0.5, 1)}
    r = cli("continue", "--out", part, "--resume", "--max-steps", "4", "--workers", "0", "--no-eval-after")
    assert r.exit_code == 0, r.stderr
    assert {e: S.snapshot_file(part, e).stat().st_mtime_ns for e in (0.5, 1)} == stamps  # not written again
    assert same(weights(part / "sslboost.safetensors"), weights(full / "sslboost.safetensors"))
    assert same(weights(S.snapshot_file(part, 0.5)), weights(S.snapshot_file(full, 0.5)))


def test_overwrite_removes_the_snapshots_of_the_earlier_run(cli, env, tmp_path):
    out = tmp_path / "run"
    assert train(cli, env, out, "--epochs", "1", "--set", "run.snapshot_epochs=[0.5]").exit_code == 0
    assert S.read_snapshot(out, 0.5) is not None
    assert train(cli, env, out, "--epochs", "1", "--overwrite").exit_code == 0
    assert not (out / "snapshots").exists()
    assert "snapshots" not in json.loads((out / "summary.json").read_text())


def test_snapshot_points_are_checked():
    assert S.parse_points("1, 3,10") == [1, 3, 10] and S.parse_points([0.5, 2.0]) == [0.5, 2]
    assert S.snapshot_steps([0.25, 1, 3], 4, 3) == (1, 4, 12)
    assert S.snapshot_steps([0.2479], 234, 1) == (58,)  # 58 / 234 = 0.24786: a whole step to 4 decimals
    with pytest.raises(UserError, match=r"0.25 epochs is 58.5 optimiser steps \(234 per epoch\).*0.2479"):
        S.snapshot_steps([0.25], 234, 1)
    with pytest.raises(UserError, match="4 is beyond the run, which trains 3 epochs"):
        S.snapshot_steps([1, 4], 10, 3)
    for bad in ("3,1", "1,1", "0,1", "1,x", "-1", ""):
        with pytest.raises(UserError):
            S.parse_points(bad)


def test_pretrain_rejects_bad_snapshot_points_in_one_line(cli, tmp_path, env):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        '[recipe]\nname = "tiny-simsiam"\nmethod = "simsiam"\n'
        '[model]\narch = "resnet-mini"\ndim = 16\npred_dim = 4\n'
        '[run]\nepochs = 1\nbatch_size = 8\n[optim]\nname = "sgd"\nlr = 0.05\n'
        '[criterion]\nname = "continued"\n[views]\nimage_size = 8\n'
    )
    base = ("pretrain", "--recipe", recipe, "--data", env["data"], "--workers", "0")
    for points, says in (
        ("0.5,2", "2 is beyond the run, which trains 1 epochs"),
        ("1,0.5", "strictly increasing"),
        ("0.3", "a snapshot is taken on a whole step"),
    ):
        r = cli(*base, "--out", tmp_path / points, "--snapshot-epochs", points)
        assert r.exit_code == 2 and says in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    out = tmp_path / "ok"
    r = cli(*base, "--out", out, "--snapshot-epochs", "0.5")
    assert r.exit_code == 0, r.stderr
    assert S.read_snapshot(out, 0.5)["step"] == 1
