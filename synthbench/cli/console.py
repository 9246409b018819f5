"""Shared rich console objects and the progress factory for every command.

On a terminal, :func:`progress` is a rich progress bar. Off a terminal (CI, ``nohup``, Slurm
logs) a bar draws nothing, so :class:`PlainProgress` prints plain lines to stderr instead: one
when a task's description changes (a new step), one at every tenth of its total (at most one
per ``min_interval`` seconds, and at least one per ``heartbeat`` seconds while it advances),
and one when it completes; each with count, rate and ETA. ``SYNTHBENCH_PROGRESS`` overrides
the choice: ``rich`` (or ``1``), ``plain``, or ``off`` (or ``0``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
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

ENV_PROGRESS = "SYNTHBENCH_PROGRESS"
#: Redraws per second of a rich bar: rich's default 10 took ~5% of a core (measured), CPU that
#: a training or a comparison's worker processes on the same cores would rather have (issue 21).
REFRESH_PER_SECOND = 2


def progress(*extra_columns, transient: bool = False) -> Progress | PlainProgress:
    """A rich progress bar with count, elapsed time and ETA on a terminal; plain lines elsewhere."""
    mode = progress_mode()
    if mode == "plain":
        return PlainProgress()
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
        disable=mode == "off",
        refresh_per_second=REFRESH_PER_SECOND,
    )


def progress_mode() -> str:
    """``rich``, ``plain`` or ``off``: ``SYNTHBENCH_PROGRESS``, else rich on a terminal, plain elsewhere."""
    value = os.environ.get(ENV_PROGRESS, "").strip().lower()
    if value in ("rich", "1", "true", "yes"):
        return "rich"
    if value in ("plain", "off"):
        return value
    if value in ("0", "false", "no"):
        return "off"
    return "rich" if err_console.is_terminal else "plain"


def _clock() -> float:
    return time.monotonic()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


@dataclass
class _PlainTask:
    description: str
    total: float | None
    completed: float
    visible: bool
    fields: dict[str, Any]
    started: float
    start_count: float
    last_line: float
    next_mark: float
    finished: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class PlainProgress:
    """The subset of :class:`rich.progress.Progress` synthbench uses, as plain log lines (stderr)."""

    def __init__(self, stream=None, min_interval: float = 5.0, heartbeat: float = 60.0, marks: int = 10):
        self.stream = stream
        self.min_interval = min_interval
        self.heartbeat = heartbeat
        self.marks = marks
        self.tasks: dict[int, _PlainTask] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 visible: bool = True, **fields: Any) -> int:
        task_id = len(self.tasks)
        now = _clock()
        task = _PlainTask(description, total, completed, visible, dict(fields), now, completed, now, 0.0)
        task.next_mark = self._next_mark(task)
        self.tasks[task_id] = task
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, visible: bool | None = None,
               refresh: bool = False, **fields: Any) -> None:
        task = self.tasks[task_id]
        if total is not None:
            task.total = total
        if visible is not None:
            task.visible = visible
        task.fields.update(fields)
        if completed is not None:
            task.completed = completed
        if advance:
            task.completed += advance
        now = _clock()
        if description is not None and description != task.description:
            task.description = description
            self._line(task, now)  # a new step
            return
        if task.total and task.completed >= task.total and not task.finished:
            task.finished = True
            self._line(task, now, done=True)
            return
        due_mark = task.completed >= task.next_mark and now - task.last_line >= self.min_interval
        due_beat = now - task.last_line >= self.heartbeat and task.completed > task.start_count
        if due_mark or due_beat:
            self._line(task, now)

    def _next_mark(self, task: _PlainTask) -> float:
        if not task.total:
            return math.inf
        step = task.total / self.marks
        return (math.floor(task.completed / step) + 1) * step

    def _line(self, task: _PlainTask, now: float, done: bool = False) -> None:
        task.last_line = now
        task.next_mark = self._next_mark(task)
        if not task.visible:
            return
        elapsed = now - task.started
        count = f"{task.completed:g}" + (f"/{task.total:g}" if task.total else "")
        parts = [f"{time.strftime('%H:%M:%S')} {task.description}: {count}"]
        if task.total:
            parts.append(f"({100 * task.completed / task.total:.0f}%)")
        rate = (task.completed - task.start_count) / elapsed if elapsed > 0 else math.nan
        if done:
            parts.append(f"done in {_duration(elapsed)}")
        elif math.isfinite(rate) and rate > 0:
            parts.append(f"{rate:.3g}/s" if rate >= 1 else f"{1 / rate:.3g} s each")
            if task.total:
                parts.append(f"eta {_duration((task.total - task.completed) / rate)}")
        info = " ".join(str(v) for v in task.fields.values() if v not in (None, ""))
        if info:
            parts.append(f"| {info}")
        stream = self.stream or sys.stderr
        stream.write(" ".join(parts) + "\n")
        stream.flush()


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
