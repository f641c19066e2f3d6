"""`sslboost study --epochs A,B`: one run per cell, each point evaluated from its snapshot, resumable
at every point; the tables per point, the signs per seed and the figure (tiny models, tiny images)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_study import PNG_MAGIC
from test_study import base as base  # noqa: F401  (a fixture)
from test_study import folder as folder  # noqa: F401  (a fixture)

from e2mc_cli import study as ST
from e2mc_cli.checkpoint import save_checkpoint
from e2mc_cli.methods import build_model
from e2mc_cli.study import cells as C
from e2mc_cli.training import loop as L


def _config(base, folder, out, **kw) -> ST.StudyConfig:
    # 40 training images, batch 8: 5 steps per epoch, so 0.2 and 0.4 epochs are steps 1 and 2
    args = dict(
        base=str(base), out=out, criteria="continued,e2mc", seeds=2, labels="100%", data=str(folder),
        epochs="0.2,0.4", batch_size=8, eval_epochs=1, image_size=8, workers=0, device="cpu",
        sets=["run.log_every=1"],
    )  # fmt: skip
    args.update(kw)
    return ST.StudyConfig(**args)


def _stamps(out) -> dict:
    return {p: p.stat().st_mtime_ns for p in out.glob("**/eval.json")}


def test_a_study_over_epochs_resumes_where_it_stopped_and_writes_every_point(
    tmp_path, base, folder, monkeypatch
):
    out = tmp_path / "study"
    cfg = _config(base, folder, out)

    # 1. Ctrl-C during step 1 (the first point) of the first cell's run: the study stops there.
    step = L.train_step

    def interrupting(state, plan, views, epoch):
        record = step(state, plan, views, epoch)
        if state.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return record

    monkeypatch.setattr(L, "train_step", interrupting)
    first = ST.run_study(cfg)
    monkeypatch.setattr(L, "train_step", step)
    assert first.status == "interrupted" and first.trained == []
    run = out / "cells" / "continued-seed0" / "train"
    snap = run / "snapshots" / "epoch-0.2" / "sslboost.safetensors"
    assert snap.is_file() and not (run / "snapshots" / "epoch-0.4").exists()
    kept = snap.stat().st_mtime_ns

    # 2. Ctrl-C during the evaluations of the second point: the first point's result stays.
    evaluate, calls = C.run_eval, []

    def stopping(*args, **kw):
        calls.append(kw["out_dir"])
        if len(calls) == 4:  # 0.2: linear, knn; 0.4: linear, then knn is cut short
            raise KeyboardInterrupt
        return evaluate(*args, **kw)

    monkeypatch.setattr(C, "run_eval", stopping)
    with pytest.raises(KeyboardInterrupt):
        ST.run_study(cfg)
    monkeypatch.setattr(C, "run_eval", evaluate)
    cell = out / "cells" / "continued-seed0"
    assert (cell / "epoch-0.2" / "result.json").is_file()
    assert not (cell / "epoch-0.4" / "result.json").exists()
    done = _stamps(out)
    assert cell / "epoch-0.4" / "eval" / "linear-100pct" / "eval.json" in done

    # 3. The rest: nothing trained or evaluated twice; the snapshot written before the stop is kept.
    third = ST.run_study(cfg)
    assert third.status == "complete"
    assert sorted(third.trained) == ["continued-seed1", "e2mc-seed0", "e2mc-seed1"]
    assert third.skipped == ["continued-seed0"]  # trained by the second invocation
    assert snap.stat().st_mtime_ns == kept
    assert all(_stamps(out)[p] == t for p, t in done.items())
    for name in ("continued-seed0", "e2mc-seed1"):
        train = out / "cells" / name / "train"
        summary = json.loads((train / "summary.json").read_text())
        assert summary["steps"] == 2 and [s["step"] for s in summary["snapshots"]] == [1, 2]
        last = load_file(str(train / "snapshots" / "epoch-0.4" / "sslboost.safetensors"))
        final = load_file(str(train / "sslboost.safetensors"))
        assert all(torch.equal(last[k], final[k]) for k in final)  # the last point is the run's end

    study = json.loads((out / "study.json").read_text())
    assert study["format"] == "sslboost-study-epochs/1" and study["complete"] is True
    assert study["epochs"] == [0.2, 0.4] and study["columns"] == ["linear 100%", "knn"]
    results = {
        (c, s, e): json.loads((out / "cells" / f"{c}-seed{s}" / f"epoch-{e}" / "result.json").read_text())
        for c in ("continued", "e2mc") for s in (0, 1) for e in (0.2, 0.4)
    }  # fmt: skip
    for point in study["points"]:
        e = point["epochs"]
        assert [r["name"] for r in point["rows"]] == ["base", "continued", "e2mc"] and point["complete"]
        e2mc = point["rows"][2]["linear 100%"]
        assert e2mc["values"] == [results[("e2mc", s, e)]["columns"]["linear 100%"] for s in (0, 1)]
        assert e2mc["mcnemar_vs_continued"]["seeds"] == [0, 1]
        assert results[("e2mc", 1, e)]["snapshot"]["step"] == round(e * 5)
    for entry, e in zip(study["signs"]["e2mc"], (0.2, 0.4), strict=True):
        diffs = [results[("e2mc", s, e)]["columns"]["linear 100%"] - results[("continued", s, e)]["columns"][
            "linear 100%"] for s in (0, 1)]  # fmt: skip
        assert entry["epochs"] == e and entry["seeds"] == [0, 1] and entry["differences"] == diffs
        assert entry["signs"] == ["+" if d > 0 else "−" if d < 0 else "0" for d in diffs]
        assert entry["above"] == sum(d > 0 for d in diffs)

    md = (out / "study.md").read_text()
    assert "## After 0.2 epochs of continued pre-training" in md and "## After 0.4 epochs" in md
    assert md.count("| model | linear 100% | knn | p vs continued (linear 100%) |") == 2
    assert "## Sign of (criterion − continued) per seed, linear 100%" in md
    assert (out / "study.png").read_bytes().startswith(PNG_MAGIC)


def _watch_the_first_point(monkeypatch, cell, interrupt_at_step: int | None = None) -> list:
    """Each training step of the cell's run records ``(step before it, whether the 0.2-epoch point's
    result.json exists)``; Ctrl-C once after optimiser step ``interrupt_at_step``."""
    step, seen = L.train_step, []

    def watching(state, plan, views, epoch):
        seen.append((state.step, (cell / "epoch-0.2" / "result.json").is_file()))
        record = step(state, plan, views, epoch)
        if state.step == interrupt_at_step and len(seen) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return record

    monkeypatch.setattr(L, "train_step", watching)
    return seen


def test_points_reached_before_an_interruption_are_evaluated_before_training_resumes(
    tmp_path, base, folder, monkeypatch
):
    out = tmp_path / "study"
    cfg = _config(base, folder, out, criteria="continued", seeds=1)
    cell = out / "cells" / "continued-seed0"
    seen = _watch_the_first_point(monkeypatch, cell, interrupt_at_step=1)
    assert ST.run_study(cfg).status == "interrupted"
    assert not (cell / "epoch-0.2" / "result.json").exists()  # reached, not evaluated yet
    second = ST.run_study(cfg)
    assert second.status == "complete"
    # the resumed run starts at step 1 with the first point's result already written
    assert seen == [(0, False), (1, True)]
    first_point = json.loads((cell / "epoch-0.2" / "result.json").read_text())
    assert first_point["snapshot"]["step"] == 1 and first_point["train_wall_time_s_this_run"] == 0.0


@pytest.fixture
def swav_base(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "swav.safetensors"
    heads = {"hidden_mlp": 16, "feat_dim": 8, "n_prototypes": 10}
    save_checkpoint(path, build_model("swav", "resnet-mini", heads), base="tiny-swav", epoch=1)
    return path


@pytest.mark.parametrize(
    ("method", "criterion"),
    [("vicreg", "continued"), ("swav", "e2mc")],  # SwAV: multi-crop views, prototypes, Sinkhorn
)
def test_each_point_is_evaluated_when_the_run_reaches_it_and_the_run_goes_on_bit_for_bit(
    tmp_path, base, swav_base, folder, monkeypatch, method, criterion
):
    """One invocation: the run stops at its 0.2-epoch point, which is evaluated before step 2 is
    trained; the run then resumes and ends with the weights of a run trained without stopping."""
    base = swav_base if method == "swav" else base
    out = tmp_path / "study"
    cfg = _config(base, folder, out, criteria=criterion, seeds=1)
    cell = out / "cells" / f"{criterion}-seed0"
    seen = _watch_the_first_point(monkeypatch, cell)
    assert ST.run_study(cfg).status == "complete"
    assert seen == [(0, False), (1, True)]  # step 1 → 2 is trained after the first point's figures
    summary = json.loads((cell / "train" / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("finished", 2)
    first = json.loads((cell / "epoch-0.2" / "result.json").read_text())
    assert first["snapshot"]["step"] == 1

    # the same run in one go (plain `sslboost continue` with the cell's recipe): the same weights
    from e2mc_cli.study.config import epoch_sets
    from e2mc_cli.training.loop import run
    from e2mc_cli.training.plan import TrainOptions

    sets = [*cfg.sets, "run.seed=0", *epoch_sets(cfg)]
    whole = tmp_path / "whole"
    opts = TrainOptions(
        base=str(base), criterion=criterion, data=str(folder), out=str(whole), batch_size=8, image_size=8,
        sets=sets, workers=0, device="cpu",
    )  # fmt: skip
    assert run(opts).status == "finished"
    ours = load_file(str(cell / "train" / "sslboost.safetensors"))
    theirs = load_file(str(whole / "sslboost.safetensors"))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_study_epochs_bad_input_is_one_line(cli, tmp_path, base, folder):
    common = ("study", "--base", base, "--data", folder, "--criteria", "continued", "--batch-size", "8")
    for extra, says in (
        (("--epochs", "0.4,0.2"), "--epochs 0.4,0.2: the epoch counts must be strictly increasing"),
        (("--epochs", "0.2,x"), "'x' is not a number of epochs"),
        (("--epochs", "0.2,0.5"), "--epochs: 0.5 epochs is 2.5 optimiser steps (5 per epoch)"),
        (("--epochs", "0.2,0.4", "--max-steps", "1"), "--max-steps would stop the runs"),
        (("--epochs", "0"), "--epochs must be a positive number"),
    ):
        r = cli(*common, "--out", tmp_path / "s", *extra)
        assert r.exit_code == 2 and says in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "s").exists()


def _hand_made() -> dict:
    from e2mc_cli.study.summary import seed_stat

    def row(name, values, p=None, seeds=(0, 1, 2)):
        cell = seed_stat(list(values))
        if p is not None:
            cell["mcnemar_vs_continued"] = {"pooled": {"p_exact": p}}
        return {"name": name, "linear 1%": cell, "seeds_done": list(seeds)}

    start = {"name": "base", "linear 1%": seed_stat([70.0, 70.0, 70.0])}
    control = row("continued", [70.0, 71.0, 72.0])
    points = [
        {"epochs": 1, "rows": [start, control, row("e2mc", [71.0, 70.0, 73.0], 0.2)]},
        {"epochs": 3, "rows": [start, control, row("e2mc", [73.0, 74.0, 75.0], 0.004)]},
    ]
    signs = ST.points.seed_signs(points, "linear 1%")
    return {
        "config": {"base": "fmnist-vicreg", "seeds": 3},
        "data": "fmnist",
        "columns": ["linear 1%"],
        "epochs": [1, 3],
        "points": points,
        "signs": signs,
        "command": "sslboost study --epochs 1,3",
    }


def test_signs_markdown_and_figure_of_a_hand_made_study(monkeypatch):
    study = _hand_made()
    at_1, at_3 = study["signs"]["e2mc"]
    assert at_1["differences"] == [1.0, -1.0, 1.0] and at_1["signs"] == ["+", "−", "+"] and at_1["above"] == 2
    assert at_3["signs"] == ["+", "+", "+"] and at_3["above"] == 3 and at_3["n"] == 3
    md = ST.render_points_markdown(study)
    # continued at 3 epochs: 70, 71, 72 → 71.00 ± 0.58; e2mc 73, 74, 75 → 74.00 ± 0.58, p = 0.004
    assert "| + e2mc | 74.00 ± 0.58 | 0.004 |" in md and "| continued | 71.00 ± 0.58 |  |" in md
    assert "| e2mc | + − + (2/3) | + + + (3/3) |" in md
    assert "## After 1 epoch of continued pre-training" in md and "## After 3 epochs" in md

    from e2mc_cli.study import render_points as RP

    figures = []
    monkeypatch.setattr(RP, "save_png", lambda fig, path: figures.append(fig))
    RP.render_points_png(study, "unused.png")
    absolute, delta = figures[0].axes
    lines = {line.get_label(): line for line in absolute.get_lines()}
    assert list(lines["e2mc"].get_xdata()) == [0.0, 1.0, 3.0]  # from the base at 0 epochs
    assert list(lines["e2mc"].get_ydata()) == [70.0, pytest.approx(71.3333333), 74.0]
    assert list(lines["continued"].get_ydata()) == [70.0, 71.0, 71.0]
    (diff,) = [line for line in delta.get_lines() if line.get_label() == "e2mc"]
    assert list(diff.get_ydata()) == [0.0, pytest.approx(1 / 3), 3.0]  # paired by seed: (1 − 1 + 1) / 3, 3
    assert [t.get_text() for t in delta.texts if "*" in t.get_text()] == ["**"]  # p = 0.004 at 3 epochs
    assert "epochs of continued pre-training" in absolute.get_xlabel()
    assert "bands: ± one standard error over seeds" in figures[0].get_suptitle()
