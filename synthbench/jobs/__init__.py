"""Jobs: the units of a comparison (training runs, syntheses, evaluations, downstream experiments).

A :class:`Job` is idempotent and keyed by the hash of its request (``synthbench.compare``
computes it: the run key of a training, and for the steps after it a hash over the keys they
consume). Its record lives in ``OUT/jobs/<kind>-<name>-<key>/``::

    job.json      the last attempt: key, kind, name, host, pid, start time
    result.json   written when it finished: key, result (JSON), seconds
    error.json    written when it failed: one-line reason, type, traceback
    log.txt       its output (jobs run as child processes; Slurm jobs log under OUT/slurm/)

:func:`run_jobs` walks the DAG (``Job.deps``) with a launcher (:mod:`synthbench.jobs.launchers`):
a job whose ``done()`` holds and whose inputs were not remade in this invocation is reused; a
failed job is reported and the jobs that need it are ``blocked``; the others go on. Re-running
the same command therefore starts only what is missing.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthbench.errors import SynthbenchError
from synthbench.io import atomic_write_json

#: Job states after :func:`run_jobs`: ``finished`` (ran now), ``reused`` (done before),
#: ``failed`` (raised or its process died), ``blocked`` (a job it needs did not finish).
ENDED = ("finished", "reused", "failed", "blocked")


@dataclass(frozen=True)
class Job:
    """One unit of work: ``func(**kwargs)`` returns a JSON-able result.

    ``func`` is a module-level function and ``kwargs`` plain picklable values, so the job runs
    the same in this process, in a child process and in a Slurm job. ``tasks``: processes the job
    is started with on a cluster (a DDP training run; 1 for everything else).
    """

    key: str
    kind: str
    name: str
    folder: Path
    func: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    #: Files that must still exist for the job to count as done.
    outputs: tuple[Path, ...] = ()
    tasks: int = 1

    @property
    def result_path(self) -> Path:
        return self.folder / "result.json"

    @property
    def error_path(self) -> Path:
        return self.folder / "error.json"

    @property
    def log_path(self) -> Path:
        return self.folder / "log.txt"

    def done(self) -> bool:
        """Finished before, for this very request, and its outputs are still there."""
        record = read_record(self.result_path)
        return bool(record) and record.get("key") == self.key and all(Path(p).exists() for p in self.outputs)

    def result(self) -> Any:
        """The recorded result of a finished job."""
        record = read_record(self.result_path)
        if not record or record.get("key") != self.key:
            raise SynthbenchError(f"job {self.name} has no result", self.result_path)
        return record["result"]

    def run(self) -> Any:
        return self.func(**self.kwargs)


@dataclass
class Outcome:
    """How a job ended in this invocation; ``log``: where its output is (None: this terminal)."""

    job: Job
    status: str
    error: str | None = None
    log: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("finished", "reused")


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def execute(job: Job) -> Any:
    """Run ``job`` here and record it: ``job.json`` first, ``result.json`` when it finished,
    ``error.json`` (one-line reason and traceback) when it raised. Only rank 0 of a DDP job
    writes. The exception is re-raised for the launcher to report."""
    writer = _rank() == 0
    if writer:
        job.folder.mkdir(parents=True, exist_ok=True)
        job.error_path.unlink(missing_ok=True)
        atomic_write_json(job.folder / "job.json", {
            "key": job.key, "kind": job.kind, "name": job.name, "host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tasks": job.tasks,
        })
    started = time.perf_counter()
    try:
        result = job.run()
    except Exception as exc:
        if writer:
            atomic_write_json(job.error_path, {"key": job.key, "error": one_line(exc), "type": type(exc).__name__,
                                               "traceback": traceback.format_exc()})
        raise
    if writer:
        atomic_write_json(job.result_path, {"key": job.key, "kind": job.kind, "name": job.name, "result": result,
                                            "seconds": time.perf_counter() - started})
    return result


def one_line(exc: BaseException) -> str:
    """An exception as one line: a SynthbenchError's own message, else ``Type: message``."""
    text = str(exc) if isinstance(exc, SynthbenchError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def recorded_error(job: Job, fallback: str) -> str:
    """The one-line reason ``execute`` recorded for ``job`` in another process, else ``fallback``."""
    record = read_record(job.error_path)
    return str(record["error"]) if record and record.get("key") == job.key and record.get("error") else fallback


def check_graph(jobs: Iterable[Job], known: Iterable[str] = ()) -> None:
    """Keys are unique and every dependency names an earlier job (which also rules out cycles)."""
    seen = set(known)
    for job in jobs:
        if job.key in seen:
            raise SynthbenchError(f"two jobs share the key {job.key} ({job.name})")
        missing = [d for d in job.deps if d not in seen]
        if missing:
            raise SynthbenchError(f"job {job.name} depends on unknown or later job(s) {', '.join(missing)}")
        seen.add(job.key)


#: Called with each ended job; returns the jobs that become possible (e.g. a seed's downstream
#: experiments once every method of that seed is evaluated).
Expand = Callable[[Outcome, dict[str, Outcome]], list[Job]]


def run_jobs(jobs: list[Job], launcher, expand: Expand | None = None,
             on_event: Callable[[str, Job, Outcome | None], None] | None = None,
             poll_seconds: float = 0.5) -> dict[str, Outcome]:
    """Run the DAG ``jobs`` (in list order where the dependencies allow) with ``launcher``
    (``slots``, ``start(job) -> handle``, ``poll(handle) -> Outcome | None``, ``close()``).

    ``on_event("start" | "end", job, outcome)`` reports progress. Returns every job's outcome.
    """
    check_graph(jobs)
    pending: dict[str, Job] = {j.key: j for j in jobs}
    outcomes: dict[str, Outcome] = {}
    ran_now: set[str] = set()
    running: dict[str, Any] = {}
    event = on_event or (lambda *_: None)

    def ended(outcome: Outcome) -> None:
        key = outcome.job.key
        outcomes[key] = outcome
        running.pop(key, None)
        if outcome.status == "finished":
            ran_now.add(key)
        event("end", outcome.job, outcome)
        for new in (expand(outcome, outcomes) if expand else []):
            check_graph([new], known=set(outcomes) | set(pending) | set(running))
            pending[new.key] = new

    try:
        while pending or running:
            progressed = False
            for job in list(pending.values()):
                if len(running) >= launcher.slots:
                    break
                if any(d not in outcomes for d in job.deps):
                    continue
                del pending[job.key]
                progressed = True
                failed = [outcomes[d] for d in job.deps if not outcomes[d].ok]
                if failed:
                    ended(Outcome(job, "blocked", error=f"needs {failed[0].job.name}, which did not finish"))
                elif job.done() and not any(d in ran_now for d in job.deps):
                    ended(Outcome(job, "reused"))
                else:
                    event("start", job, None)
                    running[job.key] = launcher.start(job)
            for handle in list(running.values()):
                outcome = launcher.poll(handle)
                if outcome is not None:
                    ended(outcome)
                    progressed = True
            if not progressed and running:
                time.sleep(poll_seconds)
            elif not progressed and pending:  # nothing runs and nothing can start: a dependency never ends
                raise SynthbenchError(f"jobs wait for jobs that never run: {', '.join(j.name for j in pending.values())}")
    finally:
        launcher.close()
    return outcomes
