"""`sslboost study`, `sslboost pretrain` and the built-in fmnist bases (tiny models, tiny images)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from e2mc_cli import study as ST
from e2mc_cli.checkpoint import load_checkpoint, save_checkpoint
from e2mc_cli.data.synthetic import SyntheticImages, write_image_folder
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION
from e2mc_cli.methods import build_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return write_image_folder(
        root,
        {
            "train": SyntheticImages(10, n_classes=4, image_size=16, seed=0),
            "val": SyntheticImages(5, n_classes=4, image_size=16, seed=1),
        },
    )


@pytest.fixture
def base(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "base.safetensors"
    save_checkpoint(path, build_model("vicreg", "resnet-mini", {"mlp": "16-16-16"}), base="tiny", epoch=1)
    return path


def _config(base: Path, folder: Path, out: Path, **kw) -> ST.StudyConfig:
    args = dict(
        base=str(base),
        out=out,
        criteria="continued,e2mc",
        seeds=2,
        labels="10%,100%",
        data=str(folder),
        batch_size=8,
        max_steps=1,
        eval_epochs=2,
        image_size=16,
        workers=0,
        device="cpu",
        sets=["run.log_every=1"],
    )
    args.update(kw)
    return ST.StudyConfig(**args)


def test_study_runs_writes_outputs_and_resumes(tmp_path, base, folder):
    out = tmp_path / "study"
    cfg = _config(base, folder, out)
    first = ST.run_study(cfg)
    assert first.status == "complete"
    assert sorted(first.trained) == ["continued-seed0", "continued-seed1", "e2mc-seed0", "e2mc-seed1"]
    assert first.skipped == []

    study = json.loads((out / "study.json").read_text())
    assert study["columns"] == ["linear 10%", "linear 100%", "knn"]
    assert [r["name"] for r in study["rows"]] == ["base", "continued", "e2mc"]
    assert study["complete"] is True
    # Mean ± SE from the per-seed values (two seeds: SE = |a − b| / 2).
    for row in study["rows"]:
        for col in study["columns"]:
            values = row[col]["values"]
            assert len(values) == 2
            assert row[col]["mean"] == pytest.approx(sum(values) / 2)
            assert row[col]["se"] == pytest.approx(abs(values[0] - values[1]) / 2)
    # McNemar pooled over the two seeds: counts add up to the disagreements of both seeds.
    test = study["rows"][2]["linear 10%"]["mcnemar_vs_continued"]
    assert [r["seed"] for r in test["per_seed"]] == [0, 1]
    assert test["pooled"]["n01"] == sum(r["n01"] for r in test["per_seed"])
    assert test["pooled"]["n10"] == sum(r["n10"] for r in test["per_seed"])
    assert 0.0 <= test["pooled"]["p_exact"] <= 1.0

    md = (out / "study.md").read_text()
    assert "| base |" in md and "| continued |" in md and "| + e2mc |" in md
    assert "p vs continued (linear 10%)" in md
    png = (out / "study.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000

    # Each cell trained with its own seed, one step, and wrote its result last.
    cell = out / "cells" / "e2mc-seed1"
    summary = json.loads((cell / "train" / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["criterion"] == "e2mc"
    assert load_checkpoint(cell / "train" / "model.safetensors").metadata["criterion"] == "e2mc"
    recipe = json.loads(load_checkpoint(cell / "train" / "model.safetensors").metadata["recipe"])
    assert recipe["run"]["seed"] == 1
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/train/model.safetensors")}

    # A second invocation trains nothing and recomputes no evaluation.
    evals = {p: p.stat().st_mtime_ns for p in out.glob("**/eval.json")}
    again = ST.run_study(cfg)
    assert again.trained == [] and sorted(again.skipped) == sorted(first.trained)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {p: p.stat().st_mtime_ns for p in evals} == evals
    assert json.loads((out / "study.json").read_text())["rows"] == study["rows"]

    # A study folder moved elsewhere (its results name their evaluations where they were made)
    # reads its evaluations where they are now: the same tables, nothing evaluated again.
    (tmp_path / "elsewhere").mkdir()
    moved = out.rename(tmp_path / "elsewhere" / "study")
    evals = {p: p.stat().st_mtime_ns for p in moved.glob("**/eval.json")}
    again = ST.run_study(dataclasses.replace(cfg, out=moved))
    assert again.trained == [] and {p: p.stat().st_mtime_ns for p in evals} == evals
    assert json.loads((moved / "study.json").read_text())["rows"] == study["rows"]


def test_study_resumes_a_missing_cell_only(tmp_path, base, folder):
    out = tmp_path / "study"
    cfg = _config(base, folder, out, criteria="continued", seeds=2, labels="100%", knn=False)
    ST.run_study(cfg)
    (out / "cells" / "continued-seed1" / "result.json").unlink()
    kept = (out / "cells" / "continued-seed0" / "train" / "model.safetensors").stat().st_mtime_ns
    again = ST.run_study(cfg)
    # The cell's training had finished: its result is rebuilt from the run and evaluations on disk.
    assert again.trained == [] and sorted(again.skipped) == ["continued-seed0", "continued-seed1"]
    assert (out / "cells" / "continued-seed0" / "train" / "model.safetensors").stat().st_mtime_ns == kept
    assert (out / "cells" / "continued-seed1" / "result.json").is_file()
    md = (out / "study.md").read_text()
    assert "| base |" in md and "| continued |" in md


def test_study_redoes_evaluations_of_an_older_protocol_only(tmp_path, base, folder):
    out = tmp_path / "study"
    cfg = _config(base, folder, out, criteria="continued", seeds=2, labels="100%", knn=False)
    ST.run_study(cfg)
    # Make seed 1's result and evaluation look as if an older protocol had made them.
    cell = out / "cells" / "continued-seed1"
    for path in (cell / "result.json", cell / "eval" / "linear-100pct" / "eval.json"):
        record = json.loads(path.read_text())
        del record["protocol_version"]
        path.write_text(json.dumps(record))
    model = cell / "train" / "model.safetensors"
    trained_at = model.stat().st_mtime_ns
    kept = (out / "cells" / "continued-seed0" / "eval" / "linear-100pct" / "eval.json").stat().st_mtime_ns
    again = ST.run_study(cfg)
    # Nothing is trained again; seed 1 is evaluated again under today's protocol, seed 0 is kept.
    assert again.trained == [] and model.stat().st_mtime_ns == trained_at
    assert json.loads((cell / "result.json").read_text())["protocol_version"] == PROTOCOL_VERSION
    redone = json.loads((cell / "eval" / "linear-100pct" / "eval.json").read_text())
    assert redone["protocol_version"] == PROTOCOL_VERSION
    assert (
        out / "cells" / "continued-seed0" / "eval" / "linear-100pct" / "eval.json"
    ).stat().st_mtime_ns == kept
    assert json.loads((out / "study.json").read_text())["complete"] is True


def test_study_cli_bad_input_is_one_line(cli, tmp_path, base, folder):
    r = cli(
        "study", "--base", base, "--criteria", "continued,nope", "--out", tmp_path / "s", "--data", folder
    )
    assert r.exit_code == 2
    assert "unknown criterion 'nope'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_parse_list_and_default_data():
    assert ST.parse_list("a, b,,a") == ["a", "b"]
    assert ST.default_data("fmnist-vicreg", None) == "fmnist"
    assert ST.default_data("x.safetensors", "DIR") == "DIR"
    with pytest.raises(UserError, match="--data is required"):
        ST.default_data("swav800", None)


def test_recipe_rule_for_builtin_bases():
    from e2mc_cli.training.recipe import base_recipe_file

    file, extra = base_recipe_file("fmnist-vicreg", "e2mc")
    assert Path(file).name == "fmnist-vicreg-e2mc.toml" and extra == []
    file, extra = base_recipe_file("fmnist-swav", "vne")
    assert Path(file).name == "fmnist-swav-continued.toml" and extra == ["criterion.name=vne"]
    assert base_recipe_file("swav800", "e2mc") == (None, [])


def test_pretrain_initial_weights_are_reproducible(tmp_path):
    from e2mc_cli.pretrain import ModelSpec, init_checkpoint, model_spec

    spec = model_spec({"recipe": {"method": "swav"}, "model": {"arch": "resnet-mini", "feat_dim": 8}})
    assert spec.heads["feat_dim"] == 8 and spec.heads["n_prototypes"] == 3000
    small = ModelSpec("simsiam", "resnet-mini", {"dim": 16, "pred_dim": 4})
    a = load_checkpoint(init_checkpoint(small, 3, tmp_path / "a.safetensors"))
    b = load_checkpoint(init_checkpoint(small, 3, tmp_path / "b.safetensors"))
    c = load_checkpoint(init_checkpoint(small, 4, tmp_path / "c.safetensors"))
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not torch.equal(a.state_dict["backbone.conv1.weight"], c.state_dict["backbone.conv1.weight"])
    assert a.metadata["epoch"] == "0" and a.method == "simsiam"
    with pytest.raises(UserError, match=r"no \[model\] section"):
        model_spec({"recipe": {"method": "vicreg"}})
    with pytest.raises(UserError, match="unknown \\[model\\] key"):
        model_spec({"recipe": {"method": "vicreg"}, "model": {"arch": "resnet-mini", "dim": 3}})


def test_pretrain_cli_trains_from_scratch(cli, tmp_path, folder):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        '[recipe]\nname = "tiny-simsiam"\nmethod = "simsiam"\n'
        '[model]\narch = "resnet-mini"\ndim = 16\npred_dim = 4\n'
        '[run]\nepochs = 1\nbatch_size = 8\n[optim]\nname = "sgd"\nlr = 0.05\n'
        '[criterion]\nname = "continued"\n[views]\nimage_size = 16\n'
    )
    out = tmp_path / "run"
    r = cli(
        "pretrain", "--recipe", recipe, "--data", folder, "--out", out, "--max-steps", "2", "--workers", "0"
    )
    assert r.exit_code == 0, r.stdout + r.stderr
    ckpt = load_checkpoint(out / "model.safetensors")
    assert (ckpt.method, ckpt.arch, ckpt.heads["dim"]) == ("simsiam", "resnet-mini", 16)
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


FMNIST = ("fmnist-vicreg", "fmnist-swav", "fmnist-simsiam")


@pytest.mark.parametrize("name", FMNIST)
def test_fmnist_bases_are_listed_and_load(cli, name):
    from e2mc_cli.zoo import BASES, base_path, resolve_base

    spec = BASES[name]
    assert (spec.data, spec.arch, spec.licence) == ("fmnist", "resnet-mini", "MIT")
    rows = {r["name"]: r for r in json.loads(cli("bases", "--json").stdout)}
    assert name in rows and rows[name]["builtin"] == f"{name}.safetensors"
    if not base_path(spec).is_file():
        pytest.skip(f"{name}: weights not built into this checkout")
    ckpt = resolve_base(name)
    assert ckpt.method == spec.method and ckpt.metadata["base"] == name
    model = ckpt.build_model().eval()
    with torch.no_grad():
        assert model.backbone(torch.zeros(2, 3, 28, 28)).shape == (2, 128)


def test_fmnist_weights_fit_the_package_budget():
    from e2mc_cli.zoo import BASES, base_path

    sizes = [base_path(BASES[n]).stat().st_size for n in FMNIST if base_path(BASES[n]).is_file()]
    if not sizes:
        pytest.skip("no built-in weights in this checkout")
    assert sum(sizes) <= 20 * 1024 * 1024


def test_before_after_rows(tmp_path, base, folder):
    from e2mc_cli.zoo import resolve_base

    refined = tmp_path / "refined.safetensors"
    ckpt = load_checkpoint(base)
    model = ckpt.build_model()
    with torch.no_grad():
        model.backbone.conv1.weight.mul_(-1.0)
    save_checkpoint(refined, model, base="tiny", criterion="e2mc", epoch=2)
    rows = ST.before_after(
        resolve_base(str(base)),
        refined,
        data=str(folder),
        out=tmp_path / "run",
        labels=("10%", "100%"),
        image_size=16,
        eval_epochs=2,
        device="cpu",
    )
    assert [r["labels"] for r in rows] == ["10%", "100%"]
    for r in rows:
        assert r["difference"] == pytest.approx(r["after"] - r["before"])
        assert 0.0 <= r["p_mcnemar"] <= 1.0
        assert (Path(r["before_path"]) / "eval.json").is_file() and (
            Path(r["after_path"]) / "predictions.npz"
        ).is_file()


def test_markdown_and_png_from_a_hand_made_study(tmp_path):
    def cell(values, p=None):
        mean = sum(values) / len(values)
        se = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 / len(values) ** 0.5
        out = {"values": values, "mean": mean, "se": se, "n": len(values)}
        if p is not None:
            out["mcnemar_vs_continued"] = {"pooled": {"p_exact": p}}
        return out

    study = {
        "config": {"base": "fmnist-vicreg", "seeds": 3},
        "data": "fmnist",
        "columns": ["linear 1%", "knn"],
        "rows": [
            {"name": "base", "linear 1%": cell([70.0, 71.0, 72.0]), "knn": cell([80.0, 80.0, 80.0])},
            {"name": "continued", "linear 1%": cell([70.0, 72.0, 74.0]), "knn": cell([81.0, 81.0, 81.0])},
            {
                "name": "e2mc",
                "linear 1%": cell([75.0, 76.0, 77.0], 0.0123),
                "knn": cell([82.0, 82.0, 82.0], 1.0),
            },
        ],
        "complete": True,
        "command": "sslboost study --base fmnist-vicreg",
    }
    md = ST.render_markdown(study)
    # 70, 72, 74: mean 72, s = 2, SE = 2 / sqrt(3) = 1.15
    assert "| continued | 72.00 ± 1.15 | 81.00 ± 0.00 |  |" in md
    assert "| + e2mc | 76.00 ± 0.58 | 82.00 ± 0.00 | 0.012 |" in md
    assert "| base | 71.00 ± 0.58 | 80.00 ± 0.00 |  |" in md
    png = ST.render_png(study, tmp_path / "s.png").read_bytes()
    assert png.startswith(PNG_MAGIC)


def _drawn(monkeypatch, study: dict):
    """The figure ``render_png`` draws for ``study`` (kept instead of written)."""
    from e2mc_cli.study import render

    figures = []
    monkeypatch.setattr(render, "save_png", lambda fig, path: figures.append(fig))
    render.render_png(study, "unused.png")
    return figures[0]


def _hand_made(seeds_done_e2mc=(0, 1, 2)) -> dict:
    from e2mc_cli.study.summary import seed_stat

    def cell(values, p=None):
        out = seed_stat(list(values))
        if p is not None:
            out["mcnemar_vs_continued"] = {"pooled": {"p_exact": p}}
        return out

    e2mc = [76.0, 75.0, 77.0][: len(seeds_done_e2mc)]
    return {
        "config": {"base": "fmnist-vicreg", "seeds": 3},
        "columns": ["linear 1%", "knn"],
        "rows": [
            {"name": "base", "linear 1%": cell([70.0, 71.0, 72.0]), "knn": cell([80.0, 80.0, 80.0])},
            {"name": "continued", "linear 1%": cell([70.0, 72.0, 74.0]), "knn": cell([81.0, 81.0, 81.0]),
             "seeds_done": [0, 1, 2]},
            {"name": "e2mc", "linear 1%": cell(e2mc, 0.004), "knn": cell([82.0] * len(e2mc), 0.3),
             "seeds_done": list(seeds_done_e2mc)},
            {"name": "logdet", "linear 1%": cell([]), "knn": cell([]), "seeds_done": []},
            {"name": "vne", "linear 1%": cell([]), "knn": cell([]), "seeds_done": []},
        ],
        "cannot_run": {"logdet-seed0": "needs n > d", "logdet-seed1": "needs n > d"},
    }  # fmt: skip


def test_paired_differences_stars_and_cell_states():
    from e2mc_cli.study import render as R

    study = _hand_made()
    base, control, e2mc, logdet, vne = study["rows"]
    d = R.paired_delta(e2mc, control, "linear 1%")  # 76−70, 75−72, 77−74 = 6, 3, 3
    assert (d.mean, d.n) == (4.0, 3) and d.se == pytest.approx(1.0)
    assert R.paired_delta(base, control, "knn") == R.Delta(-1.0, 0.0, 3)  # the base's seeds are 0 … n−1
    # Paired by seed: e2mc done for seeds 2 and 0 only (in that order) is compared with those seeds.
    late = _hand_made(seeds_done_e2mc=(2, 0))["rows"][2]
    assert late["linear 1%"]["values"] == [76.0, 75.0]
    d = R.paired_delta(late, control, "linear 1%")  # seed 2: 76−74, seed 0: 75−70 → 2, 5
    assert (d.mean, d.n) == (3.5, 2) and d.se == pytest.approx(1.5)
    assert [R.stars(p) for p in (0.0004, 0.004, 0.04, 0.4, None)] == ["***", "**", "*", "", ""]
    assert R.cell_p(e2mc["linear 1%"]) == 0.004 and R.cell_p(base["knn"]) is None
    states = [R.cell_status(study, row, "knn") for row in study["rows"]]
    assert states == ["done", "done", "done", "cannot run", "not run yet"]
    assert R.seeds_text(study) == "n = 3" and R.seeds_text(_hand_made((0,))) == "n = 1–3"


def test_study_png_names_its_error_bars_missing_cells_and_significance(monkeypatch):
    fig = _drawn(monkeypatch, _hand_made())
    absolute, delta = fig.axes
    assert absolute.get_ylim()[0] == 0.0 and absolute.get_ylabel() == "top-1 accuracy (%)"
    assert "standard error over seeds (n = 3)" in absolute.get_title()
    assert delta.get_ylabel() == "Δ top-1 vs continued (points)"
    texts = [t.get_text() for t in absolute.texts]
    assert texts.count("cannot run") == 2 and texts.count("not run yet") == 2  # logdet, vne × 2 columns
    assert [t.get_text() for t in delta.texts if "*" in t.get_text()] == ["**"]  # e2mc at 1 %; knn p = 0.3
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["base", "continued", "e2mc", "logdet (cannot run)", "vne (not run yet)"]
    title = fig.get_suptitle()
    assert "error bars: standard error over seeds (n = 3)" in title and "McNemar's exact test" in title
    # Without the control there is no difference to draw: the absolute panel alone.
    study = _hand_made()
    study["rows"] = [r for r in study["rows"] if r["name"] != "continued"]
    assert len(_drawn(monkeypatch, study).axes) == 1


def test_scoped_sets_apply_to_one_criterion():
    assert ST.split_scoped_set("e2mc:criterion.beta=1") == ("e2mc", "criterion.beta=1")
    assert ST.split_scoped_set("run.log_every=1") == (None, "run.log_every=1")
    assert ST.split_scoped_set("views.note=a:b") == (None, "views.note=a:b")  # a colon in the value
    sets = ["run.log_every=1", "e2mc:criterion.beta=1", "vcreg:criterion.mu=2"]
    assert ST.sets_for(sets, "e2mc") == ["run.log_every=1", "criterion.beta=1"]
    assert ST.sets_for(sets, "continued") == ["run.log_every=1"]


def test_study_with_holdout_and_a_scoped_set(tmp_path, base, folder):
    out = tmp_path / "study"
    cfg = _config(
        base,
        folder,
        out,
        seeds=1,
        labels="100%",
        knn=False,
        holdout=8,
        sets=["run.log_every=1", "e2mc:criterion.beta=0.25"],
    )
    ST.run_study(cfg)
    recipe = json.loads(load_checkpoint(out / "cells/e2mc-seed0/train/model.safetensors").metadata["recipe"])
    assert recipe["criterion"]["beta"] == 0.25
    control = out / "cells/continued-seed0/train/model.safetensors"
    assert "beta" not in json.loads(load_checkpoint(control).metadata["recipe"])["criterion"]
    rec = json.loads((out / "cells/e2mc-seed0/eval/linear-100pct/eval.json").read_text())
    assert rec["dataset"]["val_size"] == 8 and rec["dataset"]["train_size"] == 32
    assert "8 validation images held out from the training split" in (out / "study.md").read_text()
    with pytest.raises(UserError, match="'vne' is not one of the study's criteria"):
        ST.check_config(_config(base, folder, out, sets=["vne:criterion.x=1"]))


def test_a_criterion_that_cannot_run_is_reported_and_the_study_goes_on(tmp_path, base, folder):
    # CorInfoMax's log-determinant needs more samples per step than dimensions: 8 < 16 here.
    out = tmp_path / "study"
    cfg = _config(base, folder, out, criteria="continued,logdet", seeds=1, labels="100%", knn=False)
    result = ST.run_study(cfg)
    assert result.trained == ["continued-seed0"]
    assert list(result.cannot_run) == ["logdet-seed0"]
    assert "needs more samples than dimensions" in result.cannot_run["logdet-seed0"]
    study = json.loads((out / "study.json").read_text())
    assert study["cannot_run"] == result.cannot_run and study["complete"] is False
    md = (out / "study.md").read_text()
    assert "Cells that cannot run with this base:" in md and "- logdet-seed0: logdet" in md
    assert "_Incomplete" not in md


def test_cell_formats_and_the_seed_statistic():
    from e2mc_cli.study.summary import seed_stat

    cell = seed_stat([70.0, 72.0, 74.0])
    assert cell["n"] == 3 and cell["mean"] == pytest.approx(72.0)
    assert ST.fmt_mean_se(cell) == "72.00 ± 1.15"
    assert ST.fmt_mean_se({"n": 1, "mean": 70.0, "se": None}) == "70.00"
    assert ST.fmt_mean_se(seed_stat([])) == "–"
    assert ST.fmt_p({"mcnemar_vs_continued": {"pooled": {"p_exact": 0.0123}}}) == "0.012"
    assert ST.fmt_p({"mcnemar_vs_continued": {"pooled": {"p_exact": 1e-6}}}) == "<1e-4"
    assert ST.fmt_p({"mcnemar_vs_continued": {"pooled": None}}) == "–" and ST.fmt_p({}) == "–"



class _Holder:
    """Another process's lock on ``name`` of the study ``out``: taken on a thread of its own (as
    another process takes it), held until :meth:`release`."""

    def __init__(self, out, name):
        import threading

        from filelock import FileLock

        from e2mc_cli.study.locks import lock_file

        self._held, self._done = threading.Event(), threading.Event()
        lock = FileLock(lock_file(out, name))

        def hold():
            with lock:
                self._held.set()
                self._done.wait(30)

        self._thread = threading.Thread(target=hold, daemon=True)
        self._thread.start()
        assert self._held.wait(10)

    def release(self):
        self._done.set()
        self._thread.join(10)


def test_a_cell_another_process_is_running_is_skipped_and_joins_later(tmp_path, base, folder):
    """Two processes on one study folder: a cell the other one holds is left to it, not trained twice."""
    out = tmp_path / "study"
    cfg = _config(base, folder, out, criteria="continued,e2mc", seeds=1, labels="100%", knn=False)
    other = _Holder(out, "e2mc-seed0")  # another process, running that cell
    said: list[str] = []
    first = ST.run_study(cfg, log=said.append)
    assert (first.status, first.trained, first.busy) == ("incomplete", ["continued-seed0"], ["e2mc-seed0"])
    assert "e2mc-seed0: being run by another process; skipped" in said
    assert not (out / "cells" / "e2mc-seed0").exists()
    assert json.loads((out / "study.json").read_text())["complete"] is False
    other.release()  # it has finished (or died: the system releases the lock either way)
    second = ST.run_study(cfg)
    assert (second.status, second.trained, second.busy) == ("complete", ["e2mc-seed0"], [])
    assert json.loads((out / "study.json").read_text())["complete"] is True


def test_the_base_is_evaluated_once_while_another_process_waits_for_it(tmp_path, base, folder):
    import threading

    out = tmp_path / "study"
    cfg = _config(base, folder, out, criteria="continued", seeds=1, labels="100%", knn=False)
    ST.run_study(cfg)
    evals = {p: p.stat().st_mtime_ns for p in (out / "base").glob("**/eval.json")}
    assert evals
    other = _Holder(out, "base")  # another process, evaluating the base
    said: list[str] = []

    def log(line: str) -> None:
        said.append(line)
        if "waiting" in line:  # it finishes a moment after this process starts waiting
            threading.Timer(0.2, other.release).start()

    again = ST.run_study(cfg, log=log)
    assert said[0] == "base: another process is on it; waiting for it to finish"
    assert again.status == "complete"
    assert {p: p.stat().st_mtime_ns for p in evals} == evals  # read back, not evaluated again
