"""`sslboost tune`: the stage grids and the choice rule, Δ and McNemar's p of a trial against its
control, the starting point read from the recipes, and whole tunings on a tiny base and tiny
images (shared controls, resuming, divergence, bad input)."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_study import base as base  # noqa: F401  (a fixture)
from test_study import folder as folder  # noqa: F401  (a fixture)

from e2mc_cli import tune as T
from e2mc_cli.checkpoint import load_checkpoint
from e2mc_cli.criteria import CRITERIA, criterion_defaults
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.stats import gain_difference_test
from e2mc_cli.training import loop as L
from e2mc_cli.training.recipe import RECIPES_DIR, load_toml
from e2mc_cli.training.state import NonFiniteLoss
from e2mc_cli.tune import run as TR

PAPER = (("beta", 1000.0), ("gamma", 100.0))  # E2MC App. B.1, VICReg


def _point(stage, factor, weights, lr):
    return T.Point(stage, factor, tuple(weights), lr)


# -- the grids and the choice ---------------------------------------------------------------------


def test_stage_one_scales_every_weight_at_the_papers_ratio():
    grid = T.scale_grid(dict(PAPER), 0.003, [1.0, 0.1, 0.01, 0.001])
    assert [p.weights for p in grid] == [
        (("beta", 1000.0), ("gamma", 100.0)),
        (("beta", 100.0), ("gamma", 10.0)),
        (("beta", 10.0), ("gamma", 1.0)),
        (("beta", 1.0), ("gamma", 0.1)),  # 100 × 0.001 reads 0.1, not 0.1000…02
    ]
    assert [p.factor for p in grid] == [1.0, 0.1, 0.01, 0.001]
    assert {p.lr for p in grid} == {0.003} and {p.stage for p in grid} == {"scale"}
    assert [p.slug for p in grid][::3] == ["beta1000-gamma100-lr0.003", "beta1-gamma0.1-lr0.003"]


def test_stage_two_moves_the_other_weights_relative_to_the_first():
    best = _point("scale", 0.01, [("beta", 10.0), ("gamma", 1.0)], 0.003)
    grid = T.ratio_grid(best, [0.1, 10.0])
    assert [p.weights for p in grid] == [
        (("beta", 10.0), ("gamma", 1.0)),
        (("beta", 10.0), ("gamma", 0.1)),
        (("beta", 10.0), ("gamma", 10.0)),
    ]
    # the ×1 point is stage 1's choice: the same trial, read back rather than run again
    assert grid[0].slug == best.slug and [p.factor for p in grid] == [1.0, 0.1, 10.0]
    assert T.ratio_grid(best, [1.0, 10.0])[1:] == T.ratio_grid(best, [10.0])[1:]  # no ×1 twice
    three = _point("scale", 1.0, [("a", 2.0), ("b", 4.0), ("c", 8.0)], 0.1)
    assert T.ratio_grid(three, [0.5])[1].weights == (("a", 2.0), ("b", 2.0), ("c", 4.0))
    assert T.ratio_grid(_point("scale", 1.0, [("lam", 0.5)], 0.1), [0.1, 10.0]) == []


def test_stage_three_moves_the_learning_rate_at_the_chosen_weights():
    best = _point("ratio", 10.0, [("beta", 1.0), ("gamma", 1.0)], 0.003)
    grid = T.lr_grid(best, [0.33, 3.0])
    assert [p.lr for p in grid] == [0.003, 0.00099, 0.009]  # 0.003 × 3 reads 0.009
    assert {p.weights for p in grid} == {best.weights} and grid[0].slug == best.slug
    assert [p.slug for p in grid][1:] == ["beta1-gamma1-lr0.00099", "beta1-gamma1-lr0.009"]


def test_the_highest_delta_is_chosen_and_a_tie_keeps_the_point_closer_to_the_start():
    def points(*factors):
        return [_point("scale", f, [("beta", f)], 0.1) for f in factors]

    assert T.choose(points(1, 0.1, 0.01), [0.1, 0.3, 0.2]) == 1
    assert T.choose(points(1, 0.1, 10), [0.2, 0.2, 0.2]) == 0
    assert T.choose(points(0.1, 1), [0.5, 0.5]) == 1  # ×1 is closer to the start though later
    assert T.choose(points(0.1, 10), [0.5, 0.5]) == 0  # as close: the earlier
    assert T.choose(points(10, 0.1), [0.5, 0.5]) == 0
    # equal to the resolution of a top-1 (81.55 − 81.54 vs 81.49 − 81.48 in floating point)
    assert T.choose(points(0.1, 1), [81.55 - 81.54, 81.49 - 81.48]) == 1
    assert T.choose(points(1, 0.1), [None, -1.0]) == 1  # a diverged run has no Δ; the best is kept
    assert T.choose(points(1, 0.1), [None, None]) is None


def test_a_stage_leaves_its_start_only_for_a_significantly_higher_delta():
    def points(*factors):
        return [_point("lr", f, [("beta", 1.0)], 0.1 * f) for f in factors]

    grid, deltas = points(1, 0.33, 3), [0.1, 0.5, 0.3]
    assert T.choose(grid, deltas, [None, 0.2, 0.01], alpha=0.05) == 0  # the highest: p 0.2, kept ×1
    assert T.choose(grid, deltas, [None, 0.04, 0.5], alpha=0.05) == 1
    assert T.choose(grid, deltas, [None, 0.05, 0.01], alpha=0.05) == 0  # p < α, not ≤
    assert T.choose(grid, deltas, [None, 0.2, 0.01], alpha=1.0) == 1  # α = 1: the highest Δ
    assert T.choose(grid, deltas, [None, 0.2, 0.01]) == 1  # the default of the pure rule
    assert T.choose(grid, [0.6, 0.5, 0.3], [None, 0.01, 0.01], alpha=0.05) == 0  # ×1 is the highest
    assert T.choose(grid, [None, 0.5, 0.3], [None, None, None], alpha=0.05) == 1  # ×1 diverged
    assert T.choose(points(0.1, 10), [0.1, 0.5], [None, None], alpha=0.05) == 1  # no ×1 point


def test_the_gain_difference_test_on_hand_made_correctness():
    # gains of two points over their own controls on five images: d = h − g = [2, 1, −1, 0, 0]
    control_a, model_a = [1, 0, 0, 1, 0], [0, 0, 1, 1, 0]  # g = [−1, 0, 1, 0, 0]
    control_b, model_b = [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]  # h = [1, 1, 0, 0, 0]
    test = gain_difference_test(control_a, model_a, control_b, model_b)
    # Σd = 2; the 8 sign flips of (2, 1, −1) give ±2 ± 1 ± 1 ∈ {4, 2, 2, 0, 0, −2, −2, −4}: 6 of 8 as far
    assert (test["n1"], test["n2"]) == (2, 1)
    assert test["difference"] == pytest.approx(100 * 2 / 5) and test["p"] == pytest.approx(6 / 8)
    # one shared control: McNemar's exact test of the two models (6 disagreements, all one way)
    shared = gain_difference_test([0] * 10, [0] * 6 + [1] * 4, [0] * 10, [1] * 10)
    assert shared["p"] == pytest.approx(2 / 64) and (shared["n1"], shared["n2"]) == (6, 0)
    assert gain_difference_test([1, 0], [1, 0], [0, 1], [0, 1])["p"] == 1.0  # same gains


@pytest.mark.parametrize(
    "text, message",
    [
        ("0,1", "--scales: every factor must be a positive number, got 0"),
        ("1,-0.1", "--scales: every factor must be a positive number, got -0.1"),
        ("inf", "--scales: every factor must be a positive number, got inf"),
        ("1,ten", "--scales 1,ten: 'ten' is not a number"),
        (" , ", "--scales: give at least one factor"),
    ],
)
def test_bad_factor_lists_name_their_option(text, message):
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        T.parse_factors(text, "--scales")


def test_factor_lists_keep_their_order_without_repeats():
    assert T.parse_factors("1, 0.1,1,0.10", "--scales") == [1.0, 0.1]
    assert T.parse_factors([3, 0.33], "--lr-scales") == [3.0, 0.33]


# -- Δ and McNemar's p ----------------------------------------------------------------------------


def test_a_trial_against_its_control_from_hand_made_correctness():
    control = [1, 1, 1, 0, 0, 1, 0, 1, 1, 0]  # 6 of 10 right
    trial = [1, 0, 1, 1, 1, 1, 1, 1, 1, 0]  # 8 of 10 right
    row = T.paired(60.0, 80.0, control, trial)
    # control wrong and trial right at 3, 4, 6; the reverse at 1: P(X ≥ 3 | 4, ½) = 5/16, twice
    assert (row["n01"], row["n10"]) == (3, 1)
    assert row["delta"] == pytest.approx(20.0) and row["p"] == pytest.approx(10 / 16)
    assert (row["continued"], row["criterion"]) == (60.0, 80.0)
    six = T.paired(40.0, 100.0, [0] * 6 + [1] * 4, [1] * 10)  # six disagreements, all one way
    assert (six["n01"], six["n10"], six["p"]) == (6, 0, pytest.approx(2 / 64))
    same = T.paired(50.0, 50.0, [1, 0], [1, 0])
    assert (same["delta"], same["p"]) == (0.0, 1.0)


# -- the criteria's weights and the starting point ------------------------------------------------


def test_every_criterion_names_the_constructor_options_that_weigh_it():
    expected = {
        "continued": (),
        "e2mc": ("beta", "gamma"),
        "vcreg": ("mu", "nu"),
        "uniformity": ("lam",),
        "mmcr": ("lam",),
        "vne": ("coef",),
        "logdet": ("coef",),
        "simmer": ("alpha_h", "alpha_r"),
    }
    assert {name: cls.weights for name, cls in CRITERIA.items()} == expected
    for name, cls in CRITERIA.items():
        assert set(cls.weights) <= set(criterion_defaults(name)), name


def _tuning(**kw) -> T.TuneConfig:
    return T.TuneConfig(**{"base": "fmnist-vicreg", "out": "runs/t", "epochs": 3, **kw})


@pytest.mark.parametrize(
    "base, method, criterion, weights",
    [
        ("fmnist-vicreg", "vicreg", "e2mc", {"beta": 1000.0, "gamma": 100.0}),  # E2MC App. B.1
        ("fmnist-swav", "swav", "e2mc", {"beta": 1.0, "gamma": 25.0}),
        ("fmnist-simsiam", "simsiam", "e2mc", {"beta": 0.001, "gamma": 0.01}),
        ("fmnist-vicreg", "vicreg", "vcreg", {"mu": 0.1, "nu": 0.001}),  # E2MC App. B.1.2
    ],
)
def test_the_start_is_the_recipe_of_continue_for_the_base(base, method, criterion, weights):
    start = T.start_point(_tuning(base=base, criterion=criterion), method)
    own = RECIPES_DIR / f"{base}-{criterion}.toml"
    recipe = own if own.is_file() else RECIPES_DIR / f"{base}-continued.toml"
    assert start.weights == weights
    assert start.lr == load_toml(recipe)["optim"]["lr"]


def test_a_set_moves_the_start_and_an_unknown_one_is_an_error():
    start = T.start_point(_tuning(sets=["e2mc:criterion.beta=10", "optim.lr=0.01"]), "vicreg")
    assert start.weights == {"beta": 10.0, "gamma": 100.0} and start.lr == start.control_lr == 0.01
    with pytest.raises(UserError, match="unknown key criterion.betta"):
        T.start_point(_tuning(sets=["e2mc:criterion.betta=10"]), "vicreg")


def test_the_test_command_carries_the_chosen_values():
    cfg = T.check_tune(_tuning(sets=["run.log_every=5"]))
    start = T.Start(dict(PAPER), 0.003, 0.003)
    moved = _point("lr", 3.0, [("beta", 1.0), ("gamma", 0.1)], 0.009)
    assert T.test_command(cfg, moved, start) == (
        "sslboost study --base fmnist-vicreg --criteria continued,e2mc --seeds 3 --epochs 3 "
        "--labels 1%,10% --no-knn --set run.log_every=5 --set e2mc:criterion.beta=1 "
        "--set e2mc:criterion.gamma=0.1 --set optim.lr=0.009 --out runs/t/test"
    )
    kept = _point("lr", 1.0, [("beta", 1.0), ("gamma", 0.1)], 0.003)
    assert "optim.lr" not in T.test_command(cfg, kept, start)


# -- whole tunings on a tiny base -----------------------------------------------------------------

# 40 training images: 16 held out; batch 8, two steps at a large rate so that the coefficients matter
TINY = dict(
    holdout="16", labels="100%,50%", scales="1,0.001", ratios="10", lr_scales="3", batch_size="8",
    max_steps="2", eval_epochs="30", image_size="16", workers="0", device="cpu",
)  # fmt: skip


def _args(base, folder, out, **kw) -> list[str]:
    args = ["tune", "--base", base, "--data", folder, "--out", out, "--set", "run.log_every=1"]
    args += ["--set", "optim.lr=1"]
    for key, value in {**TINY, **kw}.items():
        args += [f"--{key.replace('_', '-')}", value]
    return args


def _config(base, folder, out, **kw) -> T.TuneConfig:
    values = {**TINY, **kw}
    ints = ("holdout", "batch_size", "max_steps", "eval_epochs", "image_size", "workers")
    values = {k: int(v) if k in ints else v for k, v in values.items()}
    return T.TuneConfig(
        base=str(base), out=out, data=str(folder), sets=["run.log_every=1", "optim.lr=1"], **values
    )


def _result(folder: Path) -> dict:
    (path,) = folder.glob("cells/*/result.json")
    return json.loads(path.read_text())


def _mcnemar_from_predictions(control: str, trial: str) -> tuple[int, int, float]:
    a, b = (np.load(Path(p) / "predictions.npz") for p in (control, trial))
    ca, cb = a["pred"][0] == a["target"], b["pred"][0] == b["target"]
    n01, n10 = int(np.sum(~ca & cb)), int(np.sum(ca & ~cb))
    p = 1.0 if n01 + n10 == 0 else stats.binomtest(n01, n01 + n10, 0.5).pvalue
    return n01, n10, min(1.0, p)


def _check_rows(out: Path, doc: dict) -> None:
    """Each recorded row against the cells on disk: Δ of the two result.json, McNemar's counts
    from the two predictions, the recipe of both runs."""
    for row in doc["trials"]:
        trial, control = _result(out / row["trial"]), _result(out / row["control"])
        for col in doc["columns"]:
            cell = row["columns"][col]
            assert cell["delta"] == pytest.approx(trial["columns"][col] - control["columns"][col])
            n01, n10, p = _mcnemar_from_predictions(control["eval"][col]["path"], trial["eval"][col]["path"])
            assert (cell["n01"], cell["n10"]) == (n01, n10) and cell["p"] == pytest.approx(p)
        recipes = [json.loads(load_checkpoint(r["model"]).metadata["recipe"]) for r in (trial, control)]
        assert recipes[0]["optim"]["lr"] == recipes[1]["optim"]["lr"] == row["lr"]
        assert {k: recipes[0]["criterion"][k] for k in row["weights"]} == row["weights"]
        assert recipes[1]["criterion"]["name"] == "continued"


def _correct(cell: dict, col: str) -> np.ndarray:
    arrays = np.load(Path(cell["eval"][col]["path"]) / "predictions.npz")
    return (arrays["pred"][0] == arrays["target"]).astype(int)


def _sign_flip_p(d: np.ndarray) -> float:
    """The two-sided sign-flip p-value of Σd by enumerating every flip of the non-zero d."""
    nonzero = d[d != 0]
    if nonzero.sum() == 0:
        return 1.0
    flips = np.array(np.meshgrid(*[[1, -1]] * nonzero.size)).reshape(nonzero.size, -1).T
    return float(np.mean(np.abs(flips @ nonzero) >= abs(nonzero.sum())))


def _check_choices(out: Path, doc: dict) -> None:
    """Every row's gain against its stage's ×1 row, from the predictions on disk (p by
    enumerating the sign flips); every stage's choice is the argmax of its recorded Δs (a tie: the
    smallest |log factor|) if that beats the ×1 row with p < alpha, else the ×1 row; the next
    stage starts from it."""
    col, alpha = doc["choose_by"], doc["config"]["alpha"]
    for stage in doc["stages"]:
        scored = [r for r in stage["rows"] if r["status"] == "done"]
        start = next(r for r in stage["rows"] if r["factor"] == 1.0)
        gain = {
            r["slug"]: _correct(_result(out / r["trial"]), col) - _correct(_result(out / r["control"]), col)
            for r in scored
        }
        for r in scored:
            if r is start:
                assert "vs_start" not in r
                continue
            d = gain[r["slug"]] - gain[start["slug"]]
            assert r["vs_start"]["delta"] == pytest.approx(100 * d.mean())
            assert r["vs_start"]["p"] == pytest.approx(_sign_flip_p(d))
        top = max(r["columns"][col]["delta"] for r in scored)
        ties = [r for r in scored if math.isclose(r["columns"][col]["delta"], top, abs_tol=1e-9)]
        best = min(ties, key=lambda r: abs(math.log(r["factor"])))
        moves = best is start or best["vs_start"]["p"] < alpha
        assert stage["chosen"]["slug"] == (best if moves else start)["slug"], stage["name"]
        assert stage["highest"] == best["slug"] and stage["kept_start"] is not moves
    for before, after in zip(doc["stages"], doc["stages"][1:]):
        assert after["rows"][0]["slug"] == before["chosen"]["slug"] and after["rows"][0]["reused"]
    assert doc["chosen"]["slug"] == doc["stages"][-1]["chosen"]["slug"]


def test_a_tuning_shares_its_controls_chooses_the_best_and_resumes(cli, tmp_path, base, folder):
    out = tmp_path / "tune"
    r = cli(*_args(base, folder, out))
    assert r.exit_code == 0, r.stdout + r.stderr
    doc = json.loads((out / "tuning.json").read_text())
    assert doc["format"] == "sslboost-tune/1" and doc["complete"] is True
    assert [s["name"] for s in doc["stages"]] == ["scale", "ratio", "lr"]
    assert doc["start"] == {"weights": {"beta": 1000.0, "gamma": 100.0}, "lr": 1.0}  # the --set moved it
    assert doc["evaluated_on"].startswith("16 images held out from the training split")

    # one folder per distinct trial; one control per learning rate, shared by its trials
    slugs = {r["slug"] for s in doc["stages"] for r in s["rows"]}
    assert len(slugs) == 2 + 1 + 1 and sorted(os.listdir(out / "trials")) == sorted(slugs)
    lrs = {r["lr"] for r in doc["trials"]}
    assert sorted(os.listdir(out / "controls")) == sorted(f"lr-{lr:g}" for lr in lrs) == ["lr-1", "lr-3"]
    assert not (out / "test").exists()  # the test split is not read
    _check_rows(out, doc)
    _check_choices(out, doc)

    # the printed command reads the test split once with the chosen values
    chosen = doc["chosen"]
    assert doc["test_command"] in r.stdout
    for key, value in chosen["weights"].items():
        assert f"--set e2mc:criterion.{key}={value:g}" in doc["test_command"]
    assert (f"--set optim.lr={chosen['lr']:g} --out" in doc["test_command"]) == (chosen["lr"] != 1.0)
    assert doc["test_command"].endswith(f"--out {out / 'test'}")
    md = (out / "tuning.md").read_text()
    assert md.count("← chosen") == 3 and doc["test_command"] in md and "Made by `sslboost tune" in md
    assert "Stage 2: ratio: gamma × 1, 10 relative to beta" in md

    # a second invocation trains and evaluates nothing, and writes the same tables
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("**/*.safetensors")}
    stamps.update({p: p.stat().st_mtime_ns for p in out.glob("**/eval.json")})
    again = T.run_tune(_config(base, folder, out))
    assert again.status == "complete" and again.trained == [] and len(again.skipped) == 6
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again.tuning["stages"] == doc["stages"] and again.tuning["chosen"] == doc["chosen"]

    # another --alpha chooses the stages again, and says so (a folder without one chose at 1)
    note = TR.alpha_note(_config(base, folder, out, alpha=1.0))
    assert note.endswith("chose its stages at --alpha 0.05; they are chosen again at --alpha 1, so a "
                         "stage may keep another point and later stages run other trials")
    assert TR.alpha_note(_config(base, folder, out)) is None

    # a folder keeps its settings: other ones are refused before anything runs
    with pytest.raises(UserError, match="a tuning with seed = 0, not 1"):
        T.run_tune(_config(base, folder, out, seed=1))


def test_an_interrupted_tuning_says_how_to_resume_and_resumes(cli, tmp_path, base, folder, monkeypatch):
    out = tmp_path / "tune"
    step = L.train_step

    def interrupting(state, plan, views, epoch):
        record = step(state, plan, views, epoch)
        os.kill(os.getpid(), signal.SIGINT)
        return record

    monkeypatch.setattr(L, "train_step", interrupting)
    r = cli(*_args(base, folder, out, scales="1", lr_scales="3", ratios="10"))
    monkeypatch.setattr(L, "train_step", step)
    assert r.exit_code == 0 and "run the same command again to resume" in r.stderr
    doc = json.loads((out / "tuning.json").read_text())
    assert doc["complete"] is False and doc["status"] == "interrupted" and doc["chosen"] is None
    assert [row["status"] for row in doc["stages"][0]["rows"]] == ["not run yet"]
    assert "Nothing chosen yet" in (out / "tuning.md").read_text()
    again = T.run_tune(_config(base, folder, out, scales="1", lr_scales="3", ratios="10"))
    assert again.status == "complete" and "controls/lr-1" in again.trained
    _check_choices(out, again.tuning)


def test_a_diverged_trial_has_no_delta_and_is_not_run_again(tmp_path, base, folder, monkeypatch):
    out = tmp_path / "tune"
    calls = []

    def run_cell(cfg, data, criterion, seed, log):
        calls.append(Path(cfg.out).name)
        if Path(cfg.out).name.startswith("beta1000-"):
            raise NonFiniteLoss("non-finite loss at step 1")
        return original(cfg, data, criterion, seed, log)

    original = TR.run_cell
    monkeypatch.setattr(TR, "run_cell", run_cell)
    cfg = dict(scales="1,0.001", ratios="10", lr_scales="3")
    first = T.run_tune(_config(base, folder, out, **cfg))
    rows = first.tuning["stages"][0]["rows"]
    assert [r["status"] for r in rows] == ["diverged", "done"]
    assert first.tuning["stages"][0]["chosen"]["slug"] == rows[1]["slug"] == "beta1-gamma0.1-lr1"
    assert json.loads((out / "trials/beta1000-gamma100-lr1/failed.json").read_text())["status"] == "diverged"
    assert "| 1 | 1000 | 100 | 1 | diverged |" in (out / "tuning.md").read_text()
    calls.clear()
    again = T.run_tune(_config(base, folder, out, **cfg))
    assert again.trained == [] and "beta1000-gamma100-lr1" not in calls
    assert again.tuning["stages"] == first.tuning["stages"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--holdout", "0"], "--holdout must be a number of training images to evaluate on, got 0; "
         "tuning never reads the test split"),
        (["--criterion", "continued"], "--criterion continued: the base loss alone is the control"),
        (["--criterion", "nope"], "--criterion: unknown criterion 'nope'"),
        (["--scales", "1,0"], "--scales: every factor must be a positive number, got 0"),
        (["--ratios", "x"], "--ratios x: 'x' is not a number"),
        (["--lr-scales", "-3"], "--lr-scales: every factor must be a positive number, got -3"),
        (["--set", "e2mc:criterion.betta=1"], "unknown key criterion.betta"),
        (["--holdout", "40"], "--holdout must be below the 40 images of the training split"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_before_anything_runs(cli, tmp_path, base, folder, extra, message):
    out = tmp_path / "tune"
    r = cli("tune", "--base", base, "--data", folder, "--out", out, "--holdout", "16", *extra)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], r.stderr
    assert not out.exists()


def test_a_criterion_with_one_weight_has_no_ratio_stage(tmp_path, base, folder):
    out = tmp_path / "tune"
    result = T.run_tune(_config(base, folder, out, criterion="vne", scales="1,0.1", lr_scales="3"))
    doc = result.tuning
    assert result.status == "complete" and [s["name"] for s in doc["stages"]] == ["scale", "lr"]
    assert doc["weights"] == ["coef"] and doc["start"]["weights"] == {"coef": 1.0}  # VNE's own default
    assert sorted(os.listdir(out / "trials")) == sorted({r["slug"] for r in doc["trials"]})
    assert len(doc["trials"]) == 3 and sorted(os.listdir(out / "controls")) == ["lr-1", "lr-3"]
    _check_choices(out, doc)
    assert (
        "--criteria continued,vne" in doc["test_command"] and "Stage 2" not in (out / "tuning.md").read_text()
    )


def test_a_tuning_whose_trials_cannot_run_stops_and_says_so(cli, tmp_path, base, folder):
    # CorInfoMax's log-determinant needs more samples per step than dimensions: 8 < 16 here
    out = tmp_path / "tune"
    r = cli(*_args(base, folder, out, criterion="logdet", scales="1,0.1"))
    assert r.exit_code == 0 and "nothing chosen: no trial of the last stage has a Δ" in r.stderr
    doc = json.loads((out / "tuning.json").read_text())
    assert doc["status"] == "stopped" and doc["chosen"] is None and doc["test_command"] is None
    assert [row["status"] for row in doc["stages"][0]["rows"]] == ["cannot run", "cannot run"]
    assert [s["name"] for s in doc["stages"]] == ["scale"] and os.listdir(out / "controls") == ["lr-1"]
    assert "Nothing chosen: no trial of the last stage has a Δ" in (out / "tuning.md").read_text()


def test_two_processes_on_one_tuning_share_its_cells(tmp_path, base, folder):
    """`sslboost tune` started twice on one folder: every cell is trained by one process only, and
    both end with the same complete tuning."""
    import re
    import subprocess
    import sys

    out = tmp_path / "tune"
    argv = [str(a) for a in _args(base, folder, out)]
    code = "import sys; from e2mc_cli.cli import main; sys.argv = ['sslboost', *sys.argv[1:]]; main()"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    procs = [subprocess.Popen([sys.executable, "-c", code, *argv], **pipes) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    done = [re.findall(r"^((?:trials|controls)/\S+): done in", o, re.M) for o in outputs]
    trained = done[0] + done[1]
    assert len(trained) == len(set(trained)) == 6, done  # each cell once, by one of the two
    doc = json.loads((out / "tuning.json").read_text())
    assert doc["complete"] is True
    _check_rows(out, doc)
    _check_choices(out, doc)
