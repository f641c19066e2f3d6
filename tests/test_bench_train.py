"""`sslboost bench train`: head scaling and the reported figures."""

from __future__ import annotations

import json

import pytest

from e2mc_cli.benchmarks.train import view_sizes
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
