"""``--launcher slurm``: every job a Slurm job through submitit (https://github.com/facebookincubator/submitit).

* A training job asks for ``nodes x gpus_per_node`` tasks and runs as DDP: each task reads its
  rank, world size and master address from submitit's job environment
  (``submitit.helpers.TorchDistributedEnvironment``), which the engine's torchrun path then uses
  (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Every other job is
  one task on one GPU.
* Preemption and time-out: Slurm signals the job (``USR2``, ``signal_delay_s`` before the time
  limit). A training run then finishes its step, writes its checkpoint and stops (the engine's
  SIGTERM path), after which submitit's handler calls :meth:`SubmititJob.checkpoint` and requeues
  the job; the requeued job resumes from the run directory. Other jobs are simply requeued
  (synthesis restarts, the downstream experiment reuses the U-Nets it recorded).
* Logs: ``OUT/slurm/<job id>_<task>_log.{out,err}``; the job records in ``OUT/jobs/``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthbench.errors import SynthbenchError
from synthbench.jobs import Job, Outcome, execute, recorded_error


class SubmititJob:
    """The callable submitit pickles: runs one :class:`Job`; ``checkpoint`` resubmits it (the
    run directory holds the state to resume from)."""

    def __init__(self, job: Job):
        self.job = job

    def __call__(self) -> None:
        if self.job.tasks > 1:
            from submitit.helpers import TorchDistributedEnvironment

            # all of the node's GPUs stay visible: the engine picks cuda:LOCAL_RANK
            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        with _checkpoint_on_preemption():
            execute(self.job)

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(SubmititJob(self.job))


@contextlib.contextmanager
def _checkpoint_on_preemption() -> Iterator[None]:
    """Route submitit's preemption signal through the engine: while a training loop runs (its
    SIGTERM handler is installed) the signal becomes a SIGTERM, so the step finishes and a
    checkpoint is written; submitit's own handler (checkpoint + requeue + exit) runs after that,
    or at once when no training loop is running."""
    from submitit import JobEnvironment

    from synthbench.engine import interrupts

    usr = JobEnvironment._usr_sig()
    submitit_handler = signal.getsignal(usr)
    received: list[int] = []

    def on_preemption(signum, frame):
        received.append(signum)
        if getattr(signal.getsignal(signal.SIGTERM), "__module__", None) == interrupts.__name__:
            os.kill(os.getpid(), signal.SIGTERM)  # the engine stops after this step with a checkpoint
        elif callable(submitit_handler):
            submitit_handler(signum, frame)

    signal.signal(usr, on_preemption)
    try:
        yield
    except KeyboardInterrupt:  # RunInterrupted: the checkpoint is written
        if received and callable(submitit_handler):
            submitit_handler(received[0], None)  # requeues and exits
        raise
    finally:
        signal.signal(usr, submitit_handler)


class SlurmLauncher:
    """Submits each job with submitit and polls it; unfinished jobs are cancelled when the
    comparison stops early (a training run checkpoints on the SIGTERM of ``scancel``)."""

    def __init__(self, options, folder: Path):
        import submitit

        if options.cluster is None and submitit.SlurmExecutor.affinity() < 0:
            raise SynthbenchError("--launcher slurm: no Slurm here (sbatch not found); run it on the cluster's "
                                  "login node, or use --launcher processes")
        self.options, self.folder = options, Path(folder)
        self.slots = options.parallel or 10**6
        self.jobs: dict[str, Any] = {}
        self.executors: dict[int, Any] = {}

    def _executor(self, tasks: int):
        if tasks not in self.executors:
            import submitit

            o = self.options
            executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=o.cluster)
            gpus = o.gpus_per_node if tasks > 1 else min(o.gpus_per_node, 1)
            params: dict[str, Any] = {"timeout_min": int(o.time_min), "gpus_per_node": gpus, "name": "synthbench",
                                      "tasks_per_node": tasks // (o.nodes if tasks > 1 else 1),
                                      "nodes": o.nodes if tasks > 1 else 1}
            if o.cpus_per_task:
                params["cpus_per_task"] = int(o.cpus_per_task)
            if o.mem_gb:
                params["mem_gb"] = float(o.mem_gb)
            slurm = {"slurm_partition": o.partition, "slurm_account": o.account,
                     "slurm_additional_parameters": dict(o.sbatch) or None}
            params.update({k: v for k, v in slurm.items() if v is not None})
            try:
                executor.update_parameters(**params)
            except (ValueError, TypeError) as exc:
                raise SynthbenchError(f"--launcher slurm: {exc}") from exc
            self.executors[tasks] = executor
        return self.executors[tasks]

    def start(self, job: Job) -> Job:
        job.folder.mkdir(parents=True, exist_ok=True)
        executor = self._executor(job.tasks)
        executor.update_parameters(name=f"synthbench-{job.kind}")
        self.jobs[job.key] = executor.submit(SubmititJob(job))
        return job

    def poll(self, job: Job) -> Outcome | None:
        submitted = self.jobs[job.key]
        if not submitted.done():
            return None
        del self.jobs[job.key]
        log = Path(submitted.paths.stderr)
        if job.done():
            return Outcome(job, "finished", log=log)
        try:
            problem = submitted.exception()
        except Exception as exc:  # noqa: BLE001 - submitit raises when the job left no result at all
            problem = exc
        last = str(problem).strip().splitlines()[-1] if problem and str(problem).strip() else "no result"
        return Outcome(job, "failed", error=recorded_error(job, f"Slurm job {submitted.job_id}: {last}"), log=log)

    def close(self) -> None:
        for submitted in self.jobs.values():
            with contextlib.suppress(Exception):
                submitted.cancel(check=False)
        self.jobs.clear()
