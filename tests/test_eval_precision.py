"""`eval --precision`: the authors' fp32 by default, bf16 / fp16 on request, recorded in eval.json,
and features of one precision never served for another."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from e2mc_cli.checkpoint import load_checkpoint, save_checkpoint
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.data.transforms import NATIVE, eval_preprocessing, eval_transform
from e2mc_cli.evaluate.features import FeatureCache, extract_features
from e2mc_cli.evaluate.protocols import EVAL_PRECISION, default_precision
from e2mc_cli.evaluate.run import EvalRequest, run_eval
from e2mc_cli.methods import build_model, method_names
from e2mc_cli.precision import resolve_precision


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(path, build_model("swav", "resnet-mini", {}), base="b", criterion="e2mc")
    return path


def test_the_authors_evaluate_every_method_in_fp32():
    # eval_linear.py / eval_semisup.py (and the official probes) use no autocast
    assert set(EVAL_PRECISION) == set(method_names())
    for method in method_names():
        assert default_precision(method) == "fp32"
        for device in ("cpu", "cuda"):
            assert resolve_precision(None, default_precision(method), torch.device(device)) == "fp32"
    assert resolve_precision("bf16", default_precision("swav"), torch.device("cuda")) == "bf16"


def _request(data, **kwargs) -> EvalRequest:
    common = {"labels": "100%", "mode": "cached", "image_size": 12, "workers": 0, "overrides": {"epochs": 2}}
    return EvalRequest(data=str(data), **{**common, **kwargs})


def test_a_bf16_evaluation_is_recorded_and_not_served_fp32_features(colours, weights):
    ckpt = load_checkpoint(weights)
    assert run_eval(ckpt, _request(colours)).record["precision"] == "fp32"
    cache = FeatureCache()
    run_eval(ckpt, _request(colours), features=cache)  # fp32 features in the cache
    shared = run_eval(ckpt, _request(colours, precision="bf16"), features=cache)
    fresh = run_eval(ckpt, _request(colours, precision="bf16"))
    assert shared.record["precision"] == fresh.record["precision"] == "bf16"
    np.testing.assert_array_equal(shared.pred, fresh.pred)
    assert shared.record["results"] == fresh.record["results"]
    # one bank per split and precision: the bf16 evaluation extracted its own, other, features
    assert len(cache._banks) == 4
    val = {key[-1]: bank["feats"] for key, bank in cache._banks.items() if key[0] == "val"}
    assert set(val) == {"fp32", "bf16"} and not torch.equal(val["fp32"], val["bf16"])


def test_bf16_features_are_the_fp32_ones_rounded(colours, weights):
    backbone = load_checkpoint(weights).build_model().backbone
    val = resolve_dataset(str(colours), "val")
    tf = eval_transform(eval_preprocessing({}, NATIVE, 12))
    idx = np.arange(len(val))
    full, _ = extract_features(backbone, val, idx, tf, workers=0)
    half, _ = extract_features(backbone, val, idx, tf, workers=0, precision="bf16")
    assert half.dtype == torch.float32 and not torch.equal(full, half)
    # bf16 keeps 8 significant bits: a relative error of a few 2^-8 through the network
    torch.testing.assert_close(half, full, rtol=0.05, atol=0.05)


def test_fp16_fine_tuning_scales_every_step(colours, weights, monkeypatch):
    scaled = []

    class Recording(torch.amp.GradScaler):
        def scale(self, outputs):
            scaled.append(outputs.dtype)
            return super().scale(outputs)

    monkeypatch.setattr(torch.amp, "GradScaler", Recording)
    overrides = {"epochs": 1, "batch_size": 6}  # 18 labelled images: 3 steps
    rec = run_eval(load_checkpoint(weights), _request(colours, protocol="semisup", precision="fp16",
                                                      overrides=overrides)).record  # fmt: skip
    assert rec["precision"] == "fp16"
    assert scaled == [torch.float32] * 3  # the loss of the fp32 classifier, scaled at each step
    assert 0 <= rec["results"][0]["top1"] <= 100
    # bf16 needs no scaler
    scaled.clear()
    run_eval(load_checkpoint(weights), _request(colours, protocol="semisup", precision="bf16",
                                                overrides=overrides))  # fmt: skip
    assert scaled == []


def test_eval_cli_precision_choice_is_checked_and_recorded(cli, tmp_path, colours, weights):
    args = ["eval", "--weights", weights, "--data", colours, "--labels", "100%", "--mode", "cached",
            "--image-size", "12", "--epochs", "1", "--workers", "0"]  # fmt: skip
    r = cli(*args, "--precision", "fp64", "--out", tmp_path / "bad")
    assert r.exit_code == 2 and "--precision" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "bad" / "eval.json").exists()
    r = cli(*args, "--precision", "bf16", "--out", tmp_path / "ok")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ok" / "eval.json").read_text())["precision"] == "bf16"
    assert "bf16" in r.stdout
