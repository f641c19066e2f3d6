"""``--log tensorboard|wandb|csv``: every metrics record, the recipe and the final figures, read
back from each tracker's own files (TensorBoard's event reader, the W&B offline run, the csv module)."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
from test_train import SMALL, make_bases, make_data

from e2mc_cli import trackers as T
from e2mc_cli.data.synthetic import ColourImages, write_image_folder
from e2mc_cli.errors import UserError
from e2mc_cli.training import recipe as R

needs_extras = pytest.mark.skipif(
    not (T.extra_installed("tensorboard") and T.extra_installed("wandb")),
    reason="the tensorboard and wandb extras are not installed",
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("trackers")
    return {"data": make_data(root / "data"), "bases": make_bases(root)}


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def train(cli, env, out, *extra):
    return cli(
        "continue", "--base", env["bases"]["vicreg"], "--data", env["data"], "--out", out, *SMALL, *extra
    )


def metrics_lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def tensorboard_scalars(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], object]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def tensorboard_hparams(acc) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    for content in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.WhichOneof("data") == "session_start_info":
            hp = data.session_start_info.hparams
            return {
                k: v.number_value if v.HasField("number_value") else v.string_value for k, v in hp.items()
            }
    return {}


def wandb_records(folder: Path) -> list:
    """Every record of the offline run under ``folder/wandb``: its ``run-*.wandb`` file is a
    LevelDB-style log (a 7-byte header, then chunks of crc32, length, type in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, block, chunk, records = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def _key(item) -> str:
    return item.key or ".".join(item.nested_key)


def wandb_run(folder: Path) -> tuple[dict[int, dict], dict, dict]:
    """(history rows by step, config, summary) of the offline W&B run in ``folder``."""
    history, config, summary = {}, {}, {}
    for r in wandb_records(folder):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            row = {_key(i): json.loads(i.value_json.replace("NaN", "null")) for i in r.history.item}
            history[int(row["_step"])] = row
        elif kind == "run":
            config.update({_key(i): json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in r.summary.update if _key(i)})
    return history, config, summary


def test_names_are_checked_and_a_missing_extra_names_its_pip_command(monkeypatch):
    assert T.check_trackers(["csv", "tensorboard", "csv"]) == ["csv", "tensorboard"]
    with pytest.raises(UserError, match=r"unknown tracker 'tensorbord' \(did you mean 'tensorboard'\?\)"):
        T.check_trackers(["tensorbord"])
    monkeypatch.setattr(T, "extra_installed", lambda package: package != "wandb")
    with pytest.raises(
        UserError, match=r"--log wandb needs the wandb package: pip install 'sslboost\[wandb\]'"
    ):
        T.check_trackers(["csv", "wandb"])


def test_a_missing_extra_stops_the_command_before_anything_runs(cli, env, tmp_path, monkeypatch):
    monkeypatch.setattr(T, "extra_installed", lambda package: package != "tensorboard")
    out = tmp_path / "run"
    r = train(cli, env, out, "--log", "csv", "--log", "tensorboard")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert (
        lines[0]
        == "error: --log tensorboard needs the tensorboard package: pip install 'sslboost[tensorboard]'"
    )
    assert not out.exists()


@needs_extras
def test_a_training_run_logs_every_record_the_recipe_and_the_results(cli, env, tmp_path):
    out = tmp_path / "run"
    r = train(cli, env, out, "--epochs", "2", "--log", "tensorboard", "--log", "wandb", "--log", "csv")
    assert r.exit_code == 0, r.stderr
    lines = metrics_lines(out)
    steps = [x["step"] for x in lines]
    assert steps == [1, 2, 3, 4]
    recipe = R.loads((out / "recipe.toml").read_text())

    scalars, acc = tensorboard_scalars(out / "tensorboard")
    for key in ("loss", "vicreg.loss", "e2mc.ent", "e2mc.cov", "lr", "health/eff_rank"):
        assert [s for s, _ in scalars[key]] == steps, key
        assert [v for _, v in scalars[key]] == pytest.approx([x[key] for x in lines], rel=1e-6), key
    assert scalars["run/steps"] == [(4, 4.0)]
    hparams = tensorboard_hparams(acc)
    assert hparams["optim.lr"] == pytest.approx(recipe["optim"]["lr"])
    assert hparams["criterion.name"] == "e2mc" and hparams["run.epochs"] == 2

    history, config, summary = wandb_run(out)
    assert sorted(history) == steps
    for x in lines:
        assert history[x["step"]]["loss"] == pytest.approx(x["loss"], rel=1e-9)
        assert history[x["step"]]["e2mc.ent"] == pytest.approx(x["e2mc.ent"], rel=1e-9)
    assert config["optim"]["lr"] == recipe["optim"]["lr"] and config["criterion"]["name"] == "e2mc"
    assert summary["run/steps"] == 4 and summary["run/images_seen"] == 32

    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["step"]) for row in rows] == steps
    for row, x in zip(rows, lines):
        assert {k: float(v) for k, v in row.items()} == pytest.approx(x, nan_ok=True)
    with open(out / "results.csv", newline="") as f:
        results = {row["name"]: float(row["value"]) for row in csv.DictReader(f)}
    assert results["run/steps"] == 4 and results["run/epochs_trained"] == 2

    # a push sends the TensorBoard events (the Hub's Training metrics tab) and the CSVs, not wandb/
    from e2mc_cli.publish import publishable_files

    sent = {f.path_in_repo for f in publishable_files(out)}
    events = {p.relative_to(out).as_posix() for p in (out / "tensorboard").rglob("events.out.tfevents.*")}
    assert events and events <= sent and {"metrics.csv", "results.csv"} <= sent
    assert not any(path.startswith("wandb/") for path in sent)


@needs_extras
def test_a_resumed_run_continues_its_trackers_without_duplicates(cli, env, tmp_path):
    out = tmp_path / "run"
    first = train(cli, env, out, "--epochs", "2", "--max-steps", "2", "--log", "csv", "--log", "tensorboard")
    assert first.exit_code == 0, first.stderr
    with open(out / "metrics.csv", "a") as f:  # a step logged after the last checkpoint, then killed
        f.write("3,1.5,999\n")
    r = cli("continue", "--out", out, "--resume", "--max-steps", "4", "--log", "csv", "--log", "tensorboard")
    assert r.exit_code == 0, r.stderr
    with open(out / "metrics.csv", newline="") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [1, 2, 3, 4]
    scalars, _ = tensorboard_scalars(out / "tensorboard")
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3, 4]
    assert [v for _, v in scalars["loss"]] == pytest.approx([x["loss"] for x in metrics_lines(out)], rel=1e-6)


@needs_extras
def test_a_new_run_replaces_the_tracker_outputs_of_an_earlier_one(cli, env, tmp_path):
    out = tmp_path / "run"
    assert train(cli, env, out, "--max-steps", "1", "--log", "csv", "--log", "tensorboard").exit_code == 0
    r = train(cli, env, out, "--max-steps", "1", "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert not (out / "metrics.csv").exists() and not (out / "tensorboard").exists()


@needs_extras
def test_eval_logs_its_configuration_per_seed_results_and_means(cli, tmp_path):
    import torch

    from e2mc_cli.checkpoint import save_checkpoint
    from e2mc_cli.methods import build_model

    data = tmp_path / "colours"
    write_image_folder(
        data, {"train": ColourImages(10, 4, 12, seed=0), "val": ColourImages(5, 4, 12, seed=1)}
    )
    torch.manual_seed(0)
    weights = tmp_path / "model.safetensors"
    save_checkpoint(
        weights, build_model("vicreg", "resnet-mini", {"mlp": "16-16"}), base="b", criterion="e2mc"
    )
    out = tmp_path / "ev"
    args = ["--labels", "50%", "--seeds", "2", "--mode", "cached", "--epochs", "3", "--out", out]
    r = cli("eval", "--weights", weights, "--data", data, *args, "--log", "tensorboard", "--log", "wandb")
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "eval.json").read_text())
    scalars, acc = tensorboard_scalars(out / "tensorboard")
    assert scalars["top1"] == pytest.approx([(i, row["top1"]) for i, row in enumerate(rec["results"])])
    assert scalars["eval/top1"][0][1] == pytest.approx(rec["top1"]["mean"])
    hparams = tensorboard_hparams(acc)
    assert hparams["protocol"] == "linear" and hparams["hyperparameters.epochs"] == 3
    history, config, summary = wandb_run(out)
    assert [history[i]["top5"] for i in sorted(history)] == pytest.approx([r["top5"] for r in rec["results"]])
    assert config["labels"] == "50%" and config["evaluated_on"] == "val"
    assert summary["eval/top1_se"] == pytest.approx(rec["top1"]["se"])


def test_flatten_and_scalars():
    assert T.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": "x"}) == {
        "a.b": 1,
        "a.c": "[1, 2]",
        "d": "none",
        "e": "x",
    }
    assert T.scalars({"step": 3, "loss": 1, "ok": True, "name": "x"}) == {"loss": 1.0}
