"""`sslboost push`: one commit through huggingface-hub's HfApi, with the network layer replaced."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.utils import HfHubHTTPError

from e2mc_cli.checkpoint import save_checkpoint
from e2mc_cli.methods import build_model

TOKEN = "hf_FAKEtok3n_sslboost_DoNotLeak_7Qz"
PUBLISHED = {
    "sslboost.safetensors",
    "model.safetensors",
    "config.json",
    "README.md",
    "recipe.toml",
    "summary.json",
    "metrics.jsonl",
    "eval-linear/eval.json",
    "eval-after/linear-1pct/eval.json",
    "eval-after/linear-1pct/predictions.npz",
}


@pytest.fixture
def no_login(monkeypatch, tmp_path):
    """No token anywhere: no environment variable, no stored login."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))


@pytest.fixture
def token(no_login, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return TOKEN


@pytest.fixture
def hub(monkeypatch):
    """HfApi with its three network calls recorded instead of sent."""
    calls = SimpleNamespace(create_repo=[], create_branch=[], create_commit=[])

    def create_repo(self, repo_id, **kw):
        calls.create_repo.append({"repo_id": repo_id, "token": self.token, **kw})
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kw):
        calls.create_branch.append({"repo_id": repo_id, "token": self.token, **kw})

    def create_commit(self, repo_id, operations, **kw):
        ops = list(operations)
        assert all(isinstance(op, CommitOperationAdd) for op in ops)
        calls.create_commit.append({"repo_id": repo_id, "token": self.token, "operations": ops, **kw})
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0123abcd", oid="0123abcd")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "mini-e2mc"
    run.mkdir()
    model = build_model("vicreg", "resnet-mini", {"mlp": "32-32-32"})
    command = ["sslboost", "continue", "--base", "fmnist-vicreg", "--criterion", "e2mc"]
    save_checkpoint(run / "sslboost.safetensors", model, base="fmnist-vicreg", criterion="e2mc", epoch=2,
                    recipe={"train": {"epochs": 2}}, command=json.dumps(command))  # fmt: skip
    (run / "recipe.toml").write_text("[train]\nepochs = 2\n")
    (run / "summary.json").write_text(json.dumps({"epochs": 2}))
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    (run / "eval-linear").mkdir()
    (run / "eval-linear" / "eval.json").write_text(
        json.dumps({"protocol": "linear", "labels": "10%", "dataset": "fmnist", "top1": [80.0, 82.0]})
    )
    (run / "eval-linear" / "predictions.npy").write_bytes(b"\0" * 16)
    # continue's evaluations, two folders down, with their (small) predictions
    (run / "eval-after" / "linear-1pct").mkdir(parents=True)
    (run / "eval-after" / "linear-1pct" / "eval.json").write_text(json.dumps({"protocol": "linear"}))
    (run / "eval-after" / "linear-1pct" / "predictions.npz").write_bytes(b"\0" * 32)
    # Never published: training state and anything else in the folder.
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.safetensors").write_bytes(b"\0" * 64)
    (run / "checkpoints" / "optimizer.pt").write_bytes(b"\0" * 64)
    (run / "notes.txt").write_text("scratch")
    return run


def _one_line_error(r) -> str:
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    return lines[0]


def _assert_no_token_anywhere(r, run: Path, caplog):
    assert TOKEN not in r.stdout and TOKEN not in r.stderr
    assert TOKEN not in caplog.text
    for p in run.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p


def test_push_creates_repo_branch_and_one_commit(cli, run, token, hub, caplog):
    caplog.set_level(logging.DEBUG)
    r = cli("push", run, "--repo", "me/mini-e2mc", "--private", "--revision", "exp1", "-m", "first upload")
    assert r.exit_code == 0, r.stderr
    assert hub.create_repo == [
        {"repo_id": "me/mini-e2mc", "token": TOKEN, "private": True, "exist_ok": True},
    ]
    assert hub.create_branch == [
        {"repo_id": "me/mini-e2mc", "token": TOKEN, "branch": "exp1", "exist_ok": True}
    ]
    (commit,) = hub.create_commit
    assert commit["repo_id"] == "me/mini-e2mc" and commit["revision"] == "exp1"
    assert commit["commit_message"] == "first upload" and commit["token"] == TOKEN
    paths = [op.path_in_repo for op in commit["operations"]]
    assert len(paths) == len(set(paths)) and set(paths) == PUBLISHED
    for op in commit["operations"]:  # each upload is the run folder's file of that name
        assert Path(op.path_or_fileobj) == run / op.path_in_repo
    assert "https://huggingface.co/me/mini-e2mc/commit/0123abcd" in r.stdout
    # The exports were missing: push wrote them first, the card with the repository's snippets.
    assert "exported model.safetensors" in r.stdout
    assert 'hf_hub_download("me/mini-e2mc", "model.safetensors")' in (run / "README.md").read_text()
    _assert_no_token_anywhere(r, run, caplog)


def test_push_without_revision_or_private(cli, run, token, hub):
    r = cli("push", run, "--repo", "me/mini-e2mc")
    assert r.exit_code == 0, r.stderr
    assert hub.create_repo[0]["private"] is None  # the Hub's default visibility
    assert hub.create_branch == []
    (commit,) = hub.create_commit
    assert commit["revision"] is None
    assert commit["commit_message"] == "sslboost: vicreg from fmnist-vicreg + e2mc, epoch 2"


def test_push_uses_stored_login(cli, run, no_login, hub, tmp_path):
    token_path = Path(huggingface_hub.constants.HF_TOKEN_PATH)
    token_path.parent.mkdir(parents=True)
    token_path.write_text(TOKEN)
    r = cli("push", run, "--repo", "me/mini-e2mc")
    assert r.exit_code == 0, r.stderr
    assert hub.create_commit[0]["token"] == TOKEN
    assert TOKEN not in r.stdout + r.stderr


def test_dry_run_lists_files_and_message_without_token(cli, run, no_login, hub):
    r = cli("push", run, "--repo", "me/mini-e2mc", "--dry-run", "--message", "try it")
    assert r.exit_code == 0, r.stderr
    assert hub.create_repo == hub.create_branch == hub.create_commit == []
    lines = r.stdout.splitlines()
    for name in PUBLISHED:
        size = (run / name).stat().st_size
        assert any(name in line and f" {size} " in f" {line} " for line in lines), (name, size, r.stdout)
    for never in ("checkpoints", "optimizer.pt", "notes.txt", "predictions.npy"):
        assert never not in r.stdout
    assert "commit message: try it" in r.stdout
    assert f"{len(PUBLISHED)} files" in r.stdout and "dry run: nothing uploaded" in r.stdout


def test_stale_exports_are_rewritten_and_edited_card_kept(cli, run, token, hub):
    assert cli("export", run).exit_code == 0
    card = run / "README.md"
    card.write_text(card.read_text() + "\nHand-written note.\n")
    r = cli("push", run, "--repo", "me/mini-e2mc")
    assert r.exit_code == 0, r.stderr
    assert "exported" not in r.stdout  # up to date: nothing rewritten
    assert card.read_text().endswith("Hand-written note.\n")
    earlier = (run / "sslboost.safetensors").stat().st_mtime - 10
    for name in ("model.safetensors", "config.json", "README.md"):  # exports older than the checkpoint
        os.utime(run / name, (earlier, earlier))
    r = cli("push", run, "--repo", "me/mini-e2mc")
    assert r.exit_code == 0, r.stderr
    assert "exported model.safetensors" in r.stdout
    assert (run / "model.safetensors").stat().st_mtime > earlier
    assert "Hand-written note." not in card.read_text()


def test_no_token_is_one_line_exit_2(cli, run, no_login, hub):
    line = _one_line_error(cli("push", run, "--repo", "me/mini-e2mc"))
    assert "HF_TOKEN" in line and "--dry-run" in line
    assert hub.create_repo == [] and not (run / "model.safetensors").exists()


@pytest.mark.parametrize("case", ["missing", "no-model", "bad-repo"])
def test_bad_input_is_one_line_exit_2(cli, run, token, hub, tmp_path, case):
    target, repo = run, "me/mini-e2mc"
    if case == "missing":
        target = tmp_path / "does-not-exist"
    elif case == "no-model":
        target = tmp_path / "empty"
        target.mkdir()
    else:
        repo = "mini-e2mc"
    line = _one_line_error(cli("push", target, "--repo", repo))
    expected = {
        "missing": "no such run folder",
        "no-model": "no sslboost.safetensors",
        "bad-repo": "ORG/NAME",
    }
    assert expected[case] in line
    assert hub.create_repo == []


def test_hub_errors_are_one_line_without_the_token(cli, run, token, hub, monkeypatch, caplog):
    def unauthorized(self, repo_id, operations, **kw):
        err = HfHubHTTPError.__new__(HfHubHTTPError)
        Exception.__init__(err, f"401 Client Error: Unauthorized (token {self.token} rejected)\nmore detail")
        raise err

    monkeypatch.setattr(HfApi, "create_commit", unauthorized)
    line = _one_line_error(cli("push", run, "--repo", "me/mini-e2mc"))
    assert "push to me/mini-e2mc failed: 401 Client Error" in line and "***" in line
    assert TOKEN not in line


def test_offline_hub_is_one_line(cli, run, token, monkeypatch, caplog):
    """The real client, offline: its own transport refuses the request."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    r = cli("push", run, "--repo", "me/mini-e2mc")
    assert "offline" in _one_line_error(r)
    _assert_no_token_anywhere(r, run, caplog)


def test_unedited_card_gets_the_repository_snippets(cli, run, token, hub):
    assert cli("export", run).exit_code == 0
    assert "hf://me/mini-e2mc" not in (run / "README.md").read_text()
    r = cli("push", run, "--repo", "me/mini-e2mc")
    assert r.exit_code == 0, r.stderr
    assert "exported README.md" in r.stdout and "exported model.safetensors" not in r.stdout
    assert "sslboost continue --base hf://me/mini-e2mc" in (run / "README.md").read_text()


def test_tracker_outputs_of_the_run_and_its_evaluations_are_sent_but_not_wandb(run):
    from e2mc_cli.publish import export_run
    from e2mc_cli.publish import hub as H

    export_run(run)
    after = run / "eval-after" / "linear-1pct"
    for folder in (run, after):
        (folder / "tensorboard").mkdir()
        (folder / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"\0" * 8)
        (folder / "metrics.csv").write_text("step,loss\n1,2.0\n")
    (run / "results.csv").write_text("name,value\nrun/steps,1\n")
    (run / "wandb" / "offline-run-1").mkdir(parents=True)
    (run / "wandb" / "offline-run-1" / "run-1.wandb").write_bytes(b"\0" * 8)
    sent = [f.path_in_repo for f in H.publishable_files(run)]
    assert set(sent) == PUBLISHED | {
        "tensorboard/events.out.tfevents.1.host.1.0", "metrics.csv", "results.csv",
        "eval-after/linear-1pct/tensorboard/events.out.tfevents.1.host.1.0",
        "eval-after/linear-1pct/metrics.csv",
    }  # fmt: skip
    assert sent.index("results.csv") < sent.index("eval-after/linear-1pct/eval.json")  # the run's first


def test_large_predictions_stay_home(run, monkeypatch):
    from e2mc_cli.publish import export_run
    from e2mc_cli.publish import hub as H

    export_run(run)
    monkeypatch.setattr(H, "MAX_PREDICTIONS_BYTES", 31)  # the fixture's predictions.npz has 32 bytes
    sent = {f.path_in_repo for f in H.publishable_files(run)}
    assert sent == PUBLISHED - {"eval-after/linear-1pct/predictions.npz"}
