"""``synthbench tensorboard RUN_OR_COMPARISON``: open a run's (or a comparison's) TensorBoard events."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import typer

from synthbench.cli.console import console
from synthbench.errors import SynthbenchError


def register(app: typer.Typer) -> None:
    app.command("tensorboard")(tensorboard_command)


def log_dir(path: Path) -> Path:
    """The folder TensorBoard should read: ``OUT/runs`` of a comparison, else ``path`` itself
    (a run directory, or any folder of runs); an error when it holds no event files."""
    from synthbench.engine.tensorboard import EVENT_FILE_RE

    if not path.is_dir():
        raise SynthbenchError("not a folder (give a run directory or a comparison's --out)", path)
    folder = path / "runs" if (path / "runs").is_dir() and not (path / "config.json").is_file() else path
    if not any(EVENT_FILE_RE.match(p.name) for p in folder.rglob("events.out.tfevents.*")):
        raise SynthbenchError("no TensorBoard event files in this folder (runs write them beside log.jsonl; "
                              "a run of an older synthbench has none)", folder)
    return folder


def tensorboard_args(folder: Path, port: int, host: str) -> list[str]:
    """The TensorBoard command line, run with this Python (where the ``tensorboard`` dependency is)."""
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(folder), "--port", str(port), "--host", host]


def tensorboard_command(
    path: Path = typer.Argument(..., help="A run directory, a comparison's --out (its runs/), or a folder of runs."),
    port: int = typer.Option(6006, "--port", min=1, max=65535, help="Port TensorBoard listens on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    print_only: bool = typer.Option(False, "--print-only", help="Print the TensorBoard command instead of running it."),
) -> None:
    """Start TensorBoard on a run or a comparison: losses, learning rates, alpha/beta of ours,
    images/s and the sample grid of every epoch. Ctrl-C stops it."""
    folder = log_dir(path)
    args = tensorboard_args(folder, port, host)
    if print_only:
        typer.echo(shlex.join(args))
        return
    console.print(f"TensorBoard on http://{host}:{port}/ for {folder} (Ctrl-C stops it)", markup=False, highlight=False)
    try:
        code = subprocess.call(args)
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
