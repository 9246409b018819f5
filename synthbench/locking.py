"""Exclusive locks on run, comparison and data directories, held for a process's life.

Two processes writing into one run directory interleave their logs and overwrite each other's
weights; two comparisons on one ``--out`` train the same run twice. Every writer therefore takes
an OS file lock (``fcntl.flock``) on a lock file before it touches the directory and keeps it
until it is done. The operating system drops the lock when the process ends, however it ends
(a crash or ``kill -9`` included), so a lock is never stale. A second process is refused at
once with a one-line :class:`SynthbenchError` naming the holder's pid and host.

The lock file holds ``{"pid", "host", "since", "command"}`` of the holder for that message and
is deleted on release (a killed holder leaves it behind; it is reused). A process that locked a
file which was deleted meanwhile sees that its path now names another file and tries again, so
two processes never hold "the" lock on two different files. ``flock`` locks are advisory and
local to one host's kernel (on NFS they may not reach other hosts). Platforms without ``fcntl``
are not locked.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from synthbench.errors import SynthbenchError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Lock file of a run or comparison directory (inside it).
LOCK_NAME = ".synthbench.lock"


class DirectoryLock:
    """An exclusive lock on ``lock_file``; use as a context manager or call :meth:`release`."""

    def __init__(self, lock_file: str | Path, what: str):
        self.path = Path(lock_file)
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> DirectoryLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _attempt in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise SynthbenchError(f"{self.what} is in use by {_describe(holder)}; wait for it to end "
                                      "or use another output folder", self.path.parent) from None
            except OSError:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the previous holder deleted the file we locked: lock the current one
        else:
            raise SynthbenchError("cannot take the lock: its file keeps being replaced", self.path)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv[:3])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            if _same_file(self.fd, self.path):
                self.path.unlink(missing_ok=True)  # still held: nobody can be using this file
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process (it is starting; pid not yet recorded)"
    text = f"another process (pid {holder['pid']} on host {holder.get('host', '?')}"
    if holder.get("command"):
        text += f", '{holder['command']}'"
    if holder.get("since"):
        text += f", since {holder['since']}"
    return text + ")"


def lock_directory(directory: str | Path, what: str = "run directory") -> DirectoryLock:
    """Lock ``directory`` (created if absent) through ``directory/.synthbench.lock``."""
    return DirectoryLock(Path(directory) / LOCK_NAME, what).acquire()


def lock_target(target: str | Path, what: str) -> DirectoryLock:
    """Lock a directory that does not exist yet (it appears by an atomic rename) through a
    sibling ``.<name>.lock`` in its parent folder."""
    target = Path(target)
    return DirectoryLock(target.parent / f".{target.name}.lock", what).acquire()
