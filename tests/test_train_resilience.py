"""A run killed with SIGKILL and resumed ends bitwise equal to an uninterrupted run; a 2-process
gloo DDP run equals the single-process run on the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from test_train import SMALL, make_bases, make_data

from e2mc_cli.run_layout import STATE_FILE
from e2mc_cli.training.state import load_training_state


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("resilience")
    return {"data": make_data(root / "data"), "bases": make_bases(root)}


def _env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # same arithmetic as this process
    env.pop("SSLBOOST_MIRROR", None)
    return env


# Runs the real CLI, but SIGKILLs itself while writing its second checkpoint: the temporary file
# is half written when the process dies.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import e2mc_cli.training.state as S
    from e2mc_cli.io import atomic_path
    calls = {"n": 0}
    original = S.save_training_state
    def save(path, state):
        calls["n"] += 1
        if calls["n"] == 2:
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"half a checkpoint")
                os.kill(os.getpid(), signal.SIGKILL)
        original(path, state)
    S.save_training_state = save
    from e2mc_cli.cli import main
    sys.argv = ["sslboost", *sys.argv[1:]]
    main()
    """
)


def _equal(a_path, b_path) -> bool:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_then_resume_is_bitwise_identical(cli, env, tmp_path):
    args = ["--epochs", "3", "--set", "run.checkpoint_every=3", "--lr", "0.5"]
    args += ["--set", "method.queue_length=16"]
    common = ["--base", str(env["bases"]["swav"]), "--data", str(env["data"]), *SMALL, *args]
    ref = tmp_path / "ref"
    assert cli("continue", *common, "--out", ref).exit_code == 0

    out = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, "continue", *common, "--out", str(out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # checkpoints at steps 2 (epoch end) and 3: killed while writing the second one
    assert load_training_state(out / STATE_FILE)["step"] == 2
    assert not (out / "sslboost.safetensors").exists()

    r = cli("continue", *common, "--out", out, "--resume")
    assert r.exit_code == 0, r.stderr
    assert _equal(ref / "sslboost.safetensors", out / "sslboost.safetensors")
    state = load_training_state(out / STATE_FILE)
    assert state["step"] == 6 and state["method"]["queue"].abs().sum() > 0  # the SwAV queue came back
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 6 and s["images_seen"] == 48
    assert not list((out / "checkpoints").glob(".*tmp"))  # the half-written file is gone


DDP_SCRIPT = "from e2mc_cli.cli import main\nmain()\n"


def test_two_process_gloo_ddp_equals_one_process(cli, env, tmp_path):
    """VICReg + E2MC, global batch 8: 2 processes × 4 images vs 1 × 8.

    Batch norm is synchronised over the global batch (GlobalBatchNorm, as SyncBatchNorm in the
    official code), VICReg's variance/covariance terms and the criterion see the all-gathered
    batch, and DDP averages gradients: the two runs compute the same function, so losses and
    updated weights agree to float32 rounding. (β = 1 rather than the recipe's 1000: with 8
    samples the m-spacings entropy's gradient, ∝ β/spacing, amplifies the rounding differences
    of the first step by orders of magnitude in the second.)
    """
    args = ["--max-steps", "2", "--set", "run.log_every=1", "--set", "optim.name=sgd", "--lr", "0.05"]
    args += ["--set", "criterion.beta=1"]
    common = ["--base", str(env["bases"]["vicreg"]), "--data", str(env["data"]), *SMALL, *args]
    single = tmp_path / "single"
    assert cli("continue", *common, "--out", single).exit_code == 0

    script = tmp_path / "sslboost_main.py"
    script.write_text(DDP_SCRIPT)
    ddp = tmp_path / "ddp"
    env_vars = {**_env(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
            "continue",
            *common,
            "--out",
            str(ddp),
        ],
        env=env_vars,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((ddp / "summary.json").read_text())["world_size"] == 2

    m1 = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(m1, m2, strict=True):
        for key in ("loss", "vicreg.loss", "vicreg.invariance", "e2mc.ent", "e2mc.cov"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    w1, w2 = load_file(str(single / "sslboost.safetensors")), load_file(str(ddp / "sslboost.safetensors"))
    base = load_file(str(env["bases"]["vicreg"]))
    assert w1.keys() == w2.keys()
    moved = 0.0
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=5e-5, msg=k)
        if w1[k].is_floating_point():
            moved = max(moved, float((w1[k] - base[k]).abs().max()))
    assert moved > 1e-2  # the steps changed the weights far beyond the tolerance


def _torchrun(script, args, tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        + [str(script), "continue", *args],
        env={**_env(), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_process_swav_resume_gives_each_process_its_own_queue(env, tmp_path):
    """Each process keeps its own SwAV queue; the state file holds both and a 2-process resume
    hands each its own, so stopping at step 2 and resuming to step 4 equals 4 steps in one go."""
    script = tmp_path / "sslboost_main.py"
    script.write_text(DDP_SCRIPT)
    common = ["--base", str(env["bases"]["swav"]), "--data", str(env["data"]), *SMALL]
    common += [
        "--set",
        "method.queue_length=16",
        "--set",
        "optim.lr=0.5",
        "--set",
        "run.checkpoint_every=100",
    ]
    ref, run = tmp_path / "ref", tmp_path / "run"
    _torchrun(script, [*common, "--max-steps", "4", "--out", str(ref)], tmp_path)
    _torchrun(script, [*common, "--max-steps", "2", "--out", str(run)], tmp_path)

    queues = load_training_state(run / STATE_FILE)["per_process"]["queue"]
    assert len(queues) == 2 and queues[0].abs().sum() > 0 and not torch.equal(queues[0], queues[1])

    _torchrun(script, [*common, "--max-steps", "4", "--out", str(run), "--resume"], tmp_path)
    assert _equal(ref / "sslboost.safetensors", run / "sslboost.safetensors")
    final_ref = load_training_state(ref / STATE_FILE)["per_process"]["queue"]
    final_run = load_training_state(run / STATE_FILE)["per_process"]["queue"]
    assert all(torch.equal(a, b) for a, b in zip(final_ref, final_run, strict=True))


FAILING_RANK0_SCRIPT = """
import errno, os
import e2mc_cli.training.state as S

real = S.save_training_state


def failing(path, payload):  # rank 0's disk fills up once the run is past step 2
    if os.environ["RANK"] == "0" and payload["step"] > 2:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return real(path, payload)


S.save_training_state = failing
from e2mc_cli.cli import main
main()
"""


def test_a_write_failing_on_rank_0_stops_every_process_with_its_line(env, tmp_path):
    """Under DDP only rank 0 writes; when its checkpoint write fails (disk full at step 3), every
    process stops at that step with the same one line and exit code 3, no traceback, instead of
    the others waiting in the next collective; the state of step 2 is kept."""
    script = tmp_path / "failing_rank0.py"
    script.write_text(FAILING_RANK0_SCRIPT)
    out, logs = tmp_path / "run", tmp_path / "logs"
    args = ["--base", str(env["bases"]["vicreg"]), "--data", str(env["data"]), *SMALL, "--max-steps", "5"]
    args += ["--set", "run.checkpoint_every=1", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        + ["--log-dir", str(logs), "--redirects", "3", str(script), "continue", *args],
        env={**_env(), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    errors = {}
    for rank in (0, 1):
        (log,) = logs.glob(f"*/attempt_0/{rank}/stderr.log")
        errors[rank] = log.read_text()
        assert "Traceback" not in errors[rank], errors[rank][-3000:]
    lines = {rank: [x for x in text.splitlines() if x.startswith("error:")] for rank, text in errors.items()}
    assert lines[0] == lines[1] and len(lines[0]) == 1, errors
    (line,) = lines[0]
    assert line.startswith(f"error: {out / STATE_FILE}: no space left on the device; free some space")
    assert "continue from step 2 with: " in line
    assert load_training_state(out / STATE_FILE)["step"] == 2  # the last good state


def _writes_on_rank_0(rank: int) -> dict:
    """What each process sees of writes on rank 0: one that works, one that meets a full disk, a
    bug, bad input, an interrupt."""
    import errno

    from e2mc_cli import distributed as D
    from e2mc_cli.errors import UserError

    seen = {"ok": D.on_main_process(lambda: f"written by {rank}")}

    def full_disk() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/state.pt")

    def broken() -> None:
        raise ValueError("a bug")

    def bad_input() -> None:
        error = UserError("--out x: not a folder")
        error.exit_code = 2
        raise error

    def interrupted() -> None:
        raise KeyboardInterrupt

    cases = (("full", full_disk), ("broken", broken), ("user", bad_input), ("interrupt", interrupted))
    for name, write in cases:
        try:
            D.on_main_process(write)
        except BaseException as exc:  # noqa: BLE001
            where = getattr(exc, "errno", None), getattr(exc, "filename", None)
            seen[name] = (type(exc).__name__, *where, str(exc), getattr(exc, "exit_code", None))
    return seen


def test_a_write_on_rank_0_reports_its_fault_to_every_process(tmp_path):
    from two_processes import on_two_processes

    zero, one = on_two_processes(_writes_on_rank_0, tmp_path)
    assert (zero["ok"], one["ok"]) == ("written by 0", None)
    full = ("OSError", 28, "/runs/x/state.pt", "[Errno 28] No space left on device: '/runs/x/state.pt'", None)
    assert zero["full"] == one["full"] == full
    assert zero["broken"] == ("ValueError", None, None, "a bug", None)
    assert one["broken"] == ("PeerFault", None, None, "rank 0 failed while writing: ValueError: a bug", None)
    assert zero["user"] == one["user"] == ("UserError", None, None, "--out x: not a folder", 2)
    assert zero["interrupt"] == one["interrupt"] == ("KeyboardInterrupt", None, None, "", None)


def test_a_peer_fault_is_one_line_with_exit_code_1(capsys):
    """On a rank other than 0, rank 0's bug is one line (rank 0 itself shows the traceback)."""
    import typer

    from e2mc_cli.cli.app import fault_boundary
    from e2mc_cli.errors import PeerFault

    with pytest.raises(typer.Exit) as info, fault_boundary():
        raise PeerFault("rank 0 failed while writing: ValueError: a bug")
    assert info.value.exit_code == 1
    assert capsys.readouterr().err == "error: rank 0 failed while writing: ValueError: a bug\n"
