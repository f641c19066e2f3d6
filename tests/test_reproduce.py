"""`sslboost reproduce`: the plan of Tables 1 and 3 of the E2MC paper against the paper's text, its
GPU-hour estimate against hand arithmetic, bad input, and the whole chain on a tiny stand-in."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest
import zoo_fixtures as zf

from e2mc_cli.data.synthetic import SyntheticImages, write_image_folder
from e2mc_cli.reproduce import ReproduceOptions, build_plan
from e2mc_cli.training.recipe import RECIPES_DIR
from e2mc_cli.zoo import BASES

# --- the paper's tables, transcribed from its text (Chakraborty et al., AISTATS 2025) ----------

L = ("linear 1%", "linear 10%", "linear 100%")
S = ("semisup 1%", "semisup 10%")
# Table 1: (row id, base file, criterion, recipe, epochs, columns reported, figures in column order)
TABLE1 = [
    ("vicreg-base", "vicreg", None, None, 1000, L + S, (53.50, 66.57, 73.20, 54.53, 67.97)),
    ("vicreg-continued", "vicreg", "continued", "vicreg-continued", 1010, L, (53.51, 66.57, 73.16)),
    ("vicreg-e2mc", "vicreg", "e2mc", "vicreg-e2mc", 1010, L + S, (54.54, 66.82, 73.45, 55.05, 68.12)),
    ("swav400-base", "swav400-bs256", None, None, 400, L + S, (52.34, 67.61, 74.30, 52.57, 69.25)),
    ("swav400-continued", "swav400-bs256", "continued", "swav-continued", 410, L, (52.31, 67.56, 74.31)),
    ("swav400-e2mc", "swav400-bs256", "e2mc", "swav-e2mc", 410, L + S, (53.40, 67.73, 74.44, 52.70, 69.24)),
    ("swav800-base", "swav800", None, None, 800, L + S, (53.70, 68.86, 75.30, 53.89, 70.22)),
    ("swav800-continued", "swav800", "continued", "swav-continued", 810, L, (53.69, 68.87, 75.32)),
    ("swav800-e2mc", "swav800", "e2mc", "swav-e2mc", 810, L + S, (55.27, 68.98, 75.41, 53.94, 70.32)),
    ("simsiam-base", "simsiam100-bs256", None, None, 100, L, (43.71, 60.15, 68.37)),
    ("simsiam-continued", "simsiam100-bs256", "continued", "simsiam-continued", 110, L,
     (43.78, 60.23, 68.45)),
    ("simsiam-e2mc", "simsiam100-bs256", "e2mc", "simsiam-e2mc", 110, L, (43.78, 60.23, 68.52)),
]  # fmt: skip
TABLE3 = [
    ("swav800-base", "swav800", None, None, 800, L, (53.70, 68.86, 75.30)),
    ("swav800-continued", "swav800", "continued", "swav-continued", 810, L, (53.69, 68.87, 75.32)),
    ("swav800-vcreg", "swav800", "vcreg", "swav-vcreg", 810, L, (54.02, 68.88, 75.36)),
    ("swav800-mmcr", "swav800", "mmcr", "swav-mmcr", 810, L, (53.30, 68.77, 75.27)),
    ("swav800-uniformity", "swav800", "uniformity", "swav-uniformity", 810, L, (53.84, 68.90, 75.33)),
    ("swav800-e2mc", "swav800", "e2mc", "swav-e2mc", 810, L, (55.27, 68.98, 75.41)),
]  # fmt: skip
# Standard errors a few rows print (the 100 % figures of the bases have none).
SE = {("vicreg-base", "linear 1%"): 0.11, ("swav400-e2mc", "semisup 1%"): 0.54,
      ("swav800-mmcr", "linear 100%"): 0.01, ("vicreg-base", "linear 100%"): None}  # fmt: skip

# --- hand arithmetic of the estimate (paper App. B.1: 10 epochs on 2 GPUs took 10 / 13 / 14 h) ---
N_TRAIN, N_VAL = 1_281_167, 50_000
LABELLED = {"1%": 12_811, "10%": 128_117, "100%": 1_281_167}
TRAIN_H = {"vicreg": 2 * 10.0, "swav": 2 * 13.0, "simsiam": 2 * 14.0}  # GPU-h of one 10-epoch run
VICREG_VIEWS_S = N_TRAIN * 10 * 2 / (10 * 3600 * 2)  # 224-px views per second per GPU
FORWARD_S = 3 * VICREG_VIEWS_S


def eval_hours(column: str) -> float:
    protocol, labels = column.split(" ")
    n = LABELLED[labels]
    if protocol == "linear":
        return (100 * n + N_VAL) / FORWARD_S / 3600
    return (20 * n / VICREG_VIEWS_S + N_VAL / FORWARD_S) / 3600


def _plan_json(cli, *args) -> dict:
    result = cli("reproduce", *args, "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("number, expected", [(1, TABLE1), (3, TABLE3)])
def test_dry_run_plan_is_the_papers_table(cli, number, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out, runs/reproduce, is relative
    doc = _plan_json(cli, "--table", number, "--data", tmp_path / "absent")
    assert (doc["format"], doc["table"], doc["seeds"], doc["probe_mode"]) == (
        "sslboost-reproduce-plan/1", number, 3, "standard"
    )
    keys = ("id", "base", "criterion", "recipe", "epochs")
    got = [(*(r[k] for k in keys), tuple(r["evaluations"])) for r in doc["rows"]]
    assert got == [row[:6] for row in expected]
    for (row_id, *_, columns, figures), row in zip(expected, doc["rows"]):
        assert [row["paper"][c]["mean"] for c in columns] == list(figures), row_id
        for (sid, col), se in SE.items():
            if sid == row_id:
                assert row["paper"][col]["se"] == se
        assert row["training_runs"] == (3 if row["criterion"] else 0)
        if row["recipe"]:  # a shipped recipe file, with the row's criterion
            text = (RECIPES_DIR / f"{row['recipe']}.toml").read_text()
            assert f'name = "{row["criterion"]}"' in text
    assert doc["out"] == "runs/reproduce" and list(tmp_path.iterdir()) == []  # nothing written


PLAN_KEYS = {
    "format": str, "table": int, "title": str, "paper": str, "link": str, "data": (str, type(None)),
    "out": str, "seeds": int, "probe_mode": str, "rows": list, "totals": dict, "shortened": dict,
    "assumptions": list, "studies": list, "commands": list,
}  # fmt: skip
ROW_KEYS = {
    "id": str, "label": str, "epochs": int, "base": str, "criterion": (str, type(None)),
    "recipe": (str, type(None)), "evaluations": list, "training_runs": int, "gpu_hours": dict,
    "paper": dict, "also_in_tables": list, "notes": list,
}  # fmt: skip


def test_plan_json_schema(cli):
    doc = _plan_json(cli, "--table", "1", "--max-steps", "5")
    assert set(doc) == set(PLAN_KEYS) and all(isinstance(doc[k], t) for k, t in PLAN_KEYS.items())
    for row in doc["rows"]:
        assert set(row) == set(ROW_KEYS) and all(isinstance(row[k], t) for k, t in ROW_KEYS.items())
        assert set(row["gpu_hours"]) == {"train", "eval", "total"}
        assert set(row["paper"]) == set(row["evaluations"])
        assert all(set(f) == {"mean", "se"} for f in row["paper"].values())
    assert set(doc["totals"]) == {"train", "eval", "total", "training_runs"}
    assert [s["base"] for s in doc["studies"]] == ["vicreg", "swav400-bs256", "swav800", "simsiam100-bs256"]
    assert all(s["criteria"] == ["continued", "e2mc"] for s in doc["studies"])
    assert doc["shortened"] == {"max_steps": 5} and "--max-steps 5" in doc["assumptions"][-1]
    assert all(isinstance(c, str) and c.startswith("sslboost ") for c in doc["commands"])


def test_dry_run_gpu_hours_follow_the_papers_timings(cli):
    doc = _plan_json(cli, "--table", "1")
    for row in doc["rows"]:
        method = BASES[row["base"]].method
        train = 3 * TRAIN_H[method] if row["criterion"] else 0.0
        ev = 3 * sum(eval_hours(c) for c in row["evaluations"])
        assert row["gpu_hours"]["train"] == pytest.approx(train, abs=0.05), row["id"]
        assert row["gpu_hours"]["eval"] == pytest.approx(ev, abs=0.05), row["id"]
    # 24 training runs: 2 criteria x 4 bases x 3 seeds, 20 + 26 + 26 + 28 GPU-h per criterion and seed.
    assert doc["totals"]["training_runs"] == 24
    assert doc["totals"]["train"] == pytest.approx(2 * 3 * (20 + 26 + 26 + 28))
    assert doc["totals"]["total"] == pytest.approx(doc["totals"]["train"] + doc["totals"]["eval"], abs=0.1)
    text = " ".join(doc["assumptions"])
    for fact in ("10 h (VICReg), 13 h (SwAV), 14 h (SimSiam)", "1,281,167", "3.10", "1/3"):
        assert fact in text


def test_dry_run_commands_are_the_studies_and_fine_tunings(cli, tmp_path):
    out = tmp_path / "rep"
    args = ["--table", 1, "--data", "/data/in", "--out", out, "--seeds", 2, "--rows", "vicreg"]
    doc = _plan_json(cli, *args)
    assert [r["id"] for r in doc["rows"]] == ["vicreg-base", "vicreg-continued", "vicreg-e2mc"]
    study = (
        f"sslboost study --base vicreg --criteria continued,e2mc --seeds 2 --labels 1%,10%,100% --no-knn "
        f"--probe-mode standard --data /data/in --out {out}/vicreg"
    )
    base = (
        "sslboost eval --base vicreg --protocol semisup --labels {}% --seeds 2 --data /data/in "
        f"--out {out}/vicreg/base/eval/semisup-{{}}pct"
    )
    cell = (
        f"sslboost eval --weights {out}/vicreg/cells/e2mc-seed{{0}}/train/model.safetensors "
        "--protocol semisup --labels {1}% --seeds 1 --data /data/in "
        f"--out {out}/vicreg/cells/e2mc-seed{{0}}/eval/semisup-{{1}}pct"
    )
    expected = [study, base.format(1, 1), base.format(10, 10)]
    expected += [cell.format(k, lab) for lab in (1, 10) for k in (0, 1)]
    assert doc["commands"] == expected
    # Table 3 shares the SwAV 800 base, continued and E2MC runs with Table 1.
    shared = {r["id"]: r["also_in_tables"] for r in _plan_json(cli, "--table", "3")["rows"]}
    assert shared == {"swav800-base": [1], "swav800-continued": [1], "swav800-vcreg": [],
                      "swav800-mmcr": [], "swav800-uniformity": [], "swav800-e2mc": [1]}  # fmt: skip


def test_dry_run_of_a_base_row_alone_lists_its_probes(cli):
    doc = _plan_json(cli, "--table", "3", "--rows", "swav800-base", "--seeds", "1", "--device", "cuda:1")
    assert [r["id"] for r in doc["rows"]] == ["swav800-base"]
    assert doc["commands"] == [
        f"sslboost eval --base swav800 --protocol linear --labels {lab} --mode standard --seeds 1 --data "
        f"IMAGENET --out runs/reproduce/swav800/base/eval/linear-{lab[:-1]}pct --device cuda:1"
        for lab in ("1%", "10%", "100%")
    ]


def test_dry_run_table_prints_rows_totals_and_commands(cli):
    result = cli("reproduce", "--table", "1", "--dry-run", "--rows", "simsiam", env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for text in ("SimSiam base", "SimSiam + E2MC", "simsiam-e2mc", "simsiam100-bs256", "168.0", "total"):
        assert text in out
    assert "sslboost study --base simsiam100-bs256 --criteria continued,e2mc" in out
    assert "the estimate assumes" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--table", "2", "--dry-run"], "--table 2: expected 1"),
        (["--table", "one", "--dry-run"], "--table one: expected 1"),
        (["--table", "1", "--rows", "swav", "--dry-run"], "--rows swav: not a row of Table 1"),
        (["--table", "3", "--rows", "vicreg", "--dry-run"], "--rows vicreg: not a row of Table 3"),
        (["--table", "1", "--rows", ",", "--dry-run"], "--rows: give at least one row"),
        (["--table", "1", "--device", "gpu", "--dry-run"], "--device gpu: expected auto"),
        (["--table", "1"], "--data is required"),
        (["--table", "1", "--data", "missing"], "--data missing: no such folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    line = zf.one_error_line(cli("reproduce", *args))
    assert message in line
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_plan_needs_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLBOOST_MIRROR", "http://127.0.0.1:9")  # nothing listens there
    plan = build_plan(ReproduceOptions(table=1, data=str(tmp_path / "absent")))
    assert len(plan.rows) == 12 and len(plan.groups) == 4
    assert not any(Path(p).exists() for p in (tmp_path / "absent", plan.out))


# --- the whole chain on a tiny stand-in --------------------------------------------------------

TINY_HEADS = {"mlp": "16-16-16"}


@pytest.fixture
def tiny_vicreg(monkeypatch):
    """``vicreg`` as a tiny official full checkpoint served on 127.0.0.1 (SSLBOOST_MIRROR)."""
    monkeypatch.setitem(
        BASES, "vicreg", dataclasses.replace(BASES["vicreg"], arch="resnet-mini", heads=TINY_HEADS)
    )
    official = zf.vicreg_full("resnet-mini", TINY_HEADS["mlp"])
    with zf.serve({"/vicreg/resnet50_fullckpt.pth": official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        yield server


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    return write_image_folder(
        tmp_path / "data",
        {
            "train": SyntheticImages(10, n_classes=4, image_size=16, seed=0),
            "val": SyntheticImages(4, n_classes=4, image_size=16, seed=1),
        },
    )


def _stamps(root: Path) -> dict[Path, int]:
    files = [*root.glob("**/eval.json"), *root.glob("**/model.safetensors")]
    return {p: p.stat().st_mtime_ns for p in files}


def test_whole_chain_runs_evaluates_tabulates_and_resumes(cli, tmp_path, tiny_vicreg, tiny_folder):
    out = tmp_path / "rep"
    short = ["--table", "1", "--data", tiny_folder, "--out", out, "--seeds", "1", "--device", "cpu",
             "--max-steps", "1", "--eval-epochs", "1", "--batch-size", "8", "--image-size", "16",
             "--workers", "0"]  # fmt: skip
    first = cli("reproduce", *short, "--rows", "vicreg-continued")
    assert first.exit_code == 0, first.stderr
    assert "1 run(s) trained now, 0 already finished" in first.stdout
    cells = out / "vicreg" / "cells"
    assert sorted(p.name for p in cells.iterdir()) == ["continued-seed0"]
    kept = _stamps(out)

    second = cli("reproduce", *short, "--rows", "vicreg")  # adds the E2MC row: only it is trained
    assert second.exit_code == 0, second.stderr
    assert "1 run(s) trained now, 1 already finished" in second.stdout
    assert {p: t for p, t in _stamps(out).items() if p in kept} == kept

    # Each run trained one step with its criterion; each evaluation ran the protocol it names.
    for crit in ("continued", "e2mc"):
        summary = json.loads((cells / f"{crit}-seed0" / "train" / "summary.json").read_text())
        assert (summary["criterion"], summary["steps"]) == (crit, 1)
    for folder in [*out.glob("vicreg/**/eval/linear-*"), *out.glob("vicreg/**/eval/semisup-*")]:
        record = json.loads((folder / "eval.json").read_text())
        assert record["protocol"] == folder.name.split("-")[0]
        assert record["mode"] == ("standard" if record["protocol"] == "linear" else None)
        assert record["hyperparameters"]["epochs"] == 1
    semisup = sorted(str(p.relative_to(out)) for p in out.glob("**/semisup-*"))
    assert semisup == [
        "vicreg/base/eval/semisup-10pct", "vicreg/base/eval/semisup-1pct",
        "vicreg/cells/e2mc-seed0/eval/semisup-10pct", "vicreg/cells/e2mc-seed0/eval/semisup-1pct",
    ]  # fmt: skip
    assert not (cells / "continued-seed0" / "eval" / "semisup-1pct").exists()  # Table 1 reports none

    doc = json.loads((out / "table1.json").read_text())
    assert doc["complete"] is True
    assert [r["id"] for r in doc["rows"]] == ["vicreg-base", "vicreg-continued", "vicreg-e2mc"]
    for row in doc["rows"]:
        inner = "base" if row["criterion"] is None else f"cells/{row['criterion']}-seed0"
        for col, cell in row["cells"].items():
            protocol, labels = col.split(" ")
            folder = out / "vicreg" / inner / "eval" / f"{protocol}-{labels[:-1]}pct"
            record = json.loads((folder / "eval.json").read_text())
            # ours: the best epoch's top-1 (the paper's figure), the final epoch's beside it
            assert cell["ours"]["values"] == [record["results"][0]["best_top1"]]
            assert cell["final"]["values"] == [record["results"][0]["top1"]]
            assert cell["difference"] == pytest.approx(cell["ours"]["mean"] - cell["paper"]["mean"])
    assert doc["rows"][2]["cells"]["semisup 1%"]["paper"] == {"mean": 55.05, "se": 0.08}
    md = (out / "table1.md").read_text()
    assert "| VICReg + E2MC | 1,010 | 54.54 ± 0.05 / " in md

    # A third invocation trains and evaluates nothing, and writes the same table.
    stamps = _stamps(out)
    third = cli("reproduce", *short, "--rows", "vicreg", "--json")
    assert third.exit_code == 0, third.stderr
    assert _stamps(out) == stamps
    again = json.loads(third.stdout)
    assert again["rows"] == doc["rows"] and again["format"] == "sslboost-reproduce/1"
    assert len(tiny_vicreg.requests) == 1  # the base was downloaded once


def test_printed_commands_make_the_same_evaluations(cli, tmp_path, tiny_vicreg, tiny_folder):
    short = ["--table", "1", "--rows", "vicreg-e2mc", "--data", tiny_folder, "--seeds", "1",
             "--device", "cpu", "--max-steps", "1", "--eval-epochs", "1", "--batch-size", "8",
             "--image-size", "16", "--workers", "0"]  # fmt: skip
    ours, theirs = tmp_path / "reproduce", tmp_path / "by-hand"
    assert cli("reproduce", *short, "--out", ours).exit_code == 0
    plan = _plan_json(cli, *short, "--out", theirs)
    for command in plan["commands"]:
        args = shlex.split(command)
        assert args[0] == "sslboost"
        result = cli(*args[1:])
        assert result.exit_code == 0, (command, result.stderr)
    records = sorted(p.relative_to(ours) for p in ours.glob("**/eval.json"))
    assert len(records) == 3 + 3 + 2 + 2  # base and e2mc: linear 1/10/100 %, semisup 1/10 %
    for rel in records:
        a, b = (json.loads((root / rel).read_text()) for root in (ours, theirs))
        assert [r["top1"] for r in a["results"]] == [r["top1"] for r in b["results"]], rel
        assert (a["protocol"], a["mode"], a["seeds"]) == (b["protocol"], b["mode"], b["seeds"])


def test_view_equivalents_and_training_hours_scale_with_crop_area():
    from e2mc_cli.reproduce import train_gpu_hours, view_equivalents

    swav = {"image_size": 224, "nmb_crops": [2, 6], "size_crops": [224, 96]}
    assert view_equivalents(swav, "swav") == pytest.approx(2 + 6 * (96 / 224) ** 2)
    assert view_equivalents({"image_size": 112}, "vicreg") == pytest.approx(0.5)
    # The paper's run (26 GPU-h); at half the image size every crop has a quarter of the pixels.
    assert train_gpu_hours("swav", swav, 10) == pytest.approx(26.0)
    assert train_gpu_hours("swav", {**swav, "image_size": 112}, 10) == pytest.approx(6.5)
    half = train_gpu_hours("simsiam", {"image_size": 224}, 5, images=N_TRAIN // 2)
    assert half == pytest.approx(28.0 / 4, rel=1e-5)


def test_study_probe_mode_is_checked(cli, tmp_path):
    result = cli("study", "--base", "fmnist-vicreg", "--out", tmp_path / "s", "--probe-mode", "x")
    line = zf.one_error_line(result)
    assert "--probe-mode x: expected one of: standard, cached" in line
