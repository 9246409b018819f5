"""Where jobs run: in this process (``local``), as child processes on this machine (``gpus``), or
as Slurm jobs through submitit (``slurm``, :mod:`synthbench.jobs.slurm`).

Every launcher has ``slots`` (jobs at once), ``start(job) -> handle``, ``poll(handle) ->
Outcome | None`` and ``close()``; :func:`synthbench.jobs.run_jobs` drives them.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthbench.errors import SynthbenchError
from synthbench.jobs import Job, Outcome, execute, one_line, recorded_error

LAUNCHERS = ("local", "gpus", "slurm")


@dataclass
class LaunchOptions:
    """How a comparison's jobs are run (suite file ``[launcher]`` table, or the CLI flags).

    ``parallel``: jobs at once (``gpus``: default one per visible GPU; on CPU 1..cores;
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
            raise SynthbenchError("--parallel needs --launcher gpus or slurm (local runs one job at a time)")
        for name in ("time_min", "gpus_per_node", "nodes"):
            if int(getattr(self, name)) < (0 if name == "gpus_per_node" else 1):
                raise SynthbenchError(f"launcher {name} must be positive, got {getattr(self, name)}")
        return self


def make_launcher(options: LaunchOptions, jobs_dir: Path, show_progress: bool = True):
    options.validate()
    if options.kind == "local":
        return LocalLauncher()
    if options.kind == "gpus":
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


class ProcessLauncher:
    """Up to ``parallel`` jobs at once as child processes (``python -m synthbench.jobs.worker``),
    each pinned to one visible GPU through ``CUDA_VISIBLE_DEVICES``; on CPU each gets
    ``cores / parallel`` threads (unless ``OMP_NUM_THREADS`` is set)."""

    def __init__(self, parallel: int | None, jobs_dir: Path):
        self.gpus = visible_gpus()
        cores = os.cpu_count() or 1
        if self.gpus:
            parallel = parallel or len(self.gpus)
            if parallel > len(self.gpus):
                raise SynthbenchError(f"--parallel {parallel}: only {len(self.gpus)} GPU(s) visible "
                                      f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        else:
            parallel = parallel or 1
            if parallel > cores:
                raise SynthbenchError(f"--parallel {parallel}: no GPU visible and this machine has {cores} CPU core(s)")
        self.slots = parallel
        self.threads = max(1, cores // parallel)
        self.free = list(self.gpus[:parallel])
        self.jobs_dir = jobs_dir
        self.children: dict[str, tuple[subprocess.Popen, str | None, Any]] = {}

    def start(self, job: Job) -> Job:
        job.folder.mkdir(parents=True, exist_ok=True)
        spec = job.folder / "job.pkl"
        spec.write_bytes(pickle.dumps(job))
        env = dict(os.environ)
        gpu = self.free.pop(0) if self.gpus else None
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        else:
            env.setdefault("OMP_NUM_THREADS", str(self.threads))
        log = job.log_path.open("w")
        process = subprocess.Popen([sys.executable, "-m", "synthbench.jobs.worker", str(spec)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.children[job.key] = (process, gpu, log)
        return job

    def poll(self, job: Job) -> Outcome | None:
        process, gpu, log = self.children[job.key]
        code = process.poll()
        if code is None:
            return None
        self._release(job.key)
        if code == 0 and job.done():
            return Outcome(job, "finished", log=job.log_path)
        fallback = f"exited with status {code}" + (" (killed by a signal)" if code < 0 else "")
        return Outcome(job, "failed", error=recorded_error(job, fallback), log=job.log_path)

    def _release(self, key: str) -> None:
        process, gpu, log = self.children.pop(key)
        log.close()
        if gpu is not None:
            self.free.append(gpu)

    def close(self) -> None:
        """On an early exit (Ctrl-C, an error): the children stop too (a training run writes a
        checkpoint on SIGTERM and resumes next time)."""
        for process, _, _ in list(self.children.values()):
            if process.poll() is None:
                process.terminate()
        for key, (process, _, _) in list(self.children.items()):
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self._release(key)
