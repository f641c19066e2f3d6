"""`sslboost curve`: one pre-training per epoch budget, evaluated on held-out training images, the
plateau verdict; resumable, budgets already finished skipped (tiny recipe, tiny images)."""

from __future__ import annotations

import json
import os
import signal

import pytest
from test_study import PNG_MAGIC
from test_study import folder as folder  # noqa: F401  (a fixture)

from e2mc_cli.curve import doubling_gain, plateau_verdict
from e2mc_cli.training import loop as L


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny-vicreg.toml"
    path.write_text(
        '[recipe]\nname = "tiny-vicreg"\nmethod = "vicreg"\n'
        '[model]\narch = "resnet-mini"\nmlp = "16-16-16"\n'
        '[run]\nepochs = 3\nbatch_size = 8\nlog_every = 1\n'
        '[optim]\nname = "lars"\nlr = 0.3\nlr_batch_scaling = true\nwarmup_epochs = 0.2\n'
        '[criterion]\nname = "continued"\n[views]\nimage_size = 8\n'
    )
    return path


def test_plateau_verdict_on_hand_made_numbers():
    v = plateau_verdict({2: 80.0, 4: 82.0, 8: 82.2})
    assert v.reached is True and (v.last, v.half) == (8, 4) and v.gain == pytest.approx(0.2)
    assert v.text.startswith("plateau reached at 8 epochs: kNN +0.20 points over the last doubling (4 → 8")
    v = plateau_verdict({2: 80.0, 4: 82.0, 8: 83.5})
    assert v.reached is False and v.text.startswith("not yet: +1.50 over the last doubling (4 → 8 epochs)")
    assert plateau_verdict({4: 80.0, 8: 80.3}).reached is False  # +0.30 is not less than 0.3
    assert plateau_verdict({4: 80.0, 8: 79.5}).reached is True  # a loss is no gain
    assert plateau_verdict({0.25: 70.0, 0.5: 70.1}).reached is True  # fractions double too
    v = plateau_verdict({10: 80.0, 16: 81.0})  # budgets that do not double: nothing at 8
    assert v.reached is None and v.text.startswith("cannot tell: no budget at 8 epochs") and v.gain is None
    assert plateau_verdict({}).reached is None
    assert doubling_gain({2: 80.0, 4: 82.5, 6: 83.0}, 4) == 2.5
    assert doubling_gain({2: 80.0, 6: 83.0}, 6) is None


def test_curve_pretrains_each_budget_resumes_and_skips_finished_ones(
    cli, tmp_path, recipe, folder, monkeypatch
):
    out = tmp_path / "curve"
    # 40 training images, batch 8: 5 steps per epoch; budgets of 1 and 2 steps
    args = ("curve", "--recipe", recipe, "--epochs", "0.2,0.4", "--holdout", "8", "--data", folder,
            "--out", out, "--eval-epochs", "1", "--workers", "0", "--device", "cpu")  # fmt: skip
    step = L.train_step

    def interrupting(state, plan, views, epoch):
        record = step(state, plan, views, epoch)
        if plan.total_steps == 2 and state.step == 1:  # Ctrl-C in the second budget's first step
            os.kill(os.getpid(), signal.SIGINT)
        return record

    monkeypatch.setattr(L, "train_step", interrupting)
    r = cli(*args)
    monkeypatch.setattr(L, "train_step", step)
    assert r.exit_code == 0, r.stderr
    assert "interrupted: run the same command again to resume" in r.stderr
    doc = json.loads((out / "curve.json").read_text())
    assert [p["done"] for p in doc["points"]] == [True, False] and doc["complete"] is False
    assert doc["verdict"]["reached"] is None  # one budget: nothing to compare with
    first = (out / "epochs-0.2" / "result.json").stat().st_mtime_ns

    r = cli(*args)  # the second budget resumes from its checkpoint at step 1
    assert r.exit_code == 0, r.stderr
    assert "1 budget(s) trained, 1 already finished" in r.stdout
    assert (out / "epochs-0.2" / "result.json").stat().st_mtime_ns == first
    doc = json.loads((out / "curve.json").read_text())
    assert doc["format"] == "sslboost-curve/1" and doc["complete"] is True
    results = {e: json.loads((out / f"epochs-{e}" / "result.json").read_text()) for e in ("0.2", "0.4")}
    for e, steps in (("0.2", 1), ("0.4", 2)):
        train = out / f"epochs-{e}" / "train"
        assert f"epochs = {e}\n" in (train / "recipe.toml").read_text()  # the budget, not the recipe's 3
        assert json.loads((train / "summary.json").read_text())["steps"] == steps
        record = json.loads((out / f"epochs-{e}" / "eval" / "knn" / "eval.json").read_text())
        assert record["dataset"]["val_size"] == 8 and record["dataset"]["evaluated_on"].startswith("8 images")
    knn = {0.2: results["0.2"]["columns"]["knn"], 0.4: results["0.4"]["columns"]["knn"]}
    point = doc["points"][1]
    assert point["knn"] == knn[0.4] and point["knn_gain"] == pytest.approx(knn[0.4] - knn[0.2])
    assert point["linear"] == results["0.4"]["columns"]["linear 1%"] and doc["points"][0]["knn_gain"] is None
    assert doc["verdict"]["reached"] is (knn[0.4] - knn[0.2] < 0.3)
    md = (out / "curve.md").read_text()
    assert "| epochs | kNN | linear 1% | kNN gain | linear gain | train wall time |" in md
    assert f"| 0.4 | {knn[0.4]:.2f} | " in md and doc["verdict"]["text"] in md
    assert (out / "curve.png").read_bytes().startswith(PNG_MAGIC)

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("**/eval.json")}
    r = cli(*args)
    assert r.exit_code == 0 and "0 budget(s) trained, 2 already finished" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("**/eval.json")} == stamps
    r = cli(*args[:-2], "--seed", "1")  # another run under these budgets' names
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "with seed 0, not of tiny-vicreg for 0.2 epochs with seed 1" in r.stderr


def test_curve_bad_input_is_one_line(cli, tmp_path, recipe, folder):
    out = tmp_path / "c"
    base = ("curve", "--recipe", recipe, "--data", folder, "--out", out)
    for extra, says in (
        (("--epochs", "2,1"), "the epoch counts must be strictly increasing"),
        (("--epochs", "2,x"), "'x' is not a number of epochs"),
        (("--epochs", "1,2", "--holdout", "0"), "--holdout must be a number of training images"),
        (("--epochs", "1,2", "--holdout", "40"), "--holdout must be below the 40 images"),
        (("--epochs", "1,2", "--holdout", "8", "--set", "run.nope=1"), "unknown key run.nope"),
        (("--epochs", "1,2", "--holdout", "8", "--labels", "0%"), "--labels '0%'"),
    ):
        r = cli(*base, *extra)
        assert r.exit_code == 2 and says in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert not out.exists()


def test_curve_takes_finished_budgets_from_an_earlier_curve(cli, tmp_path, recipe, folder):
    first, second = tmp_path / "first", tmp_path / "second"
    common = ("curve", "--recipe", recipe, "--holdout", "8", "--data", folder, "--eval-epochs", "1",
              "--workers", "0", "--device", "cpu")  # fmt: skip
    r = cli(*common, "--epochs", "0.2", "--out", first)
    assert r.exit_code == 0, r.stderr
    earlier = json.loads((first / "curve.json").read_text())
    assert earlier["protocol_version"] >= 3

    r = cli(*common, "--epochs", "0.2,0.4", "--out", second, "--earlier", first / "curve.json")
    assert r.exit_code == 0, r.stderr
    assert "1 budget(s) trained, 1 already finished" in r.stdout
    assert not (second / "epochs-0.2").exists()  # not trained again
    doc = json.loads((second / "curve.json").read_text())
    old, new = doc["points"]
    assert old["from"] == str(first / "curve.json") and "from" not in new
    assert (old["knn"], old["linear"]) == (earlier["points"][0]["knn"], earlier["points"][0]["linear"])
    assert old["model"] == earlier["points"][0]["model"]
    knn = json.loads((second / "epochs-0.4" / "result.json").read_text())["columns"]["knn"]
    assert new["knn_gain"] == pytest.approx(knn - old["knn"])
    assert doc["verdict"]["last"] == 0.4 and doc["verdict"]["half"] == 0.2
    md = (second / "curve.md").read_text()
    assert f"Budgets of 0.2 epochs: finished in `{first / 'curve.json'}` (`--earlier`)." in md

    planted = second / "epochs-0.2" / "train"  # another run under the name of a budget --earlier settles
    planted.mkdir(parents=True)
    theirs = (first / "epochs-0.2" / "train" / "recipe.toml").read_text()
    (planted / "recipe.toml").write_text(theirs.replace("seed = 0", "seed = 5"))
    r = cli(*common, "--epochs", "0.2,0.4", "--out", second, "--earlier", first / "curve.json")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "with seed 5, not of tiny-vicreg for 0.2 epochs with seed 0; remove it" in r.stderr
    assert json.loads((second / "curve.json").read_text()) == doc  # the curve is left as it was

    stale = dict(earlier)
    del stale["protocol_version"]  # a curve.json that does not say how it was evaluated
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    (tmp_path / "other.json").write_text(json.dumps({"format": "sslboost-study/1"}))
    for extra, says in (
        (("--earlier", first / "curve.json", "--seed", "1"), "made with seed 0, this curve with 1"),
        (("--earlier", first / "curve.json", "--labels", "10%"), "made with labels '1%', this curve with"),
        (("--earlier", tmp_path / "stale.json"), "does not record its evaluation protocol"),
        (("--earlier", tmp_path / "other.json"), "not an sslboost curve.json"),
        (("--earlier", tmp_path / "missing.json"), "no such file"),
    ):
        r = cli(*common, "--epochs", "0.2,0.4", "--out", tmp_path / "third", *extra)
        assert r.exit_code == 2 and says in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "third").exists()
