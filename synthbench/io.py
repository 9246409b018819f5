"""Atomic file output, hashing, disk space and file-system errors a user can act on.

Every file synthbench writes goes through these helpers: the content is written to a temporary
name in the same directory, flushed, and renamed over the target, so a crash or a kill leaves
either the old file or the new one, never half of one. ``durable=True`` (checkpoints, final
weights, prepared arrays) also fsyncs the content before the rename and the directory after
it, so a host crash cannot leave a renamed file with missing blocks.

A temporary entry is named ``.<target name>.<random><suffix>.tmp``; :func:`remove_leftovers`
deletes those of a killed writer.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthbench.errors import SynthbenchError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: mkstemp/mkdtemp create private (0600/0700) entries; published files get the usual modes.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a directory's) content to the storage device."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except (IsADirectoryError, PermissionError):  # platforms that cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # a directory fsync some file systems refuse
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(folder)


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "", durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    ``suffix`` keeps an extension that a writer relies on (``np.save`` adds ``.npy``, PIL reads
    the format from it). On an exception the temporary file is removed and the target untouched.
    ``durable``: fsync the file before the rename and the directory after it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f"{suffix}.tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _FILE_MODE)
            if durable:
                fsync_path(tmp_path)
        os.replace(tmp_path, target)
        if durable:
            fsync_path(target.parent)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        found = find_user_os_error(exc)
        if found is not None and not found.filename:  # e.g. a full disk inside torch.save or PIL
            raise OSError(found.errno, found.strerror, str(target)) from exc
        raise


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | Path, obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_directory(target: str | Path, overwrite: bool = False, durable: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it to ``target`` when complete.

    Raises ``FileExistsError`` if ``target`` exists and ``overwrite`` is false. ``durable``:
    fsync every file and folder inside before the rename, and the parent after it.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, _DIR_MODE)
        if durable:
            _fsync_tree(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        if durable:
            fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def leftover_pattern(name: str) -> re.Pattern[str]:
    """Temporary entries :func:`atomic_path` / :func:`atomic_directory` make for target ``name``."""
    return re.compile(rf"^\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}.*\.tmp$")


def remove_leftovers(folder: str | Path, names: list[str] | None = None) -> list[Path]:
    """Delete the temporary files and folders a killed writer left in ``folder``; return them.

    ``names``: only the leftovers of these targets (default: of any target). Call it only while
    holding the folder's lock (:mod:`synthbench.locking`): a live writer's temporary entry
    looks the same.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    patterns = [leftover_pattern(n) for n in names] if names is not None else [re.compile(r"^\..+\.tmp$")]
    removed = []
    for entry in folder.iterdir():
        if any(p.match(entry.name) for p in patterns):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


# --------------------------------------------------------------------------- disk space, OS errors
def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def free_bytes(folder: str | Path) -> int:
    """Free space for this user in the file system holding ``folder`` (its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def require_free_space(folder: str | Path, needed: int, what: str) -> None:
    """A :class:`SynthbenchError` (one line, ``folder`` named) unless ``needed`` bytes fit there."""
    free = free_bytes(folder)
    if needed > free:
        raise SynthbenchError(
            f"not enough disk space: {what} needs {human_bytes(needed)}, {human_bytes(free)} free", folder)


def preallocate(path: str | Path, size: int) -> None:
    """Reserve ``size`` bytes for a file before it is memory-mapped.

    Writing to a memory map whose pages the disk cannot back kills the process with SIGBUS; a
    reservation fails early with ``ENOSPC`` instead. File systems without the call are skipped.
    """
    if not hasattr(os, "posix_fallocate") or size <= 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            return
        raise
    finally:
        os.close(fd)


#: OS errors a user fixes outside synthbench (space, permissions, read-only mounts, quotas).
USER_OS_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def os_error_message(exc: OSError) -> str:
    """``"No space left on device"`` and the like, with what to do."""
    hint = {errno.ENOSPC: "free some space or use another output folder",
            errno.EDQUOT: "disk quota exceeded; free some space or use another output folder",
            errno.EROFS: "the output folder is on a read-only file system; use another one",
            errno.EACCES: "no permission to write there; use another output folder",
            errno.EPERM: "no permission to write there; use another output folder"}.get(exc.errno, "")
    text = exc.strerror or str(exc)
    return f"cannot write: {text}" + (f" ({hint})" if hint else "")


@contextlib.contextmanager
def user_errors_from_os(default_path: str | Path | None = None) -> Iterator[None]:
    """Turn a full disk, a read-only mount or a missing permission into a :class:`SynthbenchError`.

    The message is one line naming the file (the OS error's, else ``default_path``). Other OS
    errors pass through unchanged. Chained errors raised while handling one (a second write
    failing for the same reason) are found through ``__context__``.
    """
    try:
        yield
    except SynthbenchError:
        raise
    except Exception as exc:
        found = find_user_os_error(exc)
        if found is None:
            raise
        path = found.filename if found.filename else default_path
        raise SynthbenchError(os_error_message(found), path) from None


def find_user_os_error(exc: BaseException | None) -> OSError | None:
    """The first disk-full / read-only / permission ``OSError`` in ``exc``'s chain, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in USER_OS_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
