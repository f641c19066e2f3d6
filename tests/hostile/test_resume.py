"""``--resume`` and ``--overwrite`` as a hostile user or a dying machine would use them: a resumed run
is byte for byte the uninterrupted one, keeps its stop point and its command line, says what it
does with a ``--base`` and refuses ``--overwrite``; a run killed before its first checkpoint is
never stuck; ``--overwrite`` removes every output of the earlier run and never the base it reads.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
import torch
from conftest import assert_one_line_failure, temporaries, train_args
from test_train import SMALL, make_data
from test_train_resilience import KILLER, _env

from e2mc_cli.checkpoint import read_metadata, save_state_dict
from e2mc_cli.io import sort_safetensors_metadata
from e2mc_cli.run_layout import STATE_FILE
from e2mc_cli.training import loop
from e2mc_cli.training.state import load_training_state

MAIN = "import sys\nfrom e2mc_cli.cli import main\nsys.argv = ['sslboost', *sys.argv[1:]]\nmain()\n"


def sslboost(script: str, *args, check_code: int | None = 0) -> subprocess.CompletedProcess:
    """Run ``script`` (the CLI, or the CLI that kills itself) in a fresh process on this tree."""
    env = {**_env(), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )
    if check_code is not None:
        assert proc.returncode == check_code, proc.stderr[-3000:]
    return proc


def killed_at_checkpoint(n: int) -> str:
    """:data:`KILLER` (SIGKILL half-way through a checkpoint write), at the ``n``-th checkpoint."""
    assert 'calls["n"] == 2' in KILLER
    return KILLER.replace('calls["n"] == 2', f'calls["n"] == {n}')


def interrupt_at(monkeypatch, step: int) -> None:
    """Ctrl-C during training step ``step`` (the run saves and stops after it)."""
    original = loop.train_step

    def interrupting(state, plan, views, epoch):
        record = original(state, plan, views, epoch)
        if state.step == step:
            os.kill(os.getpid(), signal.SIGINT)
        return record

    monkeypatch.setattr(loop, "train_step", interrupting)


# --- exact and self-describing -----------------------------------------------------------------------


def test_sigkill_then_resume_gives_byte_identical_model_and_backbone(cli, env, tmp_path):
    run = tmp_path / "run"
    args = train_args(env, run, "--max-steps", "3", "--set", "run.checkpoint_every=1")
    sslboost(MAIN, *args)
    ref = run.rename(tmp_path / "ref")

    sslboost(killed_at_checkpoint(2), *args, check_code=-signal.SIGKILL)
    assert load_training_state(run / STATE_FILE)["step"] == 1 and temporaries(run)  # the half-written one

    r = cli("continue", "--out", run, "--resume")
    assert r.exit_code == 0, r.stderr
    for name in ("sslboost.safetensors", "model.safetensors"):
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name
    assert temporaries(run) == []
    assert "--resume" not in read_metadata(run / "sslboost.safetensors")["command"]


def test_a_kill_during_the_first_checkpoint_is_resumed_from_the_base(cli, env, tmp_path):
    run = tmp_path / "run"
    args = train_args(env, run, "--max-steps", "2", "--set", "run.checkpoint_every=1")
    sslboost(killed_at_checkpoint(1), *args, check_code=-signal.SIGKILL)
    assert not (run / STATE_FILE).exists() and temporaries(run)

    r = cli(*args, "--resume")  # the command the run printed: the one that started it, plus --resume
    assert r.exit_code == 0, r.stderr
    assert "stopped before its first checkpoint; starting the run again from its base" in r.stdout
    assert load_training_state(run / STATE_FILE)["step"] == 2 and temporaries(run) == []


def _never_checkpointed(run):
    """The folder a run killed during its first checkpoint write leaves."""
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.toml").write_text("[run]\nepochs = 1\n")
    (run / "metrics.jsonl").write_text("")
    orphan = run / "checkpoints" / ".last.pt.x1y2z3.tmp"
    orphan.write_bytes(b"half a checkpoint")
    return orphan


def test_a_run_killed_before_its_first_checkpoint_starts_again_without_overwrite(cli, env, tmp_path):
    run = tmp_path / "run"
    orphan = _never_checkpointed(run)
    r = cli(*train_args(env, run, "--max-steps", "1"))
    assert r.exit_code == 0, r.stderr
    assert not orphan.exists() and (run / "sslboost.safetensors").is_file()


def test_resume_of_a_run_killed_before_its_first_checkpoint_without_its_base(cli, tmp_path):
    run = tmp_path / "run"
    orphan = _never_checkpointed(run)
    r = cli("continue", "--out", run, "--resume")
    assert_one_line_failure(r, 2, contains="stopped before its first checkpoint", folder=run)
    assert "without --resume" in r.stderr and not orphan.exists()


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_resume_with_nothing_to_resume(cli, tmp_path, folder):
    run = tmp_path / "run"
    if folder == "empty":
        run.mkdir()
    assert_one_line_failure(cli("continue", "--out", run, "--resume"), 2, contains="nothing to resume")


def test_resume_keeps_the_stop_point_and_the_command_unless_told(cli, env, tmp_path, monkeypatch):
    run = tmp_path / "run"
    args = train_args(env, run, "--max-steps", "3", "--set", "run.checkpoint_every=100")
    interrupt_at(monkeypatch, 1)
    r = cli(*args)
    assert r.exit_code == 0 and "stopped at step 1" in r.stdout
    monkeypatch.undo()
    command = read_metadata(run / "sslboost.safetensors")["command"]

    r = cli("continue", "--out", run, "--resume")
    assert r.exit_code == 0, r.stderr
    assert "resuming" in r.stdout and "it stops at step 3 (--max-steps 3)" in r.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["steps"], summary["status"]) == (3, "max_steps")  # not the recipe's 20 steps
    assert read_metadata(run / "sslboost.safetensors")["command"] == command  # the original, no --resume

    assert cli("continue", "--out", run, "--resume", "--max-steps", "4").exit_code == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    assert read_metadata(run / "sslboost.safetensors")["command"] == command


def test_sigterm_to_every_process_of_the_run_stops_it_as_one_to_the_main_process(
    cli, env, tmp_path, monkeypatch
):
    """``kill -TERM -- -PGID`` (or a scheduler) signals the loader's workers too: they leave it to
    the main process, which finishes the step, saves and stops."""
    original = loop.train_step
    signalled, alive = [], []

    def terminating(state, plan, views, epoch):
        record = original(state, plan, views, epoch)
        if state.step == 1:
            workers = multiprocessing.active_children()
            signalled.extend(w.pid for w in workers)
            for pid in [*signalled, os.getpid()]:
                os.kill(pid, signal.SIGTERM)
            time.sleep(1.0)  # long enough for a worker to die of it
            alive.extend(w.is_alive() for w in workers)
        return record

    monkeypatch.setattr(loop, "train_step", terminating)
    run = tmp_path / "run"
    args = train_args(env, run, "--max-steps", "3")
    args[args.index("--workers") + 1] = "1"  # one loader worker
    r = cli(*args)
    assert signalled, "the run had no loader worker to signal"
    assert alive == [True] * len(signalled)  # the workers left the signal to the main process
    assert r.exit_code == 0, r.stderr
    assert "stopped at step 1" in r.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("interrupted", 1)
    assert load_training_state(run / STATE_FILE)["step"] == 1


@pytest.fixture
def stopped_run(cli, env, tmp_path):
    run = tmp_path / "run"
    assert cli(*train_args(env, run, "--max-steps", "1")).exit_code == 0
    return run


def test_resume_with_overwrite_is_refused(cli, stopped_run):
    before = (stopped_run / STATE_FILE).read_bytes()
    r = cli("continue", "--out", stopped_run, "--resume", "--overwrite")
    assert_one_line_failure(r, 2, contains="--overwrite replaces it: pass one of them", folder=stopped_run)
    assert (stopped_run / STATE_FILE).read_bytes() == before


def test_resume_with_another_base_is_refused(cli, env, stopped_run):
    r = cli("continue", "--out", stopped_run, "--resume", "--base", env["bases"]["swav"])
    line = assert_one_line_failure(r, 2, contains="--resume continues", folder=stopped_run)
    assert str(env["bases"]["vicreg"]) in line and "drop --base" in line


def test_resume_with_its_own_base_says_so_and_resumes(cli, env, stopped_run):
    r = cli(*train_args(env, stopped_run, "--max-steps", "2"), "--resume")
    assert r.exit_code == 0, r.stderr
    assert f"is the base of {stopped_run}: resuming from {stopped_run / STATE_FILE} instead" in r.stdout
    assert load_training_state(stopped_run / STATE_FILE)["step"] == 2


def test_pretrain_resumes_without_naming_its_initial_weights(cli, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        '[recipe]\nname = "tiny-vicreg"\nmethod = "vicreg"\n[model]\narch = "resnet-mini"\nmlp = "16-16"\n'
        '[run]\nepochs = 1\nbatch_size = 8\n[criterion]\nname = "continued"\n[views]\nimage_size = 16\n'
    )
    data, run = make_data(tmp_path / "data"), tmp_path / "run"
    common = ["pretrain", "--recipe", recipe, "--data", data, "--out", run, "--workers", "0"]
    assert cli(*common, "--max-steps", "1").exit_code == 0
    r = cli(*common, "--max-steps", "2", "--resume")
    assert r.exit_code == 0, r.stderr
    assert "note:" in r.stdout and "base of" not in r.stdout and "recipe options" not in r.stdout
    assert json.loads((run / "summary.json").read_text())["steps"] == 2


def test_safetensors_metadata_is_written_in_sorted_order(tmp_path):
    path = tmp_path / "m.safetensors"
    meta = {f"key{i}": str(i) for i in (5, 3, 9, 1, 7, 2)}
    save_state_dict(path, {"b": torch.ones(2), "a": torch.zeros(3)}, meta)
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    assert list(header) == ["__metadata__", "a", "b"] and list(header["__metadata__"]) == sorted(meta)
    sort_safetensors_metadata(path)  # idempotent
    assert path.read_bytes() == data


# --- --overwrite --------------------------------------------------------------------------------------


def test_overwrite_removes_every_output_of_the_earlier_run(cli, env, stopped_run):
    for folder in ("eval-after", "eval-linear-cached-1pct"):
        (stopped_run / folder).mkdir()
        (stopped_run / folder / "eval.json").write_text('{"top1": {"mean": 37.1357}}')
    (stopped_run / "notes.txt").write_text("mine")
    r = cli(*train_args(env, stopped_run, "--max-steps", "1", "--criterion", "vcreg"), "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert not any(stopped_run.glob("eval*")) and (stopped_run / "notes.txt").read_text() == "mine"
    card = (stopped_run / "README.md").read_text()
    assert "37.1357" not in card and "eval-linear-cached-1pct" not in card  # the planted results are gone
    assert read_metadata(stopped_run / "sslboost.safetensors")["criterion"] == "vcreg"


def test_overwrite_never_deletes_the_base_it_reads(cli, env, stopped_run):
    base = stopped_run / "sslboost.safetensors"
    before = base.read_bytes()
    args = ["continue", "--base", base, "--data", env["data"], "--out", stopped_run, *SMALL, "--overwrite"]
    r = cli(*args, "--max-steps", "1")
    line = assert_one_line_failure(r, 2, contains=f"would delete {base}, the base this run starts from")
    assert "pick another --out" in line
    assert base.read_bytes() == before and (stopped_run / STATE_FILE).is_file()


def test_overwrite_keeps_a_base_that_is_no_output(cli, env, stopped_run):
    base = stopped_run / "bases" / "mine.safetensors"
    base.parent.mkdir()
    base.write_bytes(env["bases"]["vicreg"].read_bytes())
    args = ["continue", "--base", base, "--data", env["data"], "--out", stopped_run, *SMALL, "--overwrite"]
    assert cli(*args, "--max-steps", "1").exit_code == 0
    assert base.read_bytes() == env["bases"]["vicreg"].read_bytes()
