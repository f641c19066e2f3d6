"""What runs report while they run: the start-up header, every loss term, the recipe's own epoch
count, plain lines from the first step, the live display on a terminal, the metrics cadence, and
the progress of an evaluation's feature extraction and classifier epochs."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rich.console import Console
from test_train import SMALL, make_bases, make_data

from e2mc_cli.data.synthetic import ColourImages, write_image_folder
from e2mc_cli.evaluate import progress as EP
from e2mc_cli.evaluate.features import extract_features
from e2mc_cli.methods import view_pipeline
from e2mc_cli.training.data import DEFAULT_AUGMENT, loader_settings
from e2mc_cli.training.progress import TrainProgress, format_epoch, metrics_interval

TERMS = {
    "loss": 1.5,
    "vicreg.loss": 1.0,
    "vicreg.invariance": 0.1,
    "vicreg.variance": 0.2,
    "vicreg.covariance": 0.3,
    "e2mc.loss": 0.5,
    "e2mc.ent": -0.25,
    "e2mc.cov": 0.01,
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    return {"data": make_data(root / "data"), "bases": make_bases(root)}


@pytest.mark.parametrize(
    ("steps", "log_every", "interval"),
    [(1, 20, 1), (117, 20, 1), (199, 20, 1), (250, 20, 2), (1999, 20, 19), (2000, 20, 20), (10**6, 20, 20)],
)
def test_metrics_interval_gives_every_run_a_curve(steps, log_every, interval):
    assert metrics_interval(steps, log_every) == interval
    assert len(range(interval, steps + 1, interval)) >= min(steps, 100)


def test_epochs_are_counted_as_the_recipe_counts_them():
    assert format_epoch(1, 2, 0.5) == "0.50/0.5"
    assert format_epoch(117, 234, 0.5) == "0.50/0.5"
    assert format_epoch(2340, 234, 100) == "10.00/100"


def test_piped_output_has_the_header_then_a_line_from_the_first_step(cli, env, tmp_path):
    out = tmp_path / "run"
    base = env["bases"]["vicreg"]
    r = cli("continue", "--base", base, "--data", env["data"], "--out", out, *SMALL, "--epochs", "0.5")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("step 1/1 "))
    header = "\n".join(lines[:first])
    assert f"base {base} (vicreg, resnet-mini) + criterion e2mc" in header
    assert f"data {env['data']}: 20 images; batch 8 (1 process), 2 steps per epoch" in header
    assert "0.5 epochs = 1 steps (new run)" in header
    assert "device cpu, fp32, channels_last, 0 data-loading workers per process" in header
    described = view_pipeline("vicreg", 16, augment=DEFAULT_AUGMENT).describe()
    loading = "data loading: batches loaded by the training process itself, no pinned memory"
    assert f"{loading}; views: {described}" in header
    assert f"output {out} (metrics every step" in header
    step = lines[first]
    assert "epoch 0.50/0.5 " in step and " lr " in step and " elapsed " in step and " eta " in step
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    for term in (k for k in metrics if k.startswith(("vicreg.", "e2mc."))):  # every term, not two
        assert f" {term} " in step, term
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_trained"] == 0.5


def fake_plan(**changes) -> SimpleNamespace:
    """The fields of a :class:`~e2mc_cli.training.plan.RunPlan` the progress display reads."""
    plan = dict(
        start_step=0, end_step=8, total_steps=8, steps_per_epoch=16, is_main=True,
        recipe={"run": {"epochs": 0.5, "log_every": 4}}, base_name="fmnist-vicreg", method_name="vicreg",
        arch="resnet-mini", criterion_name="e2mc", data="fmnist", dataset=range(60000), batch_size=256,
        world=1, resuming=False, warmup_steps=0, schedule="cosine", device=torch.device("cpu"), cuda=False,
        compile=False, precision="fp32", workers=2, out=Path("runs/x"), log_every=1, checkpoint_every=100,
        loader=loader_settings(2, False, "cpu"),
        pipeline=view_pipeline("vicreg", 28, augment="cpu"),
    )  # fmt: skip
    plan.update(changes)
    return SimpleNamespace(**plan)


def test_plain_lines_at_the_first_step_every_log_every_and_the_last():
    console = Console(file=io.StringIO(), width=80)
    with TrainProgress(console, fake_plan(end_step=9)) as progress:
        for step in range(1, 10):
            progress.update(step, 0.1, TERMS, 100.0)
    steps = re.findall(r"^step (\d+)/9 ", console.file.getvalue(), flags=re.M)
    assert steps == ["1", "4", "8", "9"]


def test_nothing_is_printed_by_other_processes():
    console = Console(file=io.StringIO(), width=80)
    with TrainProgress(console, fake_plan(is_main=False)) as progress:
        progress.update(1, 0.1, TERMS, 100.0)
    assert console.file.getvalue() == ""


def test_the_live_display_shows_every_term_wrapped_to_a_narrow_terminal():
    console = Console(file=io.StringIO(), width=60, force_terminal=True, color_system=None)
    with TrainProgress(console, fake_plan()) as progress:
        progress.update(4, 0.003, TERMS, 123.4)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.file.getvalue())
    last = text.split("\r")[-1] if "\r" in text else text
    assert "epoch 0.25/0.5" in text and "step 4/8" in text and "lr 0.003" in text and "123.4 img/s" in text
    for name, value in TERMS.items():
        assert f"{name} {value:.4g}" in text, name
    assert all(len(line) <= 60 for line in last.splitlines())
    assert "device cpu, fp32, channels_last, 2 data-loading workers per process" in text  # the header first
    assert "data loading: 2 batches prefetched per worker, no pinned memory; views: the official" in text


def test_eval_stages_print_plain_lines_with_their_size():
    console = Console(file=io.StringIO(), width=100)
    with EP.showing(EP.EvalDisplay(console)), EP.stage("linear probe, seed 0", 3, "epochs") as advance:
        for _ in range(3):
            advance(1)
    lines = console.file.getvalue().splitlines()
    assert lines[0] == "linear probe, seed 0: 3 epochs …"
    assert re.fullmatch(r"linear probe, seed 0: 3 epochs in 0:00:0\d", lines[-1])


def test_eval_stages_draw_a_bar_with_an_eta_on_a_terminal():
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    with EP.showing(EP.EvalDisplay(console)), EP.stage("features (val)", 10, "images") as advance:
        advance(10)
    text = console.file.getvalue()
    assert "features (val)" in text and "10/10" in text and "eta" in text


def test_without_a_display_the_stages_show_nothing(capsys):
    with EP.stage("anything", 5, "epochs") as advance:
        advance(5)
    assert capsys.readouterr() == ("", "")


def test_feature_extraction_reports_its_images(tmp_path):
    from e2mc_cli.data.datasets import resolve_dataset
    from e2mc_cli.data.transforms import eval_preprocessing, eval_transform

    write_image_folder(tmp_path, {"train": ColourImages(3, 2, 12, seed=0)})
    dataset = resolve_dataset(str(tmp_path), "train")
    console = Console(file=io.StringIO(), width=100)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
    transform = eval_transform(eval_preprocessing({"method": "vicreg"}, "imagefolder", 12))
    with EP.showing(EP.EvalDisplay(console)):
        feats, _ = extract_features(backbone, dataset, np.arange(len(dataset)), transform, batch_size=2)
    assert feats.shape == (6, 4)
    lines = console.file.getvalue().splitlines()
    assert lines[0] == "features (train): 6 images …" and lines[-1].startswith(
        "features (train): 6 images in "
    )


def test_eval_shows_its_stages_on_stderr_and_keeps_stdout_json(cli, tmp_path):
    from e2mc_cli.checkpoint import save_checkpoint
    from e2mc_cli.methods import build_model

    data = tmp_path / "colours"
    write_image_folder(data, {"train": ColourImages(6, 2, 12, seed=0), "val": ColourImages(3, 2, 12, seed=1)})
    weights = tmp_path / "model.safetensors"
    save_checkpoint(
        weights, build_model("vicreg", "resnet-mini", {"mlp": "16-16"}), base="b", criterion="e2mc"
    )
    args = ["--labels", "100%", "--epochs", "2", "--out", tmp_path / "ev", "--json"]
    r = cli("eval", "--weights", weights, "--data", data, *args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["protocol"] == "linear"
    assert "features (val): 6 images …" in r.stderr
    assert "linear probe, seed 0: 2 epochs …" in r.stderr and "linear probe, seed 0: 2 epochs in " in r.stderr
