"""Shared rich console objects and progress-bar factory for every command."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console()
err_console = Console(stderr=True)


def progress(*extra_columns, transient: bool = False) -> Progress:
    """A rich progress bar with count, elapsed time and ETA (plus any extra columns)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        *extra_columns,
        console=err_console,
        transient=transient,
        disable=not err_console.is_terminal and not _force_progress(),
    )


def _force_progress() -> bool:
    import os

    return bool(os.environ.get("SYNTHBENCH_PROGRESS"))


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
