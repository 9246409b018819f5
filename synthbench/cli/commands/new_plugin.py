"""``synthbench new-plugin NAME [--out DIR]``: scaffold an installable synthesizer plugin (docs/plugins.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from synthbench.cli.console import console


def register(app: typer.Typer) -> None:
    app.command("new-plugin")(new_plugin)


def new_plugin(
    name: str = typer.Argument(..., help="Synthesizer/plugin name: lowercase letter, then letters, digits, '_' or '-'."),
    out: Path = typer.Option(None, "--out", help="Package directory to create (default ./synthbench-NAME); must not exist or be empty."),
) -> None:
    """Write a plugin package: pyproject entry point, a small working GAN, conformance tests, README."""
    from synthbench.scaffold import create_plugin, module_name

    target = create_plugin(name, out)
    console.print(f"created plugin package {target} (module {module_name(name)}, synthesizer {name!r})")
    console.print("next: cd there, then 'pip install -e .', 'synthbench plugins', 'pytest' (see its README.md)")
