"""Significance statistics and `sslboost compare`, against hand-derived reference values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from e2mc_cli.evaluate import stats as S
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION
from e2mc_cli.evaluate.records import EVAL_FORMAT
from e2mc_cli.evaluate.run import EvalResult


def paired(n01: int, n10: int, n11: int = 0, n00: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors with the given contingency table (A wrong/B right = n01, ...)."""
    a = np.array([0] * n01 + [1] * n10 + [1] * n11 + [0] * n00, dtype=bool)
    b = np.array([1] * n01 + [0] * n10 + [1] * n11 + [0] * n00, dtype=bool)
    return a, b


def binom_two_sided(k: int, m: int) -> float:
    """Exact two-sided binomial p at ½, by hand: 2·P(X ≥ max(k, m−k)), capped at 1."""
    hi = max(k, m - k)
    return min(1.0, 2 * sum(math.comb(m, i) for i in range(hi, m + 1)) / 2**m)


def test_mcnemar_on_hand_made_table():
    a, b = paired(n01=15, n10=5, n11=70, n00=10)
    res = S.mcnemar(a, b)
    assert (res.n01, res.n10) == (15, 5)
    assert res.chi2 == pytest.approx(100 / 20)  # (15 − 5)² / (15 + 5)
    assert res.p_chi2 == pytest.approx(math.erfc(math.sqrt(5.0 / 2)))  # χ²(1) survival: erfc(√(x/2))
    assert res.p_exact == pytest.approx(2 * 21700 / 2**20)  # 2·Σ_{i≥15} C(20, i) / 2²⁰ = 0.041389


@pytest.mark.parametrize(("n01", "n10"), [(30, 10), (7, 9), (0, 4), (50, 50)])
def test_mcnemar_matches_closed_forms(n01, n10):
    a, b = paired(n01, n10, n11=20)
    res = S.mcnemar(a, b)
    chi2 = (n01 - n10) ** 2 / (n01 + n10)
    assert res.chi2 == pytest.approx(chi2)
    assert res.p_chi2 == pytest.approx(math.erfc(math.sqrt(chi2 / 2)))
    assert res.p_exact == pytest.approx(binom_two_sided(n01, n01 + n10))


def test_identical_inputs_give_p_one():
    a = np.array([1, 0, 1, 1, 0], dtype=bool)
    res = S.mcnemar(a, a)
    assert (res.chi2, res.p_chi2, res.p_exact) == (0.0, 1.0, 1.0)
    perm = S.paired_permutation_test(a, a, 1000, seed=0)
    assert perm["p"] == 1.0 and perm["mean_difference"] == 0.0
    assert S.cohens_d_paired(a, a) == 0.0


def test_permutation_test_approximates_the_exact_sign_test():
    # Sign flips of ±1 differences: the null of Σd is 2·Binomial(m, ½) − m, so the permutation p
    # converges to the exact two-sided binomial p.
    a, b = paired(n01=30, n10=10, n11=100, n00=60)
    perm = S.paired_permutation_test(a, b, 20_000, seed=1)
    assert perm["mean_difference"] == pytest.approx(20 / 200)
    assert perm["p"] == pytest.approx(binom_two_sided(30, 40), abs=0.002)
    assert S.paired_permutation_test(a, b, 20_000, seed=1)["p"] == perm["p"]  # seeded


def test_permutation_test_exact_for_few_disagreements():
    a, b = paired(n01=3, n10=0, n11=5)
    # 2³ sign patterns: Σd = 3 only for all +, −3 only for all − → one-sided 1/8, two-sided 1/4.
    assert S.paired_permutation_test(a, b, 10_000, seed=0)["p"] == pytest.approx(0.25)


def test_effect_sizes_and_standard_error():
    a = np.array([0, 0, 1, 1, 1], dtype=float)
    b = np.array([1, 1, 1, 1, 0], dtype=float)  # d = [1, 1, 0, 0, −1]
    assert S.cohens_d_paired(a, b) == pytest.approx(0.2 / math.sqrt(0.7))
    assert S.cohens_d_groups([50, 52], [54, 56]) == pytest.approx(4 / math.sqrt(2))
    assert S.cohens_d_groups([50], [54]) is None
    mean, se = S.mean_se([1.0, 2.0, 3.0])
    assert mean == 2.0 and se == pytest.approx(1 / math.sqrt(3))
    assert S.mean_se([4.0]) == (4.0, None)


# --- the command ------------------------------------------------------------------------------


def fake_eval(
    folder, preds, target, *, labels="1%", val_sha="v" * 64, subset="s" * 64, base="x",
    protocol_version=PROTOCOL_VERSION, image_size=28, precision="fp32", best=100.0,
):  # fmt: skip
    """An evaluation whose final-epoch predictions are ``preds``; each seed's best epoch (1 of 2)
    reached ``best`` % on the evaluation split."""
    preds = np.atleast_2d(np.asarray(preds))
    seeds = list(range(len(preds)))
    top1 = [float((p == target).mean() * 100) for p in preds]
    results = [
        {"seed": s, "top1": t, "top5": 100.0, "train_size": 3, "subset_sha256": subset,
         "best_top1": best, "best_epoch": 1, "epoch_top1": [[1, best], [2, t]]}
        for s, t in zip(seeds, top1)
    ]  # fmt: skip
    record = {
        "format": EVAL_FORMAT,
        "protocol": "linear",
        "protocol_version": protocol_version,
        "labels": labels,
        "mode": "cached",
        "seeds": seeds,
        "results": results,
        "top1": dict(zip(("mean", "se"), S.mean_se(top1))),
        "top5": {"mean": 100.0, "se": None},
        "best_epoch_top1": {"mean": best, "se": 0.0 if len(seeds) > 1 else None, "selected_on": "val"},
        "precision": precision,
        "dataset": {"spec": "toy", "num_classes": 3, "train_size": 9, "val_size": len(target),
                    "train_sha256": "t" * 64, "val_sha256": val_sha,
                    "image_size": image_size, "crop_ratio": 1.0},
        "checkpoint": {"source": base, "metadata": {"base": base, "criterion": "e2mc"}},
    }  # fmt: skip
    EvalResult(record, preds, np.asarray(target)).write(folder)
    return folder


@pytest.fixture
def target():
    return np.arange(100) % 3


def test_compare_cli_reports_the_tests(cli, tmp_path, target):
    wrong = (target + 1) % 3
    pa = target.copy()
    pa[:15] = wrong[:15]  # A wrong on 0..14
    pa[60:70] = wrong[60:70]  # A wrong on 60..69
    pb = target.copy()
    pb[15:20] = wrong[15:20]  # B wrong on 15..19
    pb[60:70] = wrong[60:70]  # both wrong on 60..69
    # n01 (A wrong, B right) = 15, n10 = 5
    a = fake_eval(tmp_path / "a", pa, target)
    b = fake_eval(tmp_path / "b", pb, target)
    out = tmp_path / "cmp.json"
    r = cli("compare", a, b / "eval.json", "--out", out, "--permutations", "2000")
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    sel = res["selected"]
    assert (sel["mcnemar"]["n01"], sel["mcnemar"]["n10"]) == (15, 5)
    assert sel["mcnemar"]["chi2"] == pytest.approx(5.0)
    assert sel["mcnemar"]["p_exact"] == pytest.approx(2 * 21700 / 2**20)
    assert res["mean_difference"] == pytest.approx(85 - 75)
    assert 0 < sel["permutation"]["p"] < 0.1
    # the tests are of the final epoch's predictions; the best epochs (both 100 %) are only reported
    assert (res["a"]["top1"]["mean"], res["b"]["top1"]["mean"]) == (75.0, 85.0)
    assert res["a"]["best_epoch_top1"] == {"mean": 100.0, "se": None}
    assert res["a"]["best_epoch_selected_on"] == "val" and res["a"]["precision"] == "fp32"
    assert "McNemar" in r.stdout and "χ²" in r.stdout


def test_compare_identical_runs_p_one(cli, tmp_path, target):
    preds = np.stack([target, (target + 1) % 3])  # two seeds
    a = fake_eval(tmp_path / "a", preds, target)
    r = cli("compare", a, a, "--json")  # JSON on stdout, nothing else there
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["mean_difference"] == 0.0 and res["seeds"] == [0, 1]
    for t in [res["selected"], *res["per_seed"]]:
        assert (
            t["mcnemar"]["p_chi2"] == 1.0 and t["mcnemar"]["p_exact"] == 1.0 and t["permutation"]["p"] == 1.0
        )
    assert res["cohens_d_seeds"] == 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"val_sha": "w" * 64}, "different datasets"),
        ({"labels": "10%"}, "different label fractions"),
        ({"subset": "z" * 64}, "different label subsets"),
        ({"protocol_version": 1}, f"different versions of the evaluation protocol ({PROTOCOL_VERSION} vs 1)"),
        ({"precision": "bf16"}, "different precisions (fp32 vs bf16)"),
        ({"image_size": 224}, "different preprocessing (28 px, crop 1 vs 224 px, crop 1)"),
    ],
)
def test_compare_mismatch_is_one_line_exit_2(cli, tmp_path, target, change, message):
    a = fake_eval(tmp_path / "a", target, target)
    b = fake_eval(tmp_path / "b", target, target, **change)
    r = cli("compare", a, b)
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1


def test_compare_length_mismatch_and_missing(cli, tmp_path, target):
    a = fake_eval(tmp_path / "a", target, target)
    b = fake_eval(tmp_path / "b", target[:50], target[:50])
    r = cli("compare", a, b)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1  # val sizes differ: caught first
    record = json.loads((b / "eval.json").read_text())
    record["dataset"]["val_size"] = 100
    (b / "eval.json").write_text(json.dumps(record))
    r = cli("compare", a, b)
    assert r.exit_code == 2 and "different lengths" in r.stderr
    r = cli("compare", a, tmp_path / "nowhere")
    assert r.exit_code == 2 and "no eval.json" in r.stderr
    (tmp_path / "b" / "predictions.npz").unlink()
    r = cli("compare", a, b)
    assert r.exit_code == 2 and "no predictions.npz" in r.stderr
