"""`sslboost criteria` and `sslboost bench criteria`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from e2mc_cli.criteria import CRITERIA
from e2mc_cli.criteria.reference import e2mc_loss


def test_criteria_table_lists_every_name(cli):
    r = cli("criteria")
    assert r.exit_code == 0
    for name in CRITERIA:
        assert name in r.stdout


def test_criteria_json_carries_constructor_defaults(cli):
    r = cli("criteria", "--json")
    assert r.exit_code == 0
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert list(rows) == list(CRITERIA)
    assert rows["e2mc"]["defaults"] == {"beta": 1.0, "gamma": 25.0, "eps": 1e-7, "view_reduction": "mean"}
    assert rows["e2mc"]["over_views"] == "entropy mean, covariance sum"
    assert rows["e2mc"]["choices"] == {"view_reduction": ["mean", "sum"]}
    assert rows["uniformity"]["over_views"] == "mean"
    assert rows["vcreg"]["defaults"] == {"mu": 0.1, "nu": 0.001, "reg_space": "hypersphere"}
    assert rows["vcreg"]["choices"] == {"reg_space": ["hypersphere", "projector"]}
    assert rows["uniformity"]["defaults"]["lam"] == 0.5 and rows["uniformity"]["defaults"]["t"] == 2.0
    assert rows["mmcr"]["defaults"]["lam"] == 0.005 and rows["mmcr"]["views"] == "all"
    assert rows["simmer"]["defaults"]["alpha_r"] == 2e-4 and rows["simmer"]["defaults"]["rank"] == "nuclear"
    assert rows["continued"]["defaults"] == {}


def test_bench_criteria_tiny_prints_ratio(cli):
    r = cli("bench", "criteria", "--dims", "16", "--n", "32", "--repeats", "1", "--no-entropy-errors")
    assert r.exit_code == 0, r.stderr
    e2mc_line = next(line for line in r.stdout.splitlines() if "e2mc" in line)
    assert "×" in e2mc_line
    for name in CRITERIA:
        assert name in r.stdout


def test_bench_criteria_json(cli):
    tiny = ("--n", "32", "--repeats", "1", "--no-entropy-errors")
    r = cli("bench", "criteria", "--dims", "16,20", *tiny, "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["n"] == 32
    rows = [row for row in data["rows"] if row["criterion"] == "e2mc"]
    assert [row["d"] for row in rows] == [16, 20]
    for row in rows:
        assert row["speedup"] > 0 and row["paper_ms"] > 0
        assert row["max_rel_diff"] < 1e-5


def test_bench_bad_dims_is_one_line_error(cli):
    r = cli("bench", "criteria", "--dims", "16,x")
    assert r.exit_code == 2
    assert "--dims" in r.stderr and "Traceback" not in r.stderr


def test_bench_reference_is_the_paper_formula():
    # The benchmark's transcription agrees with a hand value: for a batch where every dimension
    # is constant, all spacings are 0, H = log(eps) and the covariance penalty is 0.
    z = torch.zeros(16, 3)
    loss, _, _ = e2mc_loss(z, z, "hypercube", beta=2.0, gamma=5.0)
    assert float(loss) == pytest.approx(-2.0 * 2 * math.log(1e-7), rel=1e-6)
