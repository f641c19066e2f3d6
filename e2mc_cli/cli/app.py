"""The Typer application and the output helpers every command module shares."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from e2mc_cli import __version__
from e2mc_cli.errors import UserError

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; return the exit (``code``) for the caller to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, emoji=False)
    return typer.Exit(code)


def call_with_options(func: Callable, options: dict, **given):
    """``func(**kwargs)`` where each parameter of ``func`` comes from ``given``, else from the
    command's ``options`` (its ``locals()``) under the same name; the rest keep their defaults."""
    names = inspect.signature(func).parameters
    picked = {k: options[k] for k in names if k in options and k not in given}
    return func(**picked, **given)


class _Group(TyperGroup):
    """Turns a :class:`UserError` raised by any command below into one line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise fail(str(exc), getattr(exc, "exit_code", 2)) from None


app = typer.Typer(
    cls=_Group,
    name="sslboost",
    help="Continue the pre-training of self-supervised ResNets with an entropy or rank criterion, "
    "evaluate the result, and publish it.",
    no_args_is_help=True,
    add_completion=False,
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
