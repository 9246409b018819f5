"""Ctrl-C and SIGTERM during training: finish the step, write a checkpoint, stop resumably.

While :func:`deferred_interrupts` is active, the first SIGINT or SIGTERM (cluster preemption
sends SIGTERM) only sets a flag. The training loop reads it after every step, writes a
checkpoint, records the run as ``interrupted`` and raises :class:`RunInterrupted`; the CLI says
how to resume and exits with 130. A second Ctrl-C aborts at once (the newest checkpoint stays).
Handlers can only be installed in the main thread; elsewhere signals keep their defaults.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

#: Exit status of a run stopped by a signal (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint; ``--resume`` continues it."""

    def __init__(self, signal_name: str, run_dir: Path, step: int, checkpoint: Path | None):
        self.signal_name, self.run_dir, self.step, self.checkpoint = signal_name, Path(run_dir), step, checkpoint
        saved = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint written"
        super().__init__(f"interrupted by {signal_name} after step {step} ({saved})")


class InterruptFlag:
    """Set by the first SIGINT/SIGTERM; ``signal_name`` says which."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def is_set(self) -> bool:
        return self.signal_name is not None


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[InterruptFlag]:
    """Install the deferring handlers for SIGINT and SIGTERM; restore the previous ones on exit."""
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        flag.signal_name = signal.Signals(signum).name
        os.write(2, f"\n{flag.signal_name} received: finishing this step and writing a checkpoint "
                    "(Ctrl-C again to stop at once)\n".encode())

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def ignore_in_worker() -> None:
    """Data-loader workers ignore Ctrl-C/SIGTERM sent to the whole process group: the main
    process decides when to stop and shuts them down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
