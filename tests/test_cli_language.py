"""One CLI language: every command's help has an example and shows what it reads from the
environment; ``--json`` is a switch that prints to stdout; one ``--workers`` default; float
``--epochs`` for training; the base is checked before anything else; no secret is recorded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from test_train import SMALL, make_bases, make_data

import e2mc_cli
from e2mc_cli.cli import app
from e2mc_cli.cli.options import ENVIRONMENT, without_secrets

ALL = set(ENVIRONMENT)
BASES = {
    "SSLBOOST_CACHE", "SSLBOOST_MIRROR", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT", "SSLBOOST_STALL_TIMEOUT"
}
DATA = {"SSLBOOST_CACHE", "SSLBOOST_DATA"}
# which variables each command reads (through the library it calls)
READS = {
    "continue": ALL,
    "eval": ALL,
    "study": ALL,
    "tune": ALL,
    "reproduce": ALL,
    "pretrain": DATA,
    "curve": DATA,
    "inspect": BASES | DATA,
    "bench eval": BASES | DATA,
    "fetch": BASES,
    "convert": BASES,
    "bases": {"SSLBOOST_CACHE"},
    "push": {"HF_TOKEN", "HF_ENDPOINT", "SSLBOOST_STALL_TIMEOUT"},
}


def leaf_commands(group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):  # a group
            yield from leaf_commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


COMMANDS = dict(leaf_commands(typer.main.get_command(app)))


def flat(text: str) -> str:
    """Help text without box drawing and with single spaces, so wrapped lines read as one."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.fixture
def help_of(cli):
    def run(path: tuple[str, ...]) -> str:
        r = cli(*path, "--help", env={"COLUMNS": "100"})
        assert r.exit_code == 0, r.output
        return r.stdout

    return run


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_shows_an_example_of_itself(help_of, path):
    text = help_of(path)
    assert "Example:" in text, path
    examples = text.split("Example:", 1)[1].split("╭")[0]
    commands = [line.strip() for line in examples.splitlines() if line.strip()]
    assert commands and all(c.startswith("sslboost " + " ".join(path) + " ") for c in commands), commands
    assert all(line.startswith("     sslboost") for line in examples.splitlines() if "sslboost" in line)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_no_help_text_loses_its_brackets(help_of, path):
    text = flat(help_of(path))
    for param in COMMANDS[path].params:
        if param.help:
            assert flat(param.help.replace("\\[", "[")) in text, (path, param.name)
    assert flat(COMMANDS[path].help.split("\n\n")[0].replace("\\[", "[")) in text


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_the_environment_a_command_reads_is_in_its_help(help_of, path):
    text = flat(help_of(path))
    shown = set(re.findall(r"\[env var: ([A-Z_]+)\]", text))
    assert shown == READS.get(" ".join(path), set()), path


def test_every_variable_the_code_reads_is_an_option(tmp_path):
    from e2mc_cli.data.subsets import SUBSETS_URL_ENV
    from e2mc_cli.downloads import MIRROR_ENV
    from e2mc_cli.io import CACHE_ENV

    assert {CACHE_ENV, MIRROR_ENV, SUBSETS_URL_ENV} <= ALL
    source = "\n".join(p.read_text() for p in Path(e2mc_cli.__file__).parent.rglob("*.py"))
    named = set(re.findall(r"\"((?:SSLBOOST|HF)_[A-Z_]+)\"", source))
    assert named <= ALL, named - ALL


def test_a_variable_given_as_an_option_reaches_the_library(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SSLBOOST_CACHE", str(tmp_path / "elsewhere"))
    r = cli("bases", "--json", "--cache", tmp_path / "mine")
    assert r.exit_code == 0, r.output
    downloaded = [row for row in json.loads(r.stdout) if not row["builtin"]]
    assert downloaded and all(row["path"].startswith(str(tmp_path / "mine")) for row in downloaded)


def test_a_token_is_neither_shown_nor_recorded(cli, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    for path in (("push",), ("continue",), ("eval",)):
        assert "hf_secret_value" not in cli(*path, "--help").stdout
    argv = ["continue", "--token", "hf_a", "--base", "x", "--token=hf_b", "--out", "o"]
    assert without_secrets(argv) == ["continue", "--base", "x", "--out", "o"]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_json_is_a_switch_and_workers_share_one_default(path):
    params = {p.name: p for p in COMMANDS[path].params}
    json_options = [p for p in params.values() if "--json" in getattr(p, "opts", ())]
    assert all(p.is_flag for p in json_options), path
    workers = next((p for p in params.values() if "--workers" in getattr(p, "opts", ())), None)
    if workers is not None:
        expected = 0 if path == ("inspect",) else None  # inspect's views depend on the worker count
        assert workers.default == expected, path
        if expected == 0:
            assert "worker count" in workers.help


@pytest.mark.parametrize("path", [("bases",), ("recipes",), ("criteria",)], ids=" ".join)
def test_json_goes_to_stdout_alone(cli, path):
    r = cli(*path, "--json")
    assert r.exit_code == 0, r.output
    assert isinstance(json.loads(r.stdout), list)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("language")
    return {"data": make_data(root / "data"), "bases": make_bases(root)}


def test_training_takes_a_fraction_of_an_epoch(cli, env, tmp_path):
    out = tmp_path / "run"
    r = cli(
        "continue",
        "--base",
        env["bases"]["vicreg"],
        "--data",
        env["data"],
        "--out",
        out,
        *SMALL,
        "--epochs",
        "0.5",
    )
    assert r.exit_code == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["epochs_trained"] == 0.5
    assert "epochs = 0.5" in (out / "recipe.toml").read_text()


@pytest.mark.parametrize("command", [("continue",), ("pretrain", "--recipe", "fmnist-vicreg")], ids=" ".join)
@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_epochs_must_be_positive(cli, command, value, tmp_path):
    r = cli(*command, "--epochs", value, "--out", tmp_path / "o")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "--epochs must be a positive number" in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "command",
    [
        ("continue", "--base", "fmnist-vicre"),
        ("eval", "--base", "fmnist-vicre"),
        ("study", "--base", "fmnist-vicre", "--out", "o"),
        ("fetch", "--base", "fmnist-vicre"),
        ("convert", "--base", "fmnist-vicre", "--out", "o.safetensors"),
        ("inspect", "-w", "fmnist-vicre", "--data", "fmnist"),
        ("bench", "eval", "--base", "fmnist-vicre"),
    ],
    ids=lambda c: c[0] if c[0] != "bench" else "bench eval",
)
def test_a_misspelt_base_is_reported_before_anything_else(cli, command):
    r = cli(*command)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: unknown base 'fmnist-vicre'; did you mean fmnist-vicreg"), lines[0]


def test_a_missing_base_file_is_named(cli, tmp_path):
    r = cli("continue", "--base", tmp_path / "nope.safetensors")
    assert (
        r.exit_code == 2
        and r.stderr.strip() == f"error: --base {tmp_path / 'nope.safetensors'}: no such file"
    )
