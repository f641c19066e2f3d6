"""Faults of the machine, Ctrl-C and a mistyped command line, against every command: one line on
stderr, the documented exit code (2 bad input, 3 a fault of the machine, 130 interrupted), no
traceback, no temporary file left, the last good state kept, and ``--resume`` once it is cleared.

Root ignores file permissions, so a read-only or full folder is made by fault injection: every
write under a folder refused with an errno (:func:`refuse`), a temporary file of an atomic write
made a link to ``/dev/full`` (torch's own writer then fails as on a full disk), or safetensors'
own message for a full disk; where the machine allows mounting, a real tiny tmpfs fills up too.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_failure, temporaries, train_args
from safetensors import SafetensorError
from test_compare import fake_eval
from test_train import make_data

from e2mc_cli import checkpoint as checkpoint_module
from e2mc_cli.checkpoint import save_checkpoint
from e2mc_cli.io import append_line
from e2mc_cli.methods import build_model
from e2mc_cli.run_layout import STATE_FILE
from e2mc_cli.training.state import load_training_state

DEV_FULL = Path("/dev/full")
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


# --- fault injection -------------------------------------------------------------------------------


@pytest.fixture
def refuse():
    """``refuse(where, code)``: every write inside the folder ``where`` (made if missing), or to a
    path for which the callable ``where`` is true, fails with ``code`` until the test ends, as on a
    read-only file system (EROFS), without permission (EACCES) or over quota (EDQUOT)."""
    with pytest.MonkeyPatch.context() as mp:

        def install(where, code=errno.EROFS):
            if not callable(where):
                Path(where).mkdir(parents=True, exist_ok=True)  # the folder exists, its contents cannot
            folder = None if callable(where) else Path(where).resolve()

            def hit(path) -> bool:
                if not isinstance(path, (str, bytes, os.PathLike)):
                    return False
                p = Path(os.fsdecode(path)).resolve()
                return where(p) if folder is None else p.is_relative_to(folder)

            def deny(path):
                raise OSError(code, os.strerror(code), os.fsdecode(path))

            real_mkstemp, real_open, real_mkdir = tempfile.mkstemp, builtins.open, Path.mkdir

            def mkstemp(suffix=None, prefix=None, dir=None, text=False):
                target = Path(dir or ".") / f"{prefix or ''}XXXXXX{suffix or ''}"
                if hit(target):
                    deny(target)
                return real_mkstemp(suffix, prefix, dir, text)

            def open_(file, mode="r", *args, **kwargs):
                if any(c in mode for c in "wax+") and hit(file):
                    deny(file)
                return real_open(file, mode, *args, **kwargs)

            def mkdir(self, mode=0o777, parents=False, exist_ok=False):
                if hit(self) and not self.is_dir():
                    deny(self)
                return real_mkdir(self, mode, parents, exist_ok)

            mp.setattr(tempfile, "mkstemp", mkstemp)
            mp.setattr(builtins, "open", open_)
            mp.setattr(io, "open", open_)
            mp.setattr(Path, "mkdir", mkdir)

        yield install


@pytest.fixture
def full_disk():
    """``full_disk(name, nth)``: the ``nth`` atomic write of a file called ``name`` goes to
    ``/dev/full`` (its temporary file is a link there), so the real writer fails as on a full
    disk; ``full_disk.clear()`` lifts it."""
    if not DEV_FULL.exists():
        pytest.skip("no /dev/full on this machine")
    mp = pytest.MonkeyPatch()
    real = tempfile.mkstemp

    def install(name: str, nth: int = 1):
        calls = {"n": 0}

        def mkstemp(suffix=None, prefix=None, dir=None, text=False):
            fd, path = real(suffix, prefix, dir, text)
            if prefix == f".{name}.":
                calls["n"] += 1
                if calls["n"] == nth:
                    os.close(fd)
                    os.unlink(path)
                    os.symlink(DEV_FULL, path)
                    fd = os.open(path, os.O_WRONLY)
            return fd, path

        mp.setattr(tempfile, "mkstemp", mkstemp)

    install.clear = mp.undo
    yield install
    mp.undo()


@pytest.fixture
def safetensors_full():
    """``safetensors_full(name)``: writing a safetensors file called ``name`` fails half-way with
    safetensors' own message for a full disk (as it gives on a full tmpfs); ``.clear()`` lifts it."""
    mp = pytest.MonkeyPatch()
    real = checkpoint_module.save_file

    def install(name: str):
        def save_file(tensors, filename, metadata=None):
            if Path(filename).name.startswith(f".{name}."):
                Path(filename).write_bytes(b"half a file")
                raise SafetensorError(SAFETENSORS_FULL)
            return real(tensors, filename, metadata=metadata)

        mp.setattr(checkpoint_module, "save_file", save_file)

    install.clear = mp.undo
    yield install
    mp.undo()


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)``: a real tmpfs of ``size`` (e.g. ``"4m"``) mounted at a new folder, resized by
    calling it again; skipped where mounting is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = []

    def mount(size: str) -> Path:
        options = f"size={size}" + (",remount" if mounted else "")
        cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)]
        if shutil.which("mount") is None or subprocess.run(cmd, capture_output=True).returncode != 0:
            pytest.skip("mounting a tmpfs is not allowed here")
        mounted.append(size)
        return mnt

    yield mount
    if mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# --- a full disk during training ---------------------------------------------------------------------


def test_a_full_disk_on_the_second_checkpoint_keeps_the_first_and_resume_equals_an_uninterrupted_run(
    cli, env, tmp_path, full_disk
):
    run = tmp_path / "run"
    args = train_args(env, run, "--max-steps", "4", "--set", "run.checkpoint_every=1")
    assert cli(*args).exit_code == 0
    ref = run.rename(tmp_path / "ref")

    full_disk("last.pt", nth=2)  # torch.save's own "enforce fail … unexpected pos"
    line = assert_one_line_failure(cli(*args), 3, contains=str(run / STATE_FILE), folder=run)
    assert "continue from step 1 with: sslboost continue" in line and line.endswith("--resume")
    assert load_training_state(run / STATE_FILE)["step"] == 1
    assert not (run / "sslboost.safetensors").exists()

    full_disk.clear()
    r = cli("continue", "--out", run, "--resume")
    assert r.exit_code == 0, r.stderr
    for name in ("sslboost.safetensors", "model.safetensors"):
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name


def test_a_real_full_tmpfs_is_one_line_and_resume_finishes_once_there_is_room(cli, env, tmpfs):
    mnt = tmpfs("16m")
    run = mnt / "run"
    args = train_args(env, run, "--max-steps", "3", "--set", "run.checkpoint_every=1")
    assert cli(*args).exit_code == 0
    ref = Path(shutil.move(run, mnt.parent / "ref"))

    tmpfs("4m")  # one training state (2.6 MB) fits, a second beside it does not
    line = assert_one_line_failure(cli(*args), 3, contains="no space left on the device", folder=mnt)
    assert str(run / STATE_FILE) in line and "continue from step 1 with:" in line
    assert load_training_state(run / STATE_FILE)["step"] == 1

    tmpfs("16m")
    assert cli("continue", "--out", run, "--resume").exit_code == 0
    assert (run / "sslboost.safetensors").read_bytes() == (ref / "sslboost.safetensors").read_bytes()


def test_a_full_disk_writing_the_model_keeps_the_last_state_and_resume_writes_it(
    cli, env, tmp_path, safetensors_full
):
    run = tmp_path / "run"
    safetensors_full("sslboost.safetensors")
    r = cli(*train_args(env, run, "--max-steps", "2"))
    full = run / "sslboost.safetensors"
    line = assert_one_line_failure(r, 3, contains=f"{full}: no space left", folder=run)
    assert "continue from step 2 with:" in line
    assert load_training_state(run / STATE_FILE)["step"] == 2 and not (run / "sslboost.safetensors").exists()


def test_resume_after_a_full_disk_at_the_stop_point_writes_the_final_files(
    cli, env, tmp_path, safetensors_full
):
    run = tmp_path / "run"
    safetensors_full("sslboost.safetensors")
    assert cli(*train_args(env, run, "--max-steps", "2")).exit_code == 3
    safetensors_full.clear()
    r = cli("continue", "--out", run, "--resume")
    assert r.exit_code == 0, r.stderr
    assert "already at step 2, its stop point (--max-steps 2)" in r.stdout
    assert (run / "sslboost.safetensors").is_file() and (run / "model.safetensors").is_file()


def test_over_quota_writing_the_metrics_names_the_file_and_the_step_to_continue_from(
    cli, env, tmp_path, refuse
):
    run = tmp_path / "run"
    # every append after the first line (step 1, checkpointed before step 2's line is written)
    refuse(lambda p: p.name == "metrics.jsonl" and p.exists() and p.stat().st_size > 0, errno.EDQUOT)
    r = cli(*train_args(env, run, "--max-steps", "2", "--set", "run.checkpoint_every=1"))
    line = assert_one_line_failure(r, 3, contains="disk quota is exceeded", folder=run)
    assert str(run / "metrics.jsonl") in line and "continue from step 1" in line


def test_an_append_to_a_full_disk_names_the_file(tmp_path):
    if not DEV_FULL.exists():
        pytest.skip("no /dev/full on this machine")
    log = tmp_path / "metrics.jsonl"
    log.symlink_to(DEV_FULL)
    with pytest.raises(OSError) as caught:
        append_line(log, "{}")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(log))


def test_a_read_only_out_is_one_line_and_nothing_is_written(cli, env, tmp_path, refuse):
    refuse(tmp_path / "ro", errno.EROFS)
    run = tmp_path / "ro" / "run"
    line = assert_one_line_failure(cli(*train_args(env, run, "--max-steps", "1")), 3, folder=tmp_path)
    assert line == (
        f"error: {run}: the file system is read-only; write to another folder, then run the command again"
    )
    assert not run.exists()


def test_a_file_where_the_out_folder_should_be_names_that_file(cli, env, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    run = tmp_path / "file" / "run"
    line = assert_one_line_failure(cli(*train_args(env, run, "--max-steps", "1")), 3, folder=tmp_path)
    assert line.startswith(f"error: {tmp_path / 'file'}: a file stands where a folder should be")


def test_pretrain_on_a_full_disk_at_its_first_checkpoint_starts_again_with_the_same_command(
    cli, tmp_path, full_disk
):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        '[recipe]\nname = "tiny-simsiam"\nmethod = "simsiam"\n'
        '[model]\narch = "resnet-mini"\ndim = 16\npred_dim = 4\n'
        '[run]\nepochs = 1\nbatch_size = 8\ncheckpoint_every = 1\n[optim]\nname = "sgd"\nlr = 0.05\n'
        '[criterion]\nname = "continued"\n[views]\nimage_size = 16\n'
    )
    data = make_data(tmp_path / "data")
    run = tmp_path / "run"
    args = ["pretrain", "--recipe", recipe, "--data", data, "--out", run, "--max-steps", "2"]
    args += ["--workers", "0"]
    full_disk("last.pt", nth=1)
    line = assert_one_line_failure(cli(*args), 3, contains=str(run / STATE_FILE), folder=run)
    assert line.endswith("then run the command again")
    full_disk.clear()
    r = cli(*args)  # no --overwrite needed: nothing was trained yet
    assert r.exit_code == 0, r.stderr
    assert load_training_state(run / STATE_FILE)["step"] == 2


# --- a fault of the machine in the other commands ------------------------------------------------


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "sslboost.safetensors"  # a run folder's full checkpoint
    save_checkpoint(path, build_model("vicreg", "resnet-mini", {"mlp": "16-16"}), base="toy")
    return path


@pytest.fixture
def image_root(tmp_path):
    from e2mc_cli.data.synthetic import ColourImages, write_image_folder

    root = tmp_path / "images"
    splits = {"train": ColourImages(4, 3, 12, seed=0), "val": ColourImages(3, 3, 12, seed=1)}
    return write_image_folder(root, splits)


def test_study_into_a_read_only_folder(cli, env, tmp_path, refuse, image_root):
    refuse(tmp_path / "ro")
    out = tmp_path / "ro" / "study"
    r = cli("study", "--base", env["bases"]["vicreg"], "--data", image_root, "--out", out, "--seeds", "1")
    assert_one_line_failure(r, 3, contains=f"{out}: the file system is read-only", folder=tmp_path)


def test_export_into_a_read_only_run_folder_keeps_the_model(cli, tmp_path, model, refuse):
    before = model.read_bytes()
    (tmp_path / "recipe.toml").write_text('[run]\nepochs = 1\n')
    refuse(tmp_path, errno.EACCES)
    line = assert_one_line_failure(cli("export", tmp_path), 3, contains="permission denied", folder=tmp_path)
    assert str(tmp_path / "model.safetensors") in line
    assert model.read_bytes() == before and not (tmp_path / "model.safetensors").exists()


def test_export_on_a_full_disk_keeps_the_earlier_export(cli, tmp_path, model, safetensors_full):
    (tmp_path / "model.safetensors").write_bytes(b"the earlier export")
    safetensors_full("model.safetensors")
    r = cli("export", tmp_path)
    assert_one_line_failure(r, 3, contains="no space left on the device", folder=tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == b"the earlier export"


def test_inspect_out_below_a_file(cli, tmp_path, model, image_root):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "inspect"
    r = cli("inspect", "--weights", model, "--data", image_root, "--image-size", "12", "--out", out)
    line = assert_one_line_failure(r, 3, folder=tmp_path)
    assert line.startswith(f"error: {tmp_path / 'file'}: a file stands where a folder should be")


def test_inspect_into_a_read_only_folder(cli, tmp_path, model, image_root, refuse):
    refuse(tmp_path / "ro")
    out = tmp_path / "ro"
    r = cli("inspect", "--weights", model, "--data", image_root, "--image-size", "12", "--out", out)
    assert_one_line_failure(r, 3, contains="the file system is read-only", folder=tmp_path)


@pytest.fixture
def evals(tmp_path):
    target = np.arange(30) % 3
    return fake_eval(tmp_path / "a", target, target), fake_eval(tmp_path / "b", (target + 1) % 3, target)


def test_compare_out_into_a_read_only_folder(cli, tmp_path, evals, refuse):
    refuse(tmp_path / "ro")
    r = cli("compare", *evals, "--out", tmp_path / "ro" / "cmp.json", "--permutations", "10")
    assert_one_line_failure(r, 3, contains=f"{tmp_path / 'ro' / 'cmp.json'}: the file system is read-only")


def test_compare_out_onto_a_folder(cli, tmp_path, evals):
    (tmp_path / "cmp").mkdir()
    r = cli("compare", *evals, "--out", tmp_path / "cmp", "--permutations", "10")
    assert_one_line_failure(r, 3, contains=f"{tmp_path / 'cmp'}: it is a folder, not a file", folder=tmp_path)


def test_eval_into_a_read_only_folder(cli, tmp_path, model, image_root, refuse):
    refuse(tmp_path / "ro")
    args = ["eval", "--weights", model, "--data", image_root, "--labels", "100%", "--epochs", "1"]
    r = cli(*args, "--mode", "cached", "--image-size", "12", "--out", tmp_path / "ro" / "ev")
    assert_one_line_failure(r, 3, contains="the file system is read-only", folder=tmp_path)


def test_convert_onto_a_full_disk(cli, tmp_path, model, safetensors_full):
    out = tmp_path / "canonical.safetensors"
    safetensors_full("canonical.safetensors")
    r = cli("convert", "--base-file", model, "--out", out)
    assert_one_line_failure(r, 3, contains=f"{out}: no space left on the device", folder=tmp_path)
    assert not out.exists()


def test_fetch_into_a_cache_that_is_a_file(cli, tmp_path, monkeypatch):
    from zoo_fixtures import serve

    cache = tmp_path / "cache"
    cache.write_text("a file, not a folder")
    monkeypatch.setenv("SSLBOOST_CACHE", str(cache))
    with serve({}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        r = cli("fetch", "--base", "simsiam100")
    line = assert_one_line_failure(r, 3, folder=tmp_path)
    assert line.startswith(f"error: {cache}: a file stands where a folder should be")


# --- Ctrl-C ------------------------------------------------------------------------------------------


def test_ctrl_c_at_start_up_is_one_line_and_exit_130(tmp_path):
    script = textwrap.dedent(
        """
        import importlib.abc, sys
        class CtrlC(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "e2mc_cli.cli.train_cmds":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, CtrlC())
        from e2mc_cli.cli import main
        main()
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-c", script, "bases"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert (proc.returncode, proc.stderr, proc.stdout) == (130, "interrupted\n", "")


def test_sigint_during_eval_prints_one_line_and_exits_130(cli, tmp_path, model, image_root, monkeypatch):
    from e2mc_cli.evaluate import linear

    def ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(linear, "train_on_features", ctrl_c)
    args = ["eval", "--weights", model, "--data", image_root, "--labels", "100%", "--epochs", "1"]
    r = cli(*args, "--mode", "cached", "--image-size", "12", "--out", tmp_path / "ev")
    assert (r.exit_code, r.stderr) == (130, "interrupted\n")
    assert temporaries(tmp_path) == []


def test_sigterm_to_every_process_of_an_eval_is_one_line_and_exit_143(
    cli, tmp_path, model, image_root, monkeypatch
):
    """``kill -TERM -- -PGID`` during feature extraction: the loader's worker leaves the signal to
    the main process (no "DataLoader worker is killed" traceback), which stops with one line."""
    import multiprocessing
    import time

    from e2mc_cli.evaluate import features

    original, signalled, alive = features.images_to, [], []

    def terminating(images, device):
        if not signalled:
            workers = multiprocessing.active_children()
            signalled.extend(w.pid for w in workers)
            for pid in signalled:
                os.kill(pid, signal.SIGTERM)
            time.sleep(1.0)  # long enough for a worker to die of it
            alive.extend(w.is_alive() for w in workers)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(images, device)

    monkeypatch.setattr(features, "images_to", terminating)
    args = ["eval", "--weights", model, "--data", image_root, "--labels", "100%", "--epochs", "1"]
    r = cli(*args, "--mode", "cached", "--image-size", "12", "--workers", "1", "--out", tmp_path / "ev")
    assert signalled, "the evaluation had no loader worker to signal"
    assert alive == [True] * len(signalled)
    assert (r.exit_code, r.stderr) == (143, "interrupted by SIGTERM\n")
    assert temporaries(tmp_path) == [] and not (tmp_path / "ev" / "eval.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the command's handler is gone again


def test_ctrl_c_while_loading_the_base_writes_nothing(cli, env, tmp_path, monkeypatch):
    from e2mc_cli.training import setup

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(setup, "resolve_base", ctrl_c)
    run = tmp_path / "run"
    r = cli(*train_args(env, run, "--max-steps", "1"))
    assert (r.exit_code, r.stderr) == (130, "interrupted\n") and not run.exists()


def test_a_second_ctrl_c_quits_at_once_and_names_the_step_to_continue_from(cli, env, tmp_path, monkeypatch):
    from e2mc_cli.training import loop

    original = loop.train_step

    def twice(state, plan, views, epoch):
        record = original(state, plan, views, epoch)
        if state.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # asks to stop after this step …
            os.kill(os.getpid(), signal.SIGINT)  # … and quit at once
        return record

    monkeypatch.setattr(loop, "train_step", twice)
    run = tmp_path / "run"
    r = cli(*train_args(env, run, "--max-steps", "4", "--set", "run.checkpoint_every=2"))
    assert r.exit_code == 130
    assert r.stderr.startswith("interrupted; continue from step 2 with: sslboost continue")
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr + r.stdout
    assert load_training_state(run / STATE_FILE)["step"] == 2 and temporaries(run) == []


def test_ctrl_c_during_a_benchmark(cli, monkeypatch):
    from e2mc_cli.benchmarks import criteria

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(criteria, "bench_criteria", ctrl_c)  # the command imports it when it runs
    r = cli("bench", "criteria", "--dims", "8", "--n", "16")
    assert (r.exit_code, r.stderr) == (130, "interrupted\n")


# --- the command line --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        (["continue", "--bogus"], "No such option: --bogus"),
        (["compare", "only-one"], "Missing argument 'b'"),
        (["eval", "--seeds", "abc"], "Invalid value for '--seeds'"),
        (["bench", "eval", "--epochs", "x"], "Invalid value for '--epochs'"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["inspect", "--data", "fmnist"], "Missing option '--weights'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(cli, args, contains):
    line = assert_one_line_failure(cli(*args), 2, contains=contains)
    assert "--help'" in line and "╭" not in line


def test_user_text_is_printed_as_typed_not_read_as_markup(cli, env, tmp_path):
    line = assert_one_line_failure(cli(*train_args(env, tmp_path / "r", "--device", "cuda:abc:")), 2)
    assert "cuda:abc:" in line
    line = assert_one_line_failure(cli("eval", "--weights", tmp_path / "[/x]" / "[model].safetensors"), 2)
    assert f"{tmp_path}/[/x]/[model].safetensors" in line


def test_paths_with_brackets_print_as_typed_on_success(cli, tmp_path, model, image_root):
    out = tmp_path / "[/o]"
    r = cli("inspect", "--weights", model, "--data", image_root, "--image-size", "12", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert f"wrote {out}/: inspect.json" in r.stdout and (out / "inspect.json").is_file()
