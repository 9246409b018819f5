"""The worker process of the ``processes`` launcher (:class:`synthbench.jobs.launchers.ProcessLauncher`).

``python -m synthbench.jobs.worker JOB.pkl`` runs one pickled :class:`synthbench.jobs.Job` and exits
0 when it finished, 1 when it failed (reason in ``error.json``, traceback on stderr), 130 when a
signal stopped it (a training run wrote its checkpoint first).

``python -m synthbench.jobs.worker --serve FD`` runs job after job: it reads a job file path per
line on stdin, runs the job with its output (file descriptors 1 and 2, so native code's too) in the
job's ``log.txt``, and writes the job's exit status as one line to file descriptor ``FD``. It ends
at the end of stdin, or after a job stopped by a signal.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from pathlib import Path


def run_one(spec: Path) -> int:
    """Run the pickled job at ``spec``; its exit status (0, 1 or 130)."""
    from synthbench.engine.interrupts import EXIT_INTERRUPTED
    from synthbench.jobs import execute

    # The pickle was written by the comparison that started this process, into its own
    # comparison directory; it is not read from anywhere else.
    job = pickle.loads(Path(spec).read_bytes())
    print(f"job {job.name} ({job.key}) in process {os.getpid()}", file=sys.stderr, flush=True)
    try:
        execute(job)
    except KeyboardInterrupt as exc:
        print(f"{exc or 'interrupted'}: stopped; the comparison resumes it when run again", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - reported through error.json and the exit status
        traceback.print_exc()
        return 1
    return 0


def _logged(spec: Path) -> int:
    """:func:`run_one` with file descriptors 1 and 2 in the job's ``log.txt`` (next to ``spec``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(Path(spec).parent / "log.txt", "w") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                return run_one(spec)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def stop_with_parent() -> None:
    """On Linux, ask for SIGTERM when the process that started this worker dies (``kill -9``
    included), so that no worker goes on training for a comparison that is gone (a training
    writes its checkpoint first). Elsewhere the worker ends at the end of its input."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def serve(status_fd: int) -> int:
    from synthbench.engine.interrupts import EXIT_INTERRUPTED

    stop_with_parent()
    with os.fdopen(status_fd, "w", buffering=1) as status:
        try:
            # before the first job arrives (while the comparison prepares its data): torch, pandas and
            # the engine; torchvision (VGG, Inception, augmentation) and with it torch._dynamo, which
            # the first optimizer would otherwise import in the middle of a job (~2.5 s together)
            import torchvision  # noqa: F401

            import synthbench.compare  # noqa: F401
            for line in sys.stdin:
                if not line.strip():
                    continue
                code = _logged(Path(line.strip()))
                status.write(f"{code}\n")
                if code == EXIT_INTERRUPTED:
                    return code
        except KeyboardInterrupt:  # Ctrl-C reaches the idle workers too
            return EXIT_INTERRUPTED
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        return serve(int(argv[1]))
    return run_one(Path(argv[0]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        # Every job's files are written atomically and its log closed: skip the interpreter's
        # teardown (about 2 s with torch loaded).
        code = main(sys.argv[1:])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(main(sys.argv[1:]))
