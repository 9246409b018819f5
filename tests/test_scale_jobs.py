"""Jobs and launchers (issue 18): the DAG, idempotence, failures reported with their log while the
others go on, child processes and submitit's local executor, launcher options from the suite
file and the command line. Toy jobs: no training here (tests/test_scale_compare.py runs one)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.errors import SynthbenchError
from synthbench.jobs import Job, run_jobs
from synthbench.jobs.launchers import LaunchOptions, LocalLauncher, ProcessLauncher


def write_text(path: str, text: str) -> dict:
    """A toy job: append one line to ``path`` (the number of lines counts the runs)."""
    with open(path, "a") as f:
        f.write(text + "\n")
    return {"text": text}


def concat(inputs: list[str], path: str) -> dict:
    text = "".join(Path(p).read_text() for p in inputs)
    Path(path).write_text(text)
    return {"chars": len(text)}


def fail(message: str) -> dict:
    raise RuntimeError(message)


def die() -> dict:
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def nap(seconds: float) -> dict:
    time.sleep(seconds)
    return {}


def say(marker: str) -> dict:
    """A toy job that writes through Python and through file descriptor 2 (as native code does)."""
    print(f"python says {marker}")
    os.write(2, f"native says {marker}\n".encode())
    return {"pid": os.getpid()}


@pytest.fixture(autouse=True)
def _children_import_this_module(monkeypatch):
    """Child processes unpickle the toy functions by module name (pytest put tests/ on sys.path)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                     os.environ.get("PYTHONPATH")])))


def _job(tmp: Path, key: str, func, deps=(), **kwargs) -> Job:
    return Job(key=key, kind="toy", name=f"toy {key}", folder=tmp / "jobs" / key, func=func, kwargs=kwargs,
               deps=tuple(deps))


def _graph(tmp: Path, fail_b: bool = False) -> list[Job]:
    a = _job(tmp, "a", write_text, path=str(tmp / "a.txt"), text="A")
    b = (_job(tmp, "b", fail, message="b broke\nsecond line") if fail_b
         else _job(tmp, "b", write_text, path=str(tmp / "b.txt"), text="B"))
    c = _job(tmp, "c", concat, deps=("a", "b"), inputs=[str(tmp / "a.txt"), str(tmp / "b.txt")], path=str(tmp / "c.txt"))
    d = _job(tmp, "d", write_text, deps=("a",), path=str(tmp / "d.txt"), text="D")
    return [a, b, c, d]


def test_dag_runs_in_dependency_order_and_a_second_run_reuses_everything(tmp_path):
    order = []
    outcomes = run_jobs(_graph(tmp_path), LocalLauncher(), on_event=lambda e, j, o: order.append((e, j.key)))
    assert {k: o.status for k, o in outcomes.items()} == dict.fromkeys("abcd", "finished")
    starts = [k for e, k in order if e == "start"]
    assert starts.index("c") > max(starts.index("a"), starts.index("b")) and starts.index("d") > starts.index("a")
    assert (tmp_path / "c.txt").read_text() == "A\nB\n"
    assert json.loads((tmp_path / "jobs" / "c" / "result.json").read_text())["result"] == {"chars": 4}
    again = run_jobs(_graph(tmp_path), LocalLauncher())
    assert {o.status for o in again.values()} == {"reused"}
    assert (tmp_path / "a.txt").read_text() == "A\n"  # not run twice


def test_a_remade_input_reruns_what_depends_on_it_and_nothing_else(tmp_path):
    run_jobs(_graph(tmp_path), LocalLauncher())
    (tmp_path / "jobs" / "b" / "result.json").unlink()  # b's record is gone: b runs again
    again = run_jobs(_graph(tmp_path), LocalLauncher())
    assert {k: o.status for k, o in again.items()} == {"a": "reused", "b": "finished", "c": "finished", "d": "reused"}


def test_a_failed_job_blocks_its_dependents_and_the_others_go_on(tmp_path):
    outcomes = run_jobs(_graph(tmp_path, fail_b=True), LocalLauncher())
    assert {k: o.status for k, o in outcomes.items()} == {"a": "finished", "b": "failed", "c": "blocked", "d": "finished"}
    assert outcomes["b"].error == "RuntimeError: b broke second line"  # one line
    assert "needs toy b" in outcomes["c"].error
    record = json.loads((tmp_path / "jobs" / "b" / "error.json").read_text())
    assert "Traceback" in record["traceback"]
    # fixed: the same command runs only what is missing (b, then c)
    again = run_jobs(_graph(tmp_path), LocalLauncher())
    assert {k: o.status for k, o in again.items()} == {"a": "reused", "b": "finished", "c": "finished", "d": "reused"}
    assert not (tmp_path / "jobs" / "b" / "error.json").exists()


def test_graph_errors_are_refused(tmp_path):
    a = _job(tmp_path, "a", write_text, path="x", text="x")
    with pytest.raises(SynthbenchError, match="unknown or later job"):
        run_jobs([_job(tmp_path, "b", write_text, deps=("a",), path="x", text="x"), a], LocalLauncher())
    with pytest.raises(SynthbenchError, match="share the key"):
        run_jobs([a, a], LocalLauncher())


def test_done_needs_the_same_key_and_the_outputs(tmp_path):
    out = tmp_path / "out.txt"
    job = Job(key="k1", kind="toy", name="toy", folder=tmp_path / "j", func=write_text,
              kwargs={"path": str(out), "text": "x"}, outputs=(out,))
    run_jobs([job], LocalLauncher())
    assert job.done()
    other = Job(key="k2", kind="toy", name="toy", folder=tmp_path / "j", func=write_text, outputs=(out,))
    assert not other.done()  # another request in the same folder
    out.unlink()
    assert not job.done()  # the output was deleted


def test_child_processes_run_in_parallel_and_failures_name_their_log(tmp_path):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("--parallel 2 on CPU needs 2 cores")
    jobs = _graph(tmp_path, fail_b=True) + [_job(tmp_path, "e", die)]
    launcher = ProcessLauncher(2, tmp_path / "jobs")
    assert launcher.slots == 2
    outcomes = run_jobs(jobs, launcher, poll_seconds=0.05)
    status = {k: o.status for k, o in outcomes.items()}
    assert status == {"a": "finished", "b": "failed", "c": "blocked", "d": "finished", "e": "failed"}
    assert outcomes["b"].error == "RuntimeError: b broke second line"
    assert outcomes["b"].log == tmp_path / "jobs" / "b" / "log.txt"
    assert "RuntimeError: b broke" in outcomes["b"].log.read_text()  # the traceback is in the log
    assert "killed by a signal" in outcomes["e"].error
    assert (tmp_path / "d.txt").read_text() == "D\n"
    a_record = json.loads((tmp_path / "jobs" / "a" / "job.json").read_text())
    assert a_record["pid"] != os.getpid()  # ran in a child process


def test_a_worker_runs_job_after_job_each_with_its_own_log(tmp_path):
    """One worker process imports torch once for many jobs (issue 21: a few seconds per job before)."""
    jobs = [_job(tmp_path, k, say, marker=k) for k in ("a", "b", "c")]
    outcomes = run_jobs(jobs, ProcessLauncher(1, tmp_path / "jobs"), poll_seconds=0.05)
    assert all(o.status == "finished" for o in outcomes.values())
    pids = {j.result()["pid"] for j in jobs}
    assert len(pids) == 1 and os.getpid() not in pids
    for key in "abc":
        log = (tmp_path / "jobs" / key / "log.txt").read_text()
        assert f"python says {key}" in log and f"native says {key}" in log
        assert all(f"says {other}" not in log for other in "abc" if other != key)


def test_prestarted_workers_run_the_jobs_and_idle_ones_end_on_close(tmp_path):
    """A comparison starts its workers before preparing the data (their imports overlap it)."""
    launcher = ProcessLauncher(2, tmp_path / "jobs")
    launcher.prestart()
    pids = {w.process.pid for w in launcher.workers}
    processes = [w.process for w in launcher.workers]
    jobs = [_job(tmp_path, k, say, marker=k) for k in ("a", "b", "c")]
    run_jobs(jobs, launcher, poll_seconds=0.05)  # closes the launcher at the end
    assert {j.result()["pid"] for j in jobs} <= pids
    assert all(p.poll() is not None for p in processes)  # no worker outlives the comparison


def test_a_worker_killed_in_a_job_fails_that_job_and_a_new_worker_runs_the_next(tmp_path):
    jobs = [_job(tmp_path, "dies", die), _job(tmp_path, "after", say, marker="after")]
    outcomes = run_jobs(jobs, ProcessLauncher(1, tmp_path / "jobs"), poll_seconds=0.05)
    assert outcomes["dies"].status == "failed" and "killed by a signal" in outcomes["dies"].error
    assert outcomes["after"].status == "finished"
    dead = json.loads((tmp_path / "jobs" / "dies" / "job.json").read_text())["pid"]
    assert jobs[1].result()["pid"] != dead


def test_processes_launcher_defaults_and_its_older_name(tmp_path):
    pytest.importorskip("torch")
    import torch

    from synthbench.jobs.launchers import DEFAULT_CPU_WORKERS, make_launcher

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: one worker per GPU")
    cores = os.cpu_count() or 1
    for kind in ("processes", "gpus"):
        launcher = make_launcher(LaunchOptions(kind=kind), tmp_path)
        assert isinstance(launcher, ProcessLauncher)
        assert launcher.slots == min(cores, DEFAULT_CPU_WORKERS) and launcher.threads == max(1, cores // launcher.slots)


def test_parallel_is_bounded_by_the_cores_without_a_gpu(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: --parallel is bounded by the GPUs")
    with pytest.raises(SynthbenchError, match="CPU core"):
        ProcessLauncher((os.cpu_count() or 1) + 1, tmp_path)


def test_slurm_launcher_through_submitits_local_executor(tmp_path):
    """Same pickling and job folders as on a cluster; a failure names its Slurm log."""
    from synthbench.jobs.slurm import SlurmLauncher

    launcher = SlurmLauncher(LaunchOptions(kind="slurm", cluster="local", time_min=5), tmp_path / "slurm")
    outcomes = run_jobs(_graph(tmp_path, fail_b=True), launcher, poll_seconds=0.2)
    assert {k: o.status for k, o in outcomes.items()} == {"a": "finished", "b": "failed", "c": "blocked", "d": "finished"}
    assert outcomes["b"].error == "RuntimeError: b broke second line"
    assert outcomes["b"].log.is_file() and outcomes["b"].log.parent.parent == tmp_path / "slurm"
    assert "b broke" in outcomes["b"].log.read_text()


def test_slurm_refuses_a_machine_without_slurm(tmp_path, monkeypatch):
    from synthbench.jobs.slurm import SlurmLauncher

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(SynthbenchError, match="no Slurm here"):
        SlurmLauncher(LaunchOptions(kind="slurm"), tmp_path)


def test_launch_options_are_checked():
    for bad, message in ((LaunchOptions(kind="k8s"), "--launcher must be one of"),
                         (LaunchOptions(kind="gpus", parallel=0), "--parallel must be >= 1"),
                         (LaunchOptions(kind="local", parallel=2), "--parallel needs --launcher processes or slurm")):
        with pytest.raises(SynthbenchError, match=message):
            bad.validate()


def test_suite_launcher_table_and_flags(tmp_path, monkeypatch):
    from synthbench.cli.commands import compare as cli

    seen = {}
    monkeypatch.setattr(cli, "_run", lambda cfg, launch: seen.update(cfg=cfg, launch=launch))
    suite = tmp_path / "s.toml"
    suite.write_text("[compare]\nmethods = ['pix2pix']\n[launcher]\nkind = 'slurm'\npartition = 'gpu'\n"
                     "time_min = 600\ngpus_per_node = 2\nsbatch = { qos = 'high' }\n")
    result = CliRunner().invoke(build_app(), ["bench", "run", str(suite), "--out", str(tmp_path / "o"),
                                              "--account", "proj", "--sbatch", "constraint=h100", "--time", "30"])
    assert result.exit_code == 0, result.output
    launch = seen["launch"]
    assert (launch.kind, launch.partition, launch.time_min, launch.gpus_per_node, launch.account) == (
        "slurm", "gpu", 30, 2, "proj")
    assert launch.sbatch == {"qos": "high", "constraint": "h100"}
    suite.write_text("[compare]\nmethods = ['pix2pix']\n[launcher]\nqueue = 'x'\n")
    bad = CliRunner().invoke(build_app(), ["bench", "run", str(suite), "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "unknown [launcher] keys ['queue']" in bad.stderr
    bad = CliRunner().invoke(build_app(), ["compare", "--methods", "pix2pix", "--sbatch", "qos", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--sbatch takes KEY=VALUE" in bad.stderr


def test_toy_jobs_are_picklable_module_functions():
    import pickle

    job = _job(Path("/tmp"), "a", write_text, path="x", text="y")
    assert pickle.loads(pickle.dumps(job)).func is write_text


def test_readme_slurm_example_submits_these_sbatch_flags(tmp_path, monkeypatch):
    """The README's [launcher] table, through submitit's Slurm executor (sbatch replaced by a
    script that keeps the submission file): one DDP training job of 2 tasks on 2 GPUs, one task
    and one GPU for the other jobs, the signal that triggers the checkpoint and requeue."""
    import re

    import tomllib

    from synthbench.jobs.slurm import SlurmLauncher
    from synthbench.suites import suite_launcher

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Running on a cluster", 1)[1]
    doc = tomllib.loads(re.search(r"```toml\n(.*?)```", section, re.S).group(1))
    options = LaunchOptions(**suite_launcher(doc)).validate()
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in {"srun": "exit 0", "scancel": "exit 0", "sacct": "exit 0",
                       "sbatch": f'cp "$1" "{tmp_path}/submitted-$(ls {tmp_path} | grep -c submitted).sh"\n'
                                 'echo "Submitted batch job 4242"'}.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    launcher = SlurmLauncher(options, tmp_path / "slurm")
    train = Job(key="t", kind="train", name="train x", folder=tmp_path / "jobs" / "t", func=write_text,
                kwargs={"path": "x", "text": "x"}, tasks=options.nodes * options.gpus_per_node)
    evaluate = Job(key="e", kind="evaluate", name="evaluate x", folder=tmp_path / "jobs" / "e", func=write_text,
                   kwargs={"path": "x", "text": "x"})
    launcher.start(train)
    launcher.start(evaluate)
    launcher.close()  # cancels both (scancel)
    script = (tmp_path / "submitted-0.sh").read_text()
    for flag in ("--partition=gpu", "--time=720", "--gpus-per-node=2", "--ntasks-per-node=2", "--nodes=1",
                 "--cpus-per-task=8", "--mem=64GB", "--account=myproject", "--qos=normal", "--constraint=h100",
                 "--signal=USR2@90", "--job-name=synthbench-train"):
        assert f"#SBATCH {flag}\n" in script, flag
    other = (tmp_path / "submitted-1.sh").read_text()
    for flag in ("--gpus-per-node=1", "--ntasks-per-node=1", "--job-name=synthbench-evaluate"):
        assert f"#SBATCH {flag}\n" in other, flag


def test_ctrl_c_of_a_comparison_says_interrupted_and_how_to_resume(tmp_path, monkeypatch):
    """With worker processes the comparison itself gets a bare KeyboardInterrupt (the training that
    checkpoints runs in a worker): the one line still says what happened (it began with '; ')."""
    import synthbench.compare

    def interrupted(cfg, launch):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthbench.compare, "run_comparison", interrupted)
    result = CliRunner().invoke(build_app(), ["compare", "--methods", "pix2pix", "--out", str(tmp_path / "o")])
    assert result.exit_code == 130
    assert result.stderr.startswith("interrupted; run the same command again to resume"), result.stderr


def test_workers_end_when_the_comparison_process_is_killed(tmp_path):
    """kill -9 of the process that started the workers: they get SIGTERM (Linux) instead of
    training on for a comparison that is gone (each is in a 10-minute job here)."""
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    script = ("import sys, time\n"
              "from pathlib import Path\n"
              "from synthbench.jobs import Job\n"
              "from synthbench.jobs.launchers import ProcessLauncher\n"
              "from test_scale_jobs import nap\n"
              f"tmp = Path({str(tmp_path)!r})\n"
              "launcher = ProcessLauncher(2, tmp)\n"
              "launcher.prestart()\n"
              "for k in ('a', 'b'):\n"
              "    launcher.start(Job(key=k, kind='toy', name=k, folder=tmp / k, func=nap, kwargs={'seconds': 600}))\n"
              "print(' '.join(str(w.process.pid) for w in launcher.workers), flush=True)\n"
              "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 60
    while not all((tmp_path / k / "job.json").is_file() for k in "ab") and time.monotonic() < deadline:
        time.sleep(0.1)  # both jobs run (the workers asked for the signal before reading them)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 60
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2]]
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their comparison"

