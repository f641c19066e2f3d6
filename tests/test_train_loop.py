"""The training loop's side of the data path: one loader over the run's global steps, the loader's
defaults on a node, loss terms read one step late, the stop signals' cadence under DDP, and the
augment mode a run keeps."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train import SMALL, make_bases, make_data

from e2mc_cli import distributed as D
from e2mc_cli.run_layout import STATE_FILE
from e2mc_cli.training import loop as L
from e2mc_cli.training.data import (
    DEFAULT_AUGMENT,
    EpochBatches,
    StepBatches,
    default_workers,
    epoch_order,
    prefetch_batches,
)
from e2mc_cli.training.step import StepRecord
from e2mc_cli.training.terms import LateRead, agree_on_terms, read_terms


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    return {"data": make_data(root / "data"), "bases": make_bases(root)}


def run_cli(cli, env, out, *extra, method="vicreg"):
    return cli(
        "continue", "--base", env["bases"][method], "--data", env["data"], "--out", out, *SMALL, *extra
    )


def _same_weights(a, b) -> bool:
    wa, wb = load_file(str(a / "sslboost.safetensors")), load_file(str(b / "sslboost.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# -- the sampler over global steps --------------------------------------------------------------------


def test_step_batches_are_the_epoch_batches_one_after_the_other():
    # 10 images, global batch 4: 2 steps per epoch; steps 0..5 are epochs 0, 1, 2
    epochs = [b for e in range(3) for b in EpochBatches(10, 4, seed=7, epoch=e)]
    assert list(StepBatches(10, 4, seed=7, start=0, end=6)) == epochs
    assert [e for batch in epochs for e, _ in batch] == [0] * 8 + [1] * 8 + [2] * 8
    # each epoch's batches are the first 8 of its own permutation of the seed
    order = epoch_order(10, 7, 1)
    assert [i for _, i in epochs[2]] == order[:4] and [i for _, i in epochs[3]] == order[4:8]
    for start in range(6):  # resuming at any step, across epoch boundaries
        assert list(StepBatches(10, 4, seed=7, start=start, end=6)) == epochs[start:]
    assert len(StepBatches(10, 4, seed=7, start=1, end=5)) == 4


def test_step_batches_give_each_process_its_contiguous_slice_of_the_global_batch():
    single = list(StepBatches(10, 4, seed=3, start=1, end=5))
    ranks = [list(StepBatches(10, 4, seed=3, start=1, end=5, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == single


# -- the loader's defaults on a node ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "local", "workers"), [(16, 1, 15), (16, 2, 7), (16, 8, 1), (16, 16, 1), (2, 1, 1), (1, 1, 1)]
)
def test_default_workers_share_the_cores_out_and_leave_one_to_each_process(cores, local, workers):
    assert default_workers(cores, local) == workers


def test_default_workers_read_the_node_from_torchrun(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers(16) == 3
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert default_workers(16) == 15


def test_prefetch_keeps_at_least_four_batches_in_flight():
    assert prefetch_batches(0) is None  # no workers: the training process loads each batch itself
    assert [prefetch_batches(w) for w in (1, 2, 3, 15)] == [4, 2, 2, 2]


# -- the loss terms on the device, read one step late ----------------------------------------------


def test_terms_are_read_once_the_next_step_is_queued_and_before_every_save(cli, env, tmp_path, monkeypatch):
    events = []
    train_step, read, save = L.train_step, StepRecord.read, L.TrainState.save

    def queued(state, plan, views, epoch):
        record = train_step(state, plan, views, epoch)
        events.append(f"step {record.step}")
        return record

    def reading(record):
        events.append(f"read {record.step}")
        return read(record)

    def saving(state, *args):
        events.append(f"save {state.step}")
        return save(state, *args)

    monkeypatch.setattr(L, "train_step", queued)
    monkeypatch.setattr(StepRecord, "read", reading)
    monkeypatch.setattr(L.TrainState, "save", saving)
    r = run_cli(cli, env, tmp_path / "run", "--max-steps", "3")  # an epoch is 2 steps
    assert r.exit_code == 0, r.stderr
    assert events == ["step 1", "step 2", "read 1", "read 2", "save 2", "step 3", "read 3", "save 3"]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3] and all("health/eff_rank" in x for x in lines)


def test_late_read_agreement_and_reading_without_a_process_group():
    vector = torch.tensor([0.0, 1.5, float("nan")])
    assert agree_on_terms(vector, 1) is vector  # one process: nothing to agree on
    late = LateRead(vector)
    assert late.ready() and late.values()[1] == 1.5
    nonfinite, terms = read_terms(("loss", "a.loss"), late.values())
    assert not nonfinite and terms["loss"] == 1.5 and terms["a.loss"] != terms["a.loss"]
    assert read_terms(("loss",), [1.0, float("inf")])[0]


@pytest.mark.parametrize("bad_step", [3, 4])  # 3: read when step 4 is queued; 4: before its checkpoint
def test_a_nonfinite_step_is_named_and_never_saved(cli, env, tmp_path, monkeypatch, bad_step):
    from e2mc_cli.criteria import CRITERIA

    cls = CRITERIA["e2mc"]
    original = cls.compute
    calls = {"n": 0}

    def poisoned(self, views):
        calls["n"] += 1
        loss, terms = original(self, views)
        if calls["n"] == bad_step:
            return loss * float("nan"), {**terms, "cov": terms["cov"] * float("nan")}
        return loss, terms

    monkeypatch.setattr(cls, "compute", poisoned)
    out = tmp_path / "run"
    r = run_cli(cli, env, out, "--epochs", "3")  # checkpoints at the epoch ends: steps 2, 4, 6
    assert r.exit_code == 1
    assert f"non-finite loss at step {bad_step} (epoch 2): " in r.stderr and "e2mc.cov = nan" in r.stderr
    assert "nothing from this step on is saved" in r.stderr
    assert f"the last good checkpoint is {out / STATE_FILE} (step 2)" in r.stderr
    assert load_training_state_step(out) == 2
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, bad_step))  # the bad step is never logged


def load_training_state_step(out) -> int:
    from e2mc_cli.training.state import load_training_state

    return load_training_state(out / STATE_FILE)["step"]


# -- the stop signals under DDP ------------------------------------------------------------------------


def test_stop_signals_are_agreed_every_few_steps_under_ddp_and_read_every_step_alone(monkeypatch):
    signals = L.StopSignals(lambda text: None)
    signals.signum = 15
    assert all(signals.requested(torch.device("cpu"), step) for step in range(1, 4))  # one process
    reduced = []

    def all_reduce(t, op=None):
        reduced.append(float(t[0]))

    monkeypatch.setattr(D, "is_distributed", lambda: True)
    monkeypatch.setattr(L.dist, "all_reduce", all_reduce)
    steps = range(1, 2 * L.STOP_CHECK_EVERY + 1)
    answers = [signals.requested(torch.device("cpu"), step) for step in steps]
    assert reduced == [1.0, 1.0]  # one collective per STOP_CHECK_EVERY steps
    assert [i + 1 for i, a in enumerate(answers) if a] == [L.STOP_CHECK_EVERY, 2 * L.STOP_CHECK_EVERY]


# -- one loader per run, workers across the epoch boundary ------------------------------------------


def test_one_loader_with_workers_crosses_epochs_bitwise_like_none(cli, env, tmp_path, monkeypatch):
    loaders = []
    original = L.run_loader

    def counted(plan, start, end):
        loaders.append((start, end, plan.workers))
        return original(plan, start, end)

    monkeypatch.setattr(L, "run_loader", counted)
    args = ("--max-steps", "3", "--set", "optim.lr=0.5")
    assert run_cli(cli, env, tmp_path / "w0", *args, method="swav").exit_code == 0
    r = run_cli(cli, env, tmp_path / "w2", *args, "--workers", "2", method="swav")
    assert r.exit_code == 0, r.stderr
    assert loaders == [(0, 3, 0), (0, 3, 2)]  # one loader per invocation, over every step
    assert _same_weights(tmp_path / "w0", tmp_path / "w2")

    # stopped inside epoch 0, resumed with workers into epoch 1
    part = tmp_path / "part"
    assert run_cli(cli, env, part, "--max-steps", "1", "--set", "optim.lr=0.5", method="swav").exit_code == 0
    r = cli("continue", "--out", part, "--resume", "--max-steps", "3", "--workers", "2")
    assert r.exit_code == 0, r.stderr
    assert loaders[-1] == (1, 3, 2)
    assert _same_weights(tmp_path / "w0", part)
    summary = json.loads((part / "summary.json").read_text())
    expected = {"workers": 2, "prefetch_factor": 2, "pin_memory": False, "augment": DEFAULT_AUGMENT}
    assert summary["loader"] == expected


# -- the augment mode a run keeps ---------------------------------------------------------------------------


def test_the_augment_mode_is_saved_and_a_resume_keeps_it(cli, env, tmp_path):
    out = tmp_path / "run"
    r = run_cli(cli, env, out, "--max-steps", "1", "--augment", "cpu")
    assert r.exit_code == 0, r.stderr
    assert "views: the official per-image pipeline on the loader's workers (--augment cpu)" in r.stdout
    assert json.loads((out / "summary.json").read_text())["loader"]["augment"] == "cpu"
    state = torch.load(out / STATE_FILE, weights_only=True)
    assert state["augment"] == "cpu"

    state["augment"] = "elsewhere"  # a run made by another pipeline
    torch.save(state, out / STATE_FILE)
    r = cli("continue", "--out", out, "--resume", "--max-steps", "2", "--augment", "cpu")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--augment cpu: " in r.stderr and "trains with --augment elsewhere" in r.stderr

    del state["augment"]  # a state saved before the mode was recorded: the per-image pipeline
    torch.save(state, out / STATE_FILE)
    r = cli("continue", "--out", out, "--resume", "--max-steps", "2")
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["loader"]["augment"] == "cpu"


def test_a_step_failing_on_what_a_nonfinite_step_left_names_that_step(cli, env, tmp_path, monkeypatch):
    from e2mc_cli.criteria import CRITERIA

    cls = CRITERIA["e2mc"]
    original = cls.compute
    calls = {"n": 0}

    def poisoned(self, views):
        calls["n"] += 1
        if not all(bool(torch.isfinite(v).all()) for v in views):  # as a decomposition refuses NaN
            raise RuntimeError("linalg.eigh: the input is not finite")
        loss, terms = original(self, views)
        return (loss * float("nan"), terms) if calls["n"] == 3 else (loss, terms)

    monkeypatch.setattr(cls, "compute", poisoned)
    out = tmp_path / "run"
    r = run_cli(cli, env, out, "--epochs", "3")
    assert r.exit_code == 1 and "non-finite loss at step 3 (epoch 2): e2mc.loss = nan" in r.stderr
    assert load_training_state_step(out) == 2


def test_a_loader_iterated_twice_keeps_its_workers_and_its_batches(env):
    from e2mc_cli.data.datasets import resolve_dataset
    from e2mc_cli.methods import view_pipeline
    from e2mc_cli.training.data import make_loader

    dataset = resolve_dataset(str(env["data"]), "train")
    pipeline = view_pipeline("simsiam", 16, augment="cpu")
    sampler = StepBatches(len(dataset), 8, seed=1, start=1, end=3)
    loader = make_loader(dataset, sampler, pipeline, 1, pin_memory=False, seed=1, persistent=True)
    assert loader.persistent_workers and loader.prefetch_factor == 4
    first = list(loader)
    workers = loader._iterator._workers  # the worker processes of the first pass …
    second = list(loader)
    assert loader._iterator._workers == workers and all(w.is_alive() for w in workers)  # … serve the second
    once = list(make_loader(dataset, sampler, pipeline, 0, pin_memory=False, seed=1))
    for batches in (first, second):
        assert [b.indices.tolist() for b in batches] == [b.indices.tolist() for b in once]
        assert all(torch.equal(a, b) for x, y in zip(batches, once) for a, b in zip(x.views, y.views))
    in_process = make_loader(dataset, sampler, pipeline, 0, pin_memory=False, seed=1, persistent=True)
    assert not in_process.persistent_workers  # no workers to keep
