"""Assemble the Typer app: built-in command modules, then commands added by plugins.

Each module in :mod:`synthbench.cli.commands` defines ``register(app)``. Errors the user can
fix (:class:`synthbench.SynthbenchError`) print one line ``error: ...`` and exit with code 2.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

import click
import typer
from typer.core import TyperGroup

from synthbench.cli import commands
from synthbench.errors import SynthbenchError
from synthbench.plugins import get_registry


class _Group(TyperGroup):
    """Turn :class:`SynthbenchError` into a one-line message and exit code 2; flags (``--quiet``,
    ``--help``) show no ``<bool>`` type in any command's help."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _untyped_flags(self)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SynthbenchError as exc:
            if os.environ.get("SYNTHBENCH_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


def _untyped_flags(command) -> None:
    """Give every flag of ``command`` and its subcommands an empty metavar: Typer's rich help
    otherwise prints the type of a flag (``<bool>``), which takes no value."""
    help_option = command.get_help_option(typer.Context(command))  # created once, then cached
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _untyped_flags(sub)


def _version(value: bool) -> None:
    if value:
        from synthbench import __version__

        click.echo(f"synthbench {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the synthbench version and exit."),
) -> None:
    """Train and compare conditional-GAN chest-CT synthesizers under identical settings."""


def build_app() -> typer.Typer:
    app = typer.Typer(
        cls=_Group,
        name="synthbench",
        help="Train and compare conditional-GAN chest-CT synthesizers under identical settings.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )
    app.callback()(_root)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(app)
    get_registry().add_commands(app)
    return app


def main() -> None:
    build_app()(prog_name="synthbench")


if __name__ == "__main__":
    main()
