"""The options every command shares, defined once, so that one flag means one thing everywhere.

``--device`` is ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. It
is checked while the command line is parsed (:func:`parse_device`): a malformed name, or a CUDA
device this machine does not have, is one ``error:`` line and exit code 2. In a training run
``cuda:N`` is device N of a single process; under ``torchrun`` each process takes its
``LOCAL_RANK``.

``--workers`` defaults to ``None``: the library picks the number for the data at hand (training:
:func:`e2mc_cli.training.data.default_workers`, the node's usable cores shared out over its
training processes, one left to each; evaluation: :func:`e2mc_cli.evaluate.features.default_workers`).

``--augment`` picks where a training run makes its views (:func:`parse_augment`, checked against
:data:`e2mc_cli.training.data.AUGMENT_MODES`): ``cpu`` is the official per-image pipeline on the
loader's workers; ``split`` leaves only decoding and the crops to the workers and does the colour
work batched on the training device. ``None`` (not given): the library's default for a new run
(:data:`e2mc_cli.training.data.DEFAULT_AUGMENT`), the run's own mode on ``--resume``.

``--base`` is checked while the line is parsed too (:func:`parse_base`), before any other
option is looked at: a misspelt registry name is reported with the closest names.

``--epochs`` of a training run is a positive number; a fraction trains that share of an epoch.

``--json`` prints JSON to stdout, and nothing else goes to stdout (:func:`print_json`).

``--log`` names trackers (:mod:`e2mc_cli.trackers`); a tracker whose package is missing is one
``error:`` line with the ``pip install`` command, before anything runs.

The environment variables the library reads are options too (:data:`ENVIRONMENT`): a command
declares those it reads with :func:`reads_environment`, and its help lists them with their
variable (``[env var: …]``). Given on the command line, such an option sets its variable for this
process, where the library reads it.

``torch`` is imported only to check a CUDA device or a base, so ``sslboost --help`` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import re
from pathlib import Path

import typer

from e2mc_cli import trackers
from e2mc_cli.errors import UserError, unknown_choice

DEVICE_HELP = "auto, cpu, cuda or cuda:N."
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
ENVIRONMENT_PANEL = "Environment"

# variable: (flag, metavar or None for a switch, help)
ENVIRONMENT: dict[str, tuple[str, str | None, str]] = {
    "SSLBOOST_CACHE": (
        "--cache",
        "DIR",
        "Cache folder of downloaded bases, datasets and label lists (default ~/.cache/sslboost).",
    ),
    "SSLBOOST_DATA": ("--fmnist-dir", "DIR", "Folder holding the Fashion-MNIST idx files (searched first)."),
    "SSLBOOST_MIRROR": (
        "--mirror",
        "URL",
        "Mirror of https://dl.fbaipublicfiles.com for the official checkpoints and label lists.",
    ),
    "SSLBOOST_SUBSETS_URL": (
        "--subsets-url",
        "URL",
        "Folder URL of SimCLR's ImageNet 1percent.txt / 10percent.txt label lists.",
    ),
    "HF_TOKEN": ("--token", "TOKEN", "Hugging Face token (default: the `hf auth login` one)."),
    "HF_HUB_OFFLINE": ("--offline", None, "Read hf:// bases from the local Hub cache only."),
    "HF_ENDPOINT": ("--hub-endpoint", "URL", "Address of the Hugging Face Hub (default https://huggingface.co)."),
    "SSLBOOST_STALL_TIMEOUT": (
        "--stall-timeout",
        "SECONDS",
        "A download that receives less than 1 KiB in this many seconds fails as stalled (default 60).",
    ),
}
# resolving a --base (which may download it)
BASE_ENV = (
    "SSLBOOST_CACHE",
    "SSLBOOST_MIRROR",
    "HF_TOKEN",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
    "SSLBOOST_STALL_TIMEOUT",
)
DATA_ENV = ("SSLBOOST_CACHE", "SSLBOOST_DATA")  # reading --data (Fashion-MNIST)


def parse_device(value: str) -> str:
    """``value`` if it names a device this machine has (``auto``, ``cpu``, ``cuda``, ``cuda:N``),
    else a :class:`UserError` saying what was expected."""
    if not _DEVICE.fullmatch(value):
        raise UserError(f"--device {value}: expected auto, cpu, cuda or cuda:N")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {value}: CUDA is not available on this machine")
        index, count = int(value.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise UserError(
                f"--device {value}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    return value


def resolve_device(value: str) -> str:
    """A checked ``--device`` with ``auto`` replaced by ``cuda`` or ``cpu``."""
    if value != "auto":
        return value
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_option(help: str = DEVICE_HELP):
    """``--device`` (default ``auto``), checked by :func:`parse_device` when the line is parsed."""
    return typer.Option("auto", "--device", help=help, callback=parse_device)


def workers_option(help: str = "Data-loading worker processes (default: chosen for the data and machine)."):
    """``--workers N`` (N ≥ 0); the default ``None`` lets the library choose (see the module docstring)."""
    return typer.Option(None, "--workers", min=0, help=help)


def one_of(option: str, value: str, choices) -> str:
    """``value`` if it is one of ``choices``, else a :class:`UserError` naming the closest."""
    if value not in choices:
        raise unknown_choice(option, value, choices)
    return value


def parse_augment(value: str | None) -> str | None:
    """``value`` if it names a view pipeline (:data:`e2mc_cli.training.data.AUGMENT_MODES`), else a
    :class:`UserError` naming the valid ones; ``None`` (not given) passes."""
    if value is None:
        return None
    from e2mc_cli.training.data import AUGMENT_MODES  # imports torch: only when the option is given

    return one_of("--augment", value, AUGMENT_MODES)


def augment_option(
    help: str = "Where the training views are made: cpu (the official per-image pipeline on the loader's "
    "workers) or split (decoding and crops on the workers, the colour work batched on the training "
    "device). Default: the library's for a new run, the run's own on --resume.",
):
    """``--augment MODE`` (default ``None``), checked by :func:`parse_augment` when the line is parsed."""
    return typer.Option(None, "--augment", metavar="MODE", help=help, callback=parse_augment)


PRECISION_HELP = (
    "Forward-pass arithmetic: bf16, fp16 (with a gradient scaler) or fp32; heads' last layers and "
    "losses stay fp32. Default: the recipe's run.precision on CUDA (the authors' choice), fp32 on the CPU."
)


def parse_precision(value: str | None) -> str | None:
    if value is None:
        return None
    from e2mc_cli.precision import check_precision

    return check_precision(value)


def precision_option(help: str = PRECISION_HELP):
    """``--precision bf16|fp16|fp32`` (default ``None``: the recipe's, see :mod:`e2mc_cli.precision`)."""
    return typer.Option(None, "--precision", help=help, callback=parse_precision)


def parse_decode(value: str | None) -> str | None:
    """``value`` if it names where JPEG files are decoded (:data:`e2mc_cli.data.pipeline.DECODE_MODES`),
    else a :class:`UserError` naming the valid ones; ``None`` (not given) passes."""
    if value is None:
        return None
    from e2mc_cli.data.pipeline import DECODE_MODES  # imports torch: only when the option is given

    return one_of("--decode", value, DECODE_MODES)


def decode_option(
    help: str = "Where JPEG files are decoded with --augment split: cpu (the loader's workers) or device "
    "(nvJPEG on the training GPU, in batches; falls back to the workers, with a note, where it cannot).",
):
    """``--decode MODE`` (default ``None``: ``cpu``), checked by :func:`parse_decode`."""
    return typer.Option(None, "--decode", metavar="MODE", help=help, callback=parse_decode)


def parse_base(value: str | None) -> str | None:
    """``value`` if it can name a base: ``hf://ORG/NAME[@REV]``, an existing file, a
    ``.safetensors`` path, or a registry name; a misspelt registry name is a :class:`UserError`
    naming the closest ones."""
    if value is None:
        return None
    from e2mc_cli.zoo import BASES, get_spec, is_hf
    from e2mc_cli.zoo.hf import parse_hf

    if is_hf(value):
        parse_hf(value)
    elif value not in BASES:
        path = Path(value).expanduser()
        if path.suffix == ".safetensors" and not path.is_file():
            raise UserError(f"--base {value}: no such file")
        if not path.is_file():
            get_spec(value)
    return value


def parse_bases(values: list[str] | None) -> list[str] | None:
    """Each of ``values`` checked by :func:`parse_base` (a repeated option)."""
    return None if values is None else [parse_base(v) for v in values]


def base_option(
    default=None, help: str = "A base: a registry name (`sslboost bases`), hf://ORG/NAME or a file."
):
    """``--base``, checked by :func:`parse_base` when the line is parsed (``...``: required)."""
    return typer.Option(default, "--base", help=help, callback=parse_base)


def allow_new_heads_option(what: str = "the base (a backbone-only file)"):
    """``--allow-new-heads``: heads missing from ``what`` start from random weights."""
    return typer.Option(
        False, "--allow-new-heads", help=f"Initialise heads missing from {what} with random weights."
    )


def parse_epochs(value: float | None) -> float | int | None:
    """A positive, finite epoch count; a whole number comes back as an ``int``."""
    if value is None:
        return None
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"--epochs must be a positive number (fractions allowed), got {value:g}")
    return int(value) if float(value).is_integer() else value


def epochs_option(help: str = "Override run.epochs (a fraction trains that share of an epoch's steps)."):
    """``--epochs E`` of a training run: a positive number, fractions allowed."""
    return typer.Option(None, "--epochs", help=help, callback=parse_epochs)


def json_option(help: str = "Print JSON to stdout instead of the table."):
    """``--json``: the command's result as JSON on stdout (see :func:`print_json`)."""
    return typer.Option(False, "--json", help=help)


def print_json(document) -> None:
    """``document`` as indented JSON on stdout, without colour or wrapping, and nothing else."""
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def parse_trackers(values: list[str] | None) -> list[str]:
    """The ``--log`` names, checked by :func:`e2mc_cli.trackers.check_trackers`."""
    return trackers.check_trackers(values or [])


def log_option():
    """``--log tensorboard|wandb|csv`` (repeatable), checked when the line is parsed."""
    return typer.Option(
        None,
        "--log",
        metavar="TRACKER",
        help="Also log to a tracker: tensorboard, wandb or csv (repeatable; files in the output folder). "
        "tensorboard and wandb are extras: pip install 'sslboost\\[tensorboard]' or 'sslboost\\[wandb]'.",
        callback=parse_trackers,
    )


def _export(variable: str):
    """An option callback: a value given on the command line becomes ``$variable`` of this process."""

    def callback(ctx: typer.Context, param: typer.CallbackParam, value):
        source = ctx.get_parameter_source(param.name)
        if value not in (None, False) and source is not None and source.name == "COMMANDLINE":
            os.environ[variable] = "1" if value is True else str(value)
        return value

    return callback


def env_option(variable: str):
    """The option of an environment variable of :data:`ENVIRONMENT` (shown in the help's
    Environment panel with its variable)."""
    flag, metavar, help = ENVIRONMENT[variable]
    return typer.Option(
        False if metavar is None else None,
        flag,
        metavar=metavar,
        envvar=variable,
        show_envvar=True,
        show_default=False,
        help=help,
        callback=_export(variable),
        rich_help_panel=ENVIRONMENT_PANEL,
    )


def _parameter(variable: str) -> inspect.Parameter:
    flag, metavar, _ = ENVIRONMENT[variable]
    return inspect.Parameter(
        flag.lstrip("-").replace("-", "_"),
        inspect.Parameter.KEYWORD_ONLY,
        default=env_option(variable),
        annotation=bool if metavar is None else str | None,
    )


def reads_environment(*variables: str):
    """Decorator of a command that reads ``variables`` (through the library it calls): its help
    lists their options (:func:`env_option`), whose callbacks set the variables; the command itself
    is called without them."""
    extra = [_parameter(v) for v in ENVIRONMENT if v in variables]

    def decorate(command):
        signature = inspect.signature(command)
        clash = {p.name for p in extra} & set(signature.parameters)
        if clash:
            raise TypeError(f"{command.__name__} has its own parameter(s) {sorted(clash)}")

        @functools.wraps(command)
        def wrapper(**kwargs):
            for p in extra:
                kwargs.pop(p.name)
            return command(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
        wrapper.__annotations__ = {**command.__annotations__, **{p.name: p.annotation for p in extra}}
        return wrapper

    return decorate


SECRET_OPTIONS = ("--token",)


def without_secrets(argv: list[str]) -> list[str]:
    """``argv`` without the options whose value is a secret (``--token T``, ``--token=T``): the
    command lines a run records in its files or prints."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in SECRET_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{name}=" for name in SECRET_OPTIONS)):
            kept.append(arg)
    return kept
