"""Barlow Twins' official files served on 127.0.0.1: each base fetched and converted tensor for
tensor (the full checkpoint round-trips to its official keys exactly), the backbone-only files
with ``--allow-new-heads``; each base continued with E2MC for two steps and the result evaluated,
inspected, exported and pushed (dry run); an interrupted run resumed bitwise."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
import torch
import zoo_fixtures_barlowtwins as B
from safetensors.torch import load_file
from zoo_fixtures import one_error_line, serve, vicreg_full

from e2mc_cli.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from e2mc_cli.data.synthetic import SyntheticImages, write_image_folder
from e2mc_cli.methods import build_model
from e2mc_cli.training import loop as L
from e2mc_cli.zoo import BASES

TINY = {"mlp": "32-32-32"}
PATHS = {  # README (since 2021-12) and hubconf.py of facebookresearch/barlowtwins
    "barlowtwins": "/barlowtwins/ljng/checkpoint.pth",
    "barlowtwins-backbone": "/barlowtwins/ljng/resnet50.pth",
    "barlowtwins-hub": "/barlowtwins/ep1000_bs2048_lrw0.2_lrb0.0048_lambd0.0051/resnet50.pth",
}
BACKBONE_ONLY = ["barlowtwins-backbone", "barlowtwins-hub"]
CPU = ["--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A 32 px ImageFolder of 4 classes: 6 training and 3 validation images each."""
    root = tmp_path_factory.mktemp("bt-images")
    return write_image_folder(
        root,
        {
            "train": SyntheticImages(6, n_classes=4, image_size=32, seed=0),
            "val": SyntheticImages(3, n_classes=4, image_size=32, seed=1),
        },
    )


@pytest.fixture
def served(monkeypatch):
    """Tiny files of every Barlow Twins base in its official layout, served as the official host."""
    for name in PATHS:
        monkeypatch.setitem(BASES, name, dataclasses.replace(BASES[name], arch="resnet-mini", heads=TINY))
    files = {"barlowtwins": B.full_checkpoint(), **{name: B.backbone_file() for name in BACKBONE_ONLY}}
    with serve({PATHS[name]: official.data for name, official in files.items()}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        yield files


def test_the_registry_holds_the_official_releases(cli):
    for name, path in PATHS.items():
        spec = BASES[name]
        assert spec.url == "https://dl.fbaipublicfiles.com" + path
        assert (spec.method, spec.arch, spec.epochs, spec.batch_size) == (
            "barlowtwins", "resnet50", 1000, 2048,
        )  # fmt: skip
        assert (spec.licence, spec.linear_top1, spec.heads) == ("MIT", 73.5, None)
    rows = {r["name"]: r for r in json.loads(cli("bases", "--json").stdout)}
    assert {rows[name]["method"] for name in PATHS} == {"barlowtwins"}


def test_the_full_checkpoint_converts_tensor_for_tensor_and_back(cli, served, tmp_path):
    official = served["barlowtwins"]
    out = tmp_path / "bt.safetensors"
    r = cli("convert", "--base", "barlowtwins", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert "({epoch, model, optimizer}, epoch 1000)" in r.stdout
    assert "3 tensors → bn.*" in r.stdout and "dropped: optimizer" in r.stdout and "NEW HEADS" not in r.stdout
    ckpt = load_checkpoint(out)
    meta = ckpt.metadata
    assert (meta["method"], meta["base"], meta["epoch"]) == ("barlowtwins", "barlowtwins", "1000")
    assert meta["licence"] == "MIT"
    # canonical → official is "module." in front of every key: the same tensors, dtypes included
    back = {"module." + k: v for k, v in ckpt.state_dict.items()}
    assert sorted(back) == sorted(official.source)
    for key, value in official.source.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    model = ckpt.build_model()
    for name, module in official.modules.items():
        ours = getattr(model, name).state_dict()
        assert all(torch.equal(ours[k], v) for k, v in module.state_dict().items()), name
    # its LARS state numbers the weights first, then the 1-d tensors: positions that do not follow
    # the model's order, so it is refused, in one line, with nothing written
    kept = tmp_path / "with-state.safetensors"
    line = one_error_line(cli("convert", "--base", "barlowtwins", "--out", kept, "--optimizer-state"))
    assert "optimiser state" in line and not kept.exists()


@pytest.mark.parametrize("name", BACKBONE_ONLY)
def test_backbone_files_need_allow_new_heads_and_say_so(cli, served, images, tmp_path, name):
    official = served[name]
    out = tmp_path / "bt.safetensors"
    line = one_error_line(cli("convert", "--base", name, "--out", out))
    assert "--allow-new-heads" in line and "no projector for barlowtwins" in line and not out.exists()
    r = cli("convert", "--base", name, "--out", out, "--allow-new-heads")
    assert r.exit_code == 0, r.stderr
    # the projector is new; bn's running statistics are state, started where the official code starts them
    assert "NEW HEADS: projector" in r.stdout and "freshly initialised" in r.stderr
    assert "kept: bn (3 tensors)" in r.stdout
    ckpt = load_checkpoint(out)
    assert ckpt.metadata["new_heads"] == "projector" and ckpt.metadata["epoch"] == "1000"
    for key, value in official.source.items():
        assert torch.equal(ckpt.state_dict["backbone." + key], value), key
    # the bn starts as main.py's: mean 0, variance 1, no batch seen
    assert torch.equal(ckpt.state_dict["bn.running_mean"], torch.zeros(32))
    assert torch.equal(ckpt.state_dict["bn.running_var"], torch.ones(32))
    assert int(ckpt.state_dict["bn.num_batches_tracked"]) == 0
    line = one_error_line(cli("continue", "--base", name, "--out", tmp_path / "run", "--data", images))
    assert "--allow-new-heads" in line and not (tmp_path / "run").exists()


def test_vicreg_and_barlow_twins_files_are_told_apart(cli, tmp_path):
    vicreg = tmp_path / "resnet50_fullckpt.pth"
    vicreg.write_bytes(vicreg_full().data)
    barlow = tmp_path / "checkpoint.pth"
    barlow.write_bytes(B.full_checkpoint().data)
    out = tmp_path / "m.safetensors"
    line = one_error_line(cli("convert", "--base-file", vicreg, "--method", "barlowtwins", "--out", out))
    assert "looks like a vicreg checkpoint" in line
    line = one_error_line(cli("convert", "--base-file", barlow, "--method", "vicreg", "--out", out))
    assert "looks like a barlowtwins checkpoint" in line
    line = one_error_line(cli("convert", "--base-file", barlow, "--out", out))
    assert "it looks like a barlowtwins checkpoint" in line and not out.exists()


def _continue_two_steps(cli, name: str, images, run, served) -> None:
    """``continue --base NAME --criterion e2mc --max-steps 2 --image-size 32`` on the tiny images."""
    new_heads = ["--allow-new-heads"] if name in BACKBONE_ONLY else []
    r = cli("continue", "--base", name, "--criterion", "e2mc", "--max-steps", "2", "--image-size", "32",
            "--data", images, "--out", run, "--batch-size", "8", *CPU, *new_heads)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("max_steps", 2)
    meta = read_metadata(run / "sslboost.safetensors")
    assert (meta["method"], meta["base"], meta["criterion"]) == ("barlowtwins", name, "e2mc")
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    terms = {"barlowtwins.loss", "barlowtwins.on_diag", "barlowtwins.off_diag", "e2mc.ent", "e2mc.cov"}
    assert terms <= set(line)
    before = 0 if name in BACKBONE_ONLY else int(served[name].source["module.bn.num_batches_tracked"])
    after = load_file(str(run / "sslboost.safetensors"))["bn.num_batches_tracked"]
    assert int(after) == before + 4  # two steps, the bn of each of the two views


def test_each_base_continues_and_the_result_evaluates_inspects_exports_and_pushes(
    cli, served, images, tmp_path
):
    runs = [tmp_path / name for name in PATHS]
    for name, run in zip(PATHS, runs):
        _continue_two_steps(cli, name, images, run, served)
        r = cli("eval", "--weights", run / "model.safetensors", "--protocol", "knn", "--labels", "100%",
                "--data", images, "--image-size", "32", "--out", run / "eval-knn", *CPU)  # fmt: skip
        assert r.exit_code == 0, r.stderr
        assert json.loads((run / "eval-knn" / "eval.json").read_text())["protocol"] == "knn"
        r = cli("export", run)
        assert r.exit_code == 0, r.stderr
        card = (run / "README.md").read_text()
        assert "Barlow Twins" in card and "Redundancy Reduction" in card and "mit" in card
        r = cli("push", run, "--repo", f"me/{name}-e2mc", "--dry-run")
        assert r.exit_code == 0, r.stderr
        assert "sslboost.safetensors" in r.stdout and "eval-knn/eval.json" in r.stdout
    weights = [arg for run in runs for arg in ("--weights", run / "model.safetensors")]
    r = cli("inspect", *weights, "--data", images, "--image-size", "32", "--out", tmp_path / "inspect",
            "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    models = json.loads((tmp_path / "inspect" / "inspect.json").read_text())["models"]
    described = [(m["method"], m["space"], m["projector"]["d"]) for m in models]
    assert described == [("barlowtwins", "hypercube", 32)] * 3


def test_an_interrupted_run_resumes_bitwise(cli, images, tmp_path, monkeypatch):
    base = tmp_path / "bt-tiny.safetensors"
    torch.manual_seed(0)
    save_checkpoint(base, build_model("barlowtwins", "resnet-mini", TINY), base="bt-tiny", epoch=1000)
    common = ["--base", base, "--data", images, "--batch-size", "8", "--image-size", "16", *CPU,
              "--epochs", "1", "--set", "run.checkpoint_every=100", "--set", "optim.lr=0.5"]  # fmt: skip
    ref = tmp_path / "ref"
    assert cli("continue", *common, "--out", ref).exit_code == 0

    original = L.train_step

    def interrupting(state, plan, views, epoch):
        record = original(state, plan, views, epoch)
        if state.step == 2:  # Ctrl-C arrives in the middle of the epoch (3 steps)
            os.kill(os.getpid(), signal.SIGINT)
        return record

    out = tmp_path / "run"
    monkeypatch.setattr(L, "train_step", interrupting)
    r = cli("continue", *common, "--out", out)
    monkeypatch.setattr(L, "train_step", original)
    assert r.exit_code == 0 and "stopped at step 2" in r.stdout, r.stderr
    r = cli("continue", "--out", out, "--resume")
    assert r.exit_code == 0, r.stderr
    a, b = load_file(str(ref / "sslboost.safetensors")), load_file(str(out / "sslboost.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["bn.num_batches_tracked"]) == 6  # 3 steps × 2 views: the statistics came back too
    assert not torch.equal(a["bn.running_mean"], torch.zeros(32))
