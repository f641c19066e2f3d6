"""`sslboost bench train`: head scaling and the reported figures, and the step through the loader."""

from __future__ import annotations

import json

import pytest

from e2mc_cli.benchmarks.train import view_sizes
from e2mc_cli.benchmarks.train_loader import bound
from e2mc_cli.methods import get_method_spec


def scaled_heads(method: str, width: int) -> dict:
    return get_method_spec(method).scaled_heads(width)


def test_scaled_heads_are_official_at_resnet50_width():
    for method in ("vicreg", "swav", "simsiam"):
        assert scaled_heads(method, 2048) == dict(get_method_spec(method).heads)


def test_scaled_heads_scale_every_size_by_width_over_2048():
    # 128 / 2048 = 1/16: VICReg 8192 → 512, SwAV 3000 prototypes → 187.5 → 188, SimSiam 2048 → 128
    assert scaled_heads("vicreg", 128) == {"mlp": "512-512-512"}
    assert scaled_heads("swav", 128) == {"hidden_mlp": 128, "feat_dim": 128, "n_prototypes": 188}
    assert scaled_heads("swav", 512)["n_prototypes"] == 750
    assert scaled_heads("simsiam", 128) == {"dim": 128, "pred_dim": 32}


def test_view_sizes_follow_the_official_recipes():
    assert view_sizes("vicreg", 28) == [28, 28]
    # SwAV 2 × 224 + 6 × 96 → 2 × 28 + 6 × 12
    assert view_sizes("swav", 28) == [28, 28] + [12] * 6


@pytest.mark.parametrize("method", ["vicreg", "swav", "simsiam"])
def test_bench_train_json_reports_a_consistent_ratio(cli, method):
    r = cli(
        "bench",
        "train",
        "--method",
        method,
        "--batch-size",
        "4",
        "--image-size",
        "16",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    row = json.loads(r.stdout)["results"][0]
    assert row["method"] == method
    assert row["full_img_s"] == pytest.approx(4 / row["full_step_s"])
    assert row["bare_img_s"] == pytest.approx(4 / row["bare_step_s"])
    assert row["ratio"] == pytest.approx(row["bare_step_s"] / row["full_step_s"])
    assert row["overhead_pct"] == pytest.approx((row["full_step_s"] / row["bare_step_s"] - 1) * 100)


def test_bench_train_unknown_method_is_one_line_error(cli):
    r = cli("bench", "train", "--method", "byol")
    assert r.exit_code == 2
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from test_train import make_data

    return make_data(tmp_path_factory.mktemp("bench-data") / "data")


@pytest.mark.parametrize("workers", ["0", "1"])
def test_bench_train_with_data_times_the_step_through_the_loader(cli, images, workers):
    args = ["--method", "vicreg", "--batch-size", "4", "--image-size", "16", "--steps", "3", "--warmup", "1"]
    r = cli("bench", "train", "--data", images, *args, "--workers", workers, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    cfg, row = report["config"], report["results"][0]
    assert (cfg["data"], cfg["n_images"], cfg["workers"]) == (str(images), 20, int(workers))
    assert cfg["prefetch_factor"] == (None if workers == "0" else 4) and cfg["pin_memory"] is False
    assert cfg["augment"] in ("cpu", "split") and cfg["pipeline"]
    assert row["method"] == "vicreg" and row["views"] == "2×16"
    assert row["loader_img_s"] == pytest.approx(4 / row["loader_step_s"])
    assert row["preloaded_img_s"] == pytest.approx(4 / row["preloaded_step_s"])
    assert row["ratio"] == pytest.approx(row["preloaded_step_s"] / row["loader_step_s"])
    assert 0 <= row["wait_share"] <= 1
    assert row["wait_share"] == pytest.approx(row["wait_s_per_step"] / row["loader_step_s"])
    assert row["bound"] == bound(row["wait_share"], row["ratio"])


def test_the_step_is_loader_bound_when_it_waits_or_slows_down_through_the_loader():
    assert bound(0.0, 1.0) == "compute" and bound(0.09, 0.95) == "compute"
    assert bound(0.1, 1.0) == "loader"  # waits for batches a tenth of the time
    assert bound(0.0, 0.9) == "loader"  # workers on the step's own cores: slower without waiting


def test_bench_train_with_data_prints_which_bounds_the_step(cli, images):
    args = ["--method", "simsiam", "--batch-size", "4", "--image-size", "16", "--steps", "1", "--warmup", "0"]
    r = cli("bench", "train", "--data", images, *args, "--workers", "0", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert "through the loader vs pre-loaded" in r.stdout and "simsiam" in r.stdout
    assert "loader-bound when the training process waits for batches 10% of the time" in r.stdout


def test_bench_train_with_too_little_data_is_one_line_error(cli, images):
    r = cli("bench", "train", "--data", images, "--method", "vicreg", "--batch-size", "64", "--device", "cpu")
    assert r.exit_code == 2 and "fewer than one batch of 64" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
