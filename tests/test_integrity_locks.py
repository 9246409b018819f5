"""One writer per directory (issue 14): run, comparison and data-output locks, held for the
process's life and dropped by the OS when the holder dies, even by ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from synthbench.errors import SynthbenchError
from synthbench.locking import LOCK_NAME, lock_directory, lock_target


def test_second_holder_is_refused_with_pid_and_host(tmp_path):
    held = lock_directory(tmp_path / "run")
    try:
        assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(SynthbenchError) as err:
            lock_directory(tmp_path / "run")
        message = str(err.value)
        assert "\n" not in message and str(tmp_path / "run") in message
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    finally:
        held.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released: the lock file is gone
    lock_directory(tmp_path / "run").release()  # free again


def test_a_lock_file_deleted_by_its_previous_holder_is_not_trusted(tmp_path, monkeypatch):
    """B opened the lock file while A held it; A released (deleting it) and C locked a new one.
    B's flock on the deleted file succeeds, but B must see that and meet C's lock."""
    from synthbench import locking

    a = lock_directory(tmp_path)
    stale = os.open(tmp_path / LOCK_NAME, os.O_RDWR)
    a.release()
    c = lock_directory(tmp_path)
    try:
        first = [stale]
        real_open = os.open
        monkeypatch.setattr(locking.os, "open", lambda *args, **kw: first.pop() if first else real_open(*args, **kw))
        with pytest.raises(SynthbenchError, match=f"in use by another process \\(pid {os.getpid()} "):
            locking.DirectoryLock(tmp_path / LOCK_NAME, "run directory").acquire()
    finally:
        c.release()


def test_lock_of_a_killed_holder_is_free(tmp_path):
    """A holder killed with SIGKILL runs no clean-up; the OS drops its lock."""
    code = ("import sys, time; from synthbench.locking import lock_directory; lock_directory(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(SynthbenchError, match=f"pid {child.pid} "):
            lock_directory(tmp_path / "run")
    finally:
        child.kill()
        child.wait()
    lock_directory(tmp_path / "run").release()


def test_data_output_lock_is_beside_the_target(tmp_path):
    held = lock_target(tmp_path / "data", "the prepared data set's output")
    try:
        assert (tmp_path / ".data.lock").is_file() and not (tmp_path / "data").exists()  # beside, not inside
        from synthbench.data.prepare import PhantomSource, prepare

        with pytest.raises(SynthbenchError, match="in use by another process"):
            prepare(PhantomSource(patients=3, slices_per_patient=2, size=32), tmp_path / "data")
    finally:
        held.release()


def test_comparison_directory_is_locked(tmp_path):
    """Old behaviour: two compares on one --out trained the same runs twice."""
    from synthbench.compare import CompareConfig, parse_methods, run_comparison

    held = lock_directory(tmp_path / "cmp", "comparison directory")
    try:
        cfg = CompareConfig(methods=parse_methods("pix2pix"), out_dir=tmp_path / "cmp", protocol="smoke",
                            experiments=(), show_progress=False)
        with pytest.raises(SynthbenchError, match="comparison directory is in use"):
            run_comparison(cfg)
        assert not (tmp_path / "cmp" / "compare.json").exists()
    finally:
        held.release()


def test_two_concurrent_trains_second_exits_2_at_once(phantom_dir, tmp_path):
    """Two real ``synthbench train`` processes on one --out. Old behaviour: both ran, their logs
    interleaved and one overwrote the other's weights. Now the second exits 2 with one line
    while the first is still training; the first then stops on SIGINT with exit 130."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "synthbench.cli.main", "train", "pix2pix", "--data", str(phantom_dir), "--out", str(run),
            "--protocol", "smoke", "--option", "ngf=8", "--option", "ndf=8", "--epochs", "10000",
            "--set", "max_steps=1000000", "--set", "checkpoint_every=1000000", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while not (run / "log.jsonl").is_file() or not (run / "log.jsonl").read_text():  # training has begun
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=240)
        assert first.poll() is None  # the second gave up while the first still trains
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        assert f"in use by another process (pid {first.pid} on host {socket.gethostname()}" in lines[0]
    finally:
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=240)
    assert first.returncode == 130, err
    assert "resume with: synthbench train pix2pix" in err
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))  # one writer: no interleaved records
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["steps"] == len(steps)
    assert (run / "checkpoints" / f"ckpt_{len(steps):07d}.pt").is_file()
