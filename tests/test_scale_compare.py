"""A comparison as jobs (issue 18): ``--launcher processes --parallel 2`` on CPU and ``--launcher slurm``
through submitit's local executor give the numbers of ``--launcher local``; a training job
signalled as Slurm does before a time-out or preemption writes its checkpoint, is requeued and
resumes; a second invocation reuses every job. Smoke size: one tiny method, two seeds."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from synthbench.compare import CompareConfig, parse_methods, run_comparison
from synthbench.jobs.launchers import LaunchOptions


def _config(data: Path, out: Path) -> CompareConfig:
    return CompareConfig(
        methods=parse_methods("pix2pix"), out_dir=out, data=str(data), protocol="smoke", seeds=2,
        protocol_overrides={"epochs": 4, "max_steps": 60}, method_options={"pix2pix": {"ngf": 8, "ndf": 8}},
        experiments=("replace",), ratios=(0.0, 0.5), unet_overrides={"steps": 3}, metrics=("psnr", "ssim"), folds=2,
        device="cpu", show_progress=False,
    )


def _numbers(out: Path) -> tuple[str, str]:
    return (out / "report" / "results.csv").read_text(), (out / "downstream" / "replace" / "results.csv").read_text()


@pytest.fixture(scope="module")
def local_numbers(phantom_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "cmp"
    outcome = run_comparison(_config(phantom_dir, out))
    assert not outcome.failures and not outcome.failed_jobs
    return _numbers(out)


def _job_records(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "jobs").glob("*/result.json")}


def test_processes_launcher_on_cpu_gives_the_local_numbers_and_reuses_on_rerun(phantom_dir, tmp_path, local_numbers):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("--parallel 2 on CPU needs 2 cores")
    out = tmp_path / "cmp"
    outcome = run_comparison(_config(phantom_dir, out), LaunchOptions(kind="processes", parallel=2))
    assert not outcome.failures and not outcome.failed_jobs
    assert _numbers(out) == local_numbers
    records = _job_records(out)
    # each U-Net training is its own job (issue 21: they run side by side); the 0% one (real images
    # only, the same for both seeds) once; the downstream jobs only assemble the tables
    assert sorted(name.split("-")[0] for name in records) == (
        ["downstream"] * 2 + ["evaluate"] * 2 + ["synthesize"] * 2 + ["train"] * 2 + ["unet"] * 3)
    assert len(list((out / "downstream" / "configs").glob("*.json"))) == 3
    for name in records:
        assert (out / "jobs" / name / "log.txt").is_file()  # each job ran in a worker process with its own log
        if name.startswith("downstream"):
            assert json.loads((out / "jobs" / name / "result.json").read_text())["result"]["seconds"] == 0.0
    run_comparison(_config(phantom_dir, out), LaunchOptions(kind="processes", parallel=2))
    assert _job_records(out) == records  # nothing ran again


def test_slurm_through_submitit_requeues_a_signalled_training_that_resumes(phantom_dir, tmp_path, local_numbers):
    out = tmp_path / "cmp"
    errors: list[BaseException] = []

    def compare():
        try:
            outcome = run_comparison(_config(phantom_dir, out), LaunchOptions(kind="slurm", cluster="local", parallel=2))
            assert not outcome.failures and not outcome.failed_jobs, (outcome.failures, outcome.failed_jobs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=compare)
    thread.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and thread.is_alive():  # the seed-0 training has done a step or two
        logs = list(out.glob("runs/pix2pix-seed0-*/log.jsonl"))
        records = list(out.glob("jobs/train-pix2pix-seed0-*/job.json"))
        if logs and records and len(logs[0].read_text().splitlines()) >= 1:
            break
        time.sleep(0.05)
    else:
        thread.join()
        pytest.fail(f"training never started: {errors}")
    pid = json.loads(records[0].read_text())["pid"]
    os.kill(pid, signal.SIGUSR2)  # what Slurm sends signal_delay_s before the time limit, or on preemption
    thread.join(timeout=600)
    assert not thread.is_alive() and not errors, errors
    run_dir = logs[0].parent
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest.get("resumed_at"), manifest
    slurm_logs = "".join(p.read_text() for p in (out / "slurm").rglob("*_log.*"))  # .out: INFO, .err: ours
    assert "Requeued job" in slurm_logs and "SIGTERM received" in slurm_logs
    assert _numbers(out) == local_numbers  # the resumed run ends where an uninterrupted one does


def test_a_training_job_with_two_tasks_is_one_ddp_run(phantom_dir, tmp_path):
    """gpus_per_node=2: the training job has 2 tasks, which join one DDP run (gloo on CPU) from
    submitit's job environment; rank 0 records the job."""
    from dataclasses import replace

    from synthbench.compare import train_job
    from synthbench.jobs import Job, run_jobs
    from synthbench.jobs.slurm import SlurmLauncher

    cfg = replace(_config(phantom_dir, tmp_path / "cmp"), protocol_overrides={"max_steps": 2})
    job = Job(key="ddp", kind="train", name="train ddp", folder=tmp_path / "jobs" / "ddp", func=train_job,
              kwargs={"cfg": cfg, "spec": cfg.methods[0], "seed": 0, "data_root": str(phantom_dir)}, tasks=2)
    launcher = SlurmLauncher(LaunchOptions(kind="slurm", cluster="local", gpus_per_node=2), tmp_path / "slurm")
    outcome = run_jobs([job], launcher, poll_seconds=0.2)["ddp"]
    assert outcome.status == "finished", (outcome.error, outcome.log and outcome.log.read_text())
    resolved = json.loads((Path(job.result()["run_dir"]) / "config.json").read_text())["resolved"]
    assert (resolved["world_size"], resolved["batch_size_per_rank"], resolved["global_batch_size"]) == (2, 2, 4)
