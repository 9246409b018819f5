"""User-facing errors.

A :class:`SynthbenchError` is bad input or an unmet precondition that the user can fix. The CLI
prints its message on one line and exits with code 2; it never prints a traceback for it.
"""

from __future__ import annotations

from pathlib import Path


class SynthbenchError(Exception):
    """An error the user can fix. ``str(err)`` is a complete one-line message."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class NonFiniteLossError(SynthbenchError):
    """A loss became NaN or infinite; the run stops and its last checkpoint stays intact."""
