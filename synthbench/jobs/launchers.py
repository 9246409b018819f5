"""Where jobs run: in this process (``local``), in worker processes on this machine (``processes``;
``gpus`` is the same launcher under its older name), or as Slurm jobs through submitit (``slurm``,
:mod:`synthbench.jobs.slurm`).

Every launcher has ``slots`` (jobs at once), ``start(job) -> handle``, ``poll(handle) ->
Outcome | None`` and ``close()``; :func:`synthbench.jobs.run_jobs` drives them.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthbench.errors import SynthbenchError
from synthbench.jobs import Job, Outcome, execute, one_line, recorded_error

LAUNCHERS = ("local", "processes", "gpus", "slurm")


@dataclass
class LaunchOptions:
    """How a comparison's jobs are run (suite file ``[launcher]`` table, or the CLI flags).

    ``parallel``: jobs at once (``processes``: default one per visible GPU, else min(cores, 4);
    ``slurm``: jobs submitted at once, default unlimited). Slurm fields: ``partition``,
    ``time_min`` (per job), ``gpus_per_node`` and ``nodes`` (a training run uses
    ``nodes * gpus_per_node`` processes as one DDP job), ``cpus_per_task``, ``mem_gb``,
    ``account``, ``sbatch`` (extra ``#SBATCH`` flags, e.g. ``{"qos": "high"}``), ``cluster``
    (None: Slurm, required; ``"local"``: the same submitit jobs as local processes, to try a
    setup without a cluster).
    """

    kind: str = "local"
    parallel: int | None = None
    partition: str | None = None
    time_min: int = 240
    gpus_per_node: int = 1
    nodes: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    sbatch: dict[str, Any] = field(default_factory=dict)
    cluster: str | None = None

    def validate(self) -> LaunchOptions:
        if self.kind not in LAUNCHERS:
            raise SynthbenchError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {self.kind!r}")
        if self.parallel is not None and self.parallel < 1:
            raise SynthbenchError(f"--parallel must be >= 1, got {self.parallel}")
        if self.kind == "local" and self.parallel not in (None, 1):
            raise SynthbenchError("--parallel needs --launcher processes or slurm (local runs one job at a time)")
        for name in ("time_min", "gpus_per_node", "nodes"):
            if int(getattr(self, name)) < (0 if name == "gpus_per_node" else 1):
                raise SynthbenchError(f"launcher {name} must be positive, got {getattr(self, name)}")
        return self


def make_launcher(options: LaunchOptions, jobs_dir: Path, show_progress: bool = True):
    options.validate()
    if options.kind == "local":
        return LocalLauncher()
    if options.kind in ("processes", "gpus"):
        return ProcessLauncher(options.parallel, jobs_dir)
    from synthbench.jobs.slurm import SlurmLauncher

    return SlurmLauncher(options, jobs_dir.parent / "slurm")


class LocalLauncher:
    """Today's behaviour: one job at a time in this process (its output on this terminal)."""

    slots = 1

    def start(self, job: Job) -> Outcome:
        try:
            execute(job)
        except Exception as exc:  # noqa: BLE001 - a plugin may raise anything; Ctrl-C still stops
            return Outcome(job, "failed", error=one_line(exc))
        return Outcome(job, "finished")

    def poll(self, handle: Outcome) -> Outcome:
        return handle

    def close(self) -> None:
        return None


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


#: Worker processes started by default without a GPU (``cores`` when fewer): a comparison's graph
#: rarely has more independent jobs at once, and every worker holds its own copy of the models.
DEFAULT_CPU_WORKERS = 4


class ProcessLauncher:
    """Up to ``parallel`` jobs at once in worker processes on this machine.

    Each worker (``python -m synthbench.jobs.worker --serve``) imports torch and the plugins once
    and then runs job after job, each job's output going to its ``log.txt``. With GPUs each worker
    owns one visible GPU (``CUDA_VISIBLE_DEVICES``; default: one worker per GPU); without, each gets
    ``cores / parallel`` threads (``OMP_NUM_THREADS``, unless set; default ``min(cores, 4)``
    workers). A worker that dies (a crash, ``kill -9``) fails the job it ran and is replaced.
    """

    def __init__(self, parallel: int | None, jobs_dir: Path):
        self.gpus = visible_gpus()
        cores = os.cpu_count() or 1
        if self.gpus:
            parallel = parallel or len(self.gpus)
            if parallel > len(self.gpus):
                raise SynthbenchError(f"--parallel {parallel}: only {len(self.gpus)} GPU(s) visible "
                                      f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        else:
            parallel = parallel or min(cores, DEFAULT_CPU_WORKERS)
            if parallel > cores:
                raise SynthbenchError(f"--parallel {parallel}: no GPU visible and this machine has {cores} CPU core(s)")
        self.slots = parallel
        self.threads = max(1, cores // parallel)
        self.jobs_dir = jobs_dir
        self.workers: list[_Worker | None] = [None] * parallel
        self.running: dict[str, int] = {}  # job key -> worker slot

    def _env(self, slot: int) -> dict[str, str]:
        env = dict(os.environ)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot]
        else:
            env.setdefault("OMP_NUM_THREADS", str(self.threads))
        return env

    def _spawn(self, slot: int) -> _Worker:
        self.workers[slot] = _Worker(self._env(slot), self.jobs_dir / "workers" / f"worker-{slot}.log")
        return self.workers[slot]

    def prestart(self) -> None:
        """Start every worker now (each imports torch and the plugins while this process goes on)."""
        for slot in range(self.slots):
            if self.workers[slot] is None:
                self._spawn(slot)

    def start(self, job: Job) -> Job:
        slot = next(i for i in range(self.slots) if i not in self.running.values())
        worker = self.workers[slot]
        if worker is None or not worker.idle():
            if worker is not None:
                worker.stop()
            worker = self._spawn(slot)
        job.folder.mkdir(parents=True, exist_ok=True)
        spec = job.folder / "job.pkl"
        spec.write_bytes(pickle.dumps(job))
        worker.send(spec)
        self.running[job.key] = slot
        return job

    def poll(self, job: Job) -> Outcome | None:
        worker = self.workers[self.running[job.key]]
        code = worker.result()
        if code is None:
            return None
        del self.running[job.key]
        if code == 0 and job.done():
            return Outcome(job, "finished", log=job.log_path)
        fallback = f"exited with status {code}" + (" (killed by a signal)" if code < 0 else "")
        return Outcome(job, "failed", error=recorded_error(job, fallback), log=job.log_path)

    def close(self) -> None:
        """Every worker gets SIGTERM: an idle one ends at once; on an early exit (Ctrl-C, an error)
        a running job stops too (a training run writes a checkpoint first and resumes next time)."""
        busy = {slot for slot in self.running.values()}
        workers = [(w, slot in busy) for slot, w in enumerate(self.workers) if w is not None]
        for worker, _ in workers:  # all told first, then waited for: they end side by side
            worker.finish(terminate=True)
        for worker, running in workers:
            worker.wait(timeout=120 if running else 30)
        self.workers = [None] * self.slots
        self.running.clear()


class _Worker:
    """One worker process: job spec paths go in on its stdin, one exit status per job comes back on
    a pipe (0 finished, 1 failed, 130 stopped by a signal, after which the worker ends)."""

    def __init__(self, env: dict[str, str], log_path: Path):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        with log_path.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "synthbench.jobs.worker", "--serve", str(write_fd)], env=env,
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,), text=True)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.status_fd, self.buffer, self.busy, self.ended = read_fd, b"", False, False

    def idle(self) -> bool:
        return not self.busy and not self.ended and self.process.poll() is None

    def send(self, spec: Path) -> None:
        self.busy = True
        with contextlib.suppress(OSError):  # died since idle(): result() reports its exit status
            self.process.stdin.write(f"{spec}\n")
            self.process.stdin.flush()

    def result(self) -> int | None:
        """The exit status of the job it runs, once that ended (None while it runs)."""
        if b"\n" not in self.buffer and not self.ended:
            try:
                chunk = os.read(self.status_fd, 4096)
            except BlockingIOError:
                chunk = None
            if chunk:
                self.buffer += chunk
            elif chunk == b"":  # the pipe closed: the worker ended
                self.ended = True
        if b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.busy = False
            code = int(line)
            if code != 0 and code != 1:  # stopped by a signal: the worker ends, it takes no other job
                self.ended = True
            return code
        if self.ended:
            self.busy = False
            code = self.process.wait()
            return code if code != 0 else 1  # ended without a word about the job
        return None

    def finish(self, terminate: bool = False) -> None:
        """End its input (it ends after the job it runs); ``terminate``: stop that job too (SIGTERM)."""
        if self.process.poll() is None and terminate:
            self.process.terminate()
        with contextlib.suppress(OSError):
            self.process.stdin.close()

    def wait(self, timeout: float) -> None:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self.status_fd)

    def stop(self) -> None:
        self.finish()
        self.wait(timeout=30)
