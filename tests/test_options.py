"""The shared vocabulary: ``--device`` on every command, the name suggester, the mean ± SE format."""

from __future__ import annotations

import pytest
import torch

from e2mc_cli.cli.options import augment_option, parse_augment, parse_device, resolve_device, workers_option
from e2mc_cli.errors import UserError, close_matches, did_you_mean, unknown_choice
from e2mc_cli.evaluate.stats import format_mean_se

# Every command with --device, with the other options it needs to get as far as the device check.
DEVICE_COMMANDS = (
    ("continue",),
    ("pretrain", "--recipe", "fmnist-vicreg"),
    ("study", "--base", "fmnist-vicreg", "--out", "unused"),
    ("eval", "--base", "fmnist-vicreg"),
    ("inspect", "-w", "fmnist-vicreg", "--data", "fmnist"),
    ("bench", "train"),
    ("bench", "eval"),
    ("bench", "criteria"),
)


def one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: --device "), r.stderr
    return lines[0]


@pytest.mark.parametrize("command", DEVICE_COMMANDS, ids=" ".join)
def test_every_command_checks_device_the_same_way(cli, command):
    line = one_error_line(cli(*command, "--device", "gpu"))
    assert line == "error: --device gpu: expected auto, cpu, cuda or cuda:N"
    if not torch.cuda.is_available():
        assert "CUDA is not available" in one_error_line(cli(*command, "--device", "cuda:1"))


@pytest.mark.parametrize("value", ["auto", "cpu"])
def test_auto_and_cpu_are_always_accepted(value):
    assert parse_device(value) == value
    assert resolve_device(value) in ("cpu", "cuda")
    assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("value", ["", "CPU", "cuda:", "cuda:-1", "cuda:x", "cuda 0", "mps", "cuda:0:1"])
def test_malformed_devices_name_what_is_expected(value):
    with pytest.raises(UserError, match="expected auto, cpu, cuda or cuda:N"):
        parse_device(value)


def test_cuda_devices_are_checked_against_this_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parse_device("cuda") == "cuda" and parse_device("cuda:1") == "cuda:1"
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(
        UserError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"
    ):
        parse_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(UserError, match="--device cuda: CUDA is not available on this machine"):
        parse_device("cuda")


def test_device_in_the_help_of_every_command(cli):
    for command in DEVICE_COMMANDS:
        r = cli(*command[:2] if command[0] == "bench" else command[:1], "--help")
        assert r.exit_code == 0 and "cuda:N" in r.stdout, command


def test_workers_option_leaves_the_default_to_the_library():
    option = workers_option()
    assert option.default is None and option.min == 0 and option.param_decls == ("--workers",)


# Every command that trains, with the other options it needs to get as far as the --augment check.
AUGMENT_COMMANDS = (
    ("continue",),
    ("pretrain", "--recipe", "fmnist-vicreg"),
    ("study", "--base", "fmnist-vicreg", "--out", "unused"),
    ("bench", "train"),
)


@pytest.mark.parametrize("command", AUGMENT_COMMANDS, ids=" ".join)
def test_every_training_command_checks_augment_the_same_way(cli, command, tmp_path):
    r = cli(*command, "--augment", "cpux")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: unknown --augment 'cpux' (did you mean 'cpu'?); valid names: cpu")
    assert not (tmp_path / "unused").exists()
    help_text = cli(*command[:2] if command[0] == "bench" else command[:1], "--help").stdout
    assert "--augment" in help_text


def test_augment_option_leaves_the_default_to_the_library():
    option = augment_option()
    assert option.default is None and option.param_decls == ("--augment",)
    assert parse_augment(None) is None and parse_augment("cpu") == "cpu"


def test_suggestions():
    assert close_matches("e2mcc", ["e2mc", "vcreg", "mmcr"]) == ["e2mc"]
    assert close_matches("zzz", ["e2mc", "vcreg"]) == []
    assert did_you_mean("bta", ["beta", "gamma"], prefix="criterion.") == " (did you mean 'criterion.beta'?)"
    assert did_you_mean("zzz", ["beta"]) == ""
    err = unknown_choice("criterion", "e2mcc", ("e2mc", "logdet"))
    assert isinstance(err, UserError)
    assert str(err) == "unknown criterion 'e2mcc' (did you mean 'e2mc'?); valid names: e2mc, logdet"
    assert str(unknown_choice("method", "byol", ["vicreg"])) == "unknown method 'byol'; valid names: vicreg"


def test_format_mean_se():
    assert format_mean_se(53.504, 0.1234) == "53.50 ± 0.12"
    assert format_mean_se(53.504, None) == "53.50"
    assert format_mean_se(53.504) == "53.50"
    assert format_mean_se(None, 0.5) == "–"
    assert format_mean_se(1.23456, 0.0456, digits=3) == "1.235 ± 0.046"
    assert format_mean_se(2.0, 0.0, digits=0) == "2 ± 0"
