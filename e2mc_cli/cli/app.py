"""The Typer application, its fault boundary (:func:`fault_boundary`, around the parsing and the
running of every command) and the output helpers every command module shares."""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

try:  # typer >= 0.2x parses with its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:
    from click import exceptions as click_exceptions

from e2mc_cli import __version__
from e2mc_cli.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_NONFINITE,
    EXIT_TERMINATED,
    PeerFault,
    UserError,
    describe_fault,
    next_step,
)
from e2mc_cli.secrets import scrubbing
from e2mc_cli.stop_signals import Terminated, sigterm_interrupts

# emoji codes off: user text such as ``cuda:abc:`` must print as typed (markup is escaped per call)
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def say_line(text: str, code: int) -> typer.Exit:
    """Print one plain line on stderr (no markup read in ``text``); return the exit to raise."""
    err_console.print(escape(text), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` on stderr; return the exit (code 2 unless told) for the caller to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def call_with_options(func: Callable, options: dict, **given):
    """``func(**kwargs)`` where each parameter of ``func`` comes from ``given``, else from the
    command's ``options`` (its ``locals()``) under the same name; the rest keep their defaults."""
    names = inspect.signature(func).parameters
    picked = {k: options[k] for k in names if k in options and k not in given}
    return func(**picked, **given)


def usage_message(exc: click_exceptions.ClickException) -> str:
    """Click's complaint about the command line on one line, with where to read the usage."""
    text = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    return f"{text}; see '{ctx.command_path} --help'" if ctx is not None else text


def interrupted(exc: KeyboardInterrupt) -> typer.Exit:
    """``interrupted`` (``interrupted by SIGTERM``), and how to carry on when the command recorded
    it, on stderr; exit 130 (143)."""
    if isinstance(exc, Terminated):
        what, code = "interrupted by SIGTERM", EXIT_TERMINATED
    else:
        what, code = "interrupted", EXIT_INTERRUPTED
    step = next_step(exc, default="")
    return say_line(f"{what}; {step}" if step else what, code)


@contextlib.contextmanager
def fault_boundary() -> Iterator[None]:
    """What goes wrong inside becomes one line on stderr and an exit code.

    A :class:`UserError` or a usage error of the command line is ``error: …`` and exit code 2; an
    OSError of the machine (no space, read-only, permission, a file in the way) is ``error: PATH:
    what happened; what to do`` and exit code 3 (:func:`e2mc_cli.errors.describe_fault`); Ctrl-C
    is ``interrupted`` and exit code 130, SIGTERM (outside training, which saves and stops)
    ``interrupted by SIGTERM`` and 143. On a DDP rank other than 0, a bug rank 0 met while
    writing (:class:`~e2mc_cli.errors.PeerFault`) is one line and exit code 1. Anything else is a
    bug and keeps its traceback.
    """
    try:
        yield
    except UserError as exc:
        raise fail(str(exc), getattr(exc, "exit_code", EXIT_BAD_INPUT)) from None
    except click_exceptions.NoArgsIsHelpError:
        raise  # a bare group: click prints its help
    except click_exceptions.ClickException as exc:
        raise fail(usage_message(exc)) from None
    except BrokenPipeError:  # the reader of stdout went away (`sslboost … | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    except OSError as exc:
        fault = describe_fault(exc)
        if fault is None:
            raise
        code, message = fault
        raise fail(message, code) from None
    except KeyboardInterrupt as exc:
        raise interrupted(exc) from None
    except PeerFault as exc:  # rank 0 shows the traceback of its bug; the other ranks one line
        raise fail(str(exc), EXIT_NONFINITE) from None


class _Group(TyperGroup):
    """Parses and runs every command below inside the :func:`fault_boundary`."""

    def make_context(self, info_name, args, parent=None, **extra):
        with fault_boundary():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        # no token in any message, log record or warning; SIGTERM ends the command as Ctrl-C does
        with fault_boundary(), scrubbing(), sigterm_interrupts():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Group,
    name="sslboost",
    help="Continue the pre-training of self-supervised ResNets with an entropy or rank criterion, "
    "evaluate the result, and publish it.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(cls=_Group, help="Benchmarks that print measured figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"sslboost {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """sslboost: a named base checkpoint goes in, a better one comes out, with the evidence."""
