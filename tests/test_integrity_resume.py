"""Runs never lose work (issue 14): resume at stage boundaries of ``ours`` (stop, kill -9, SIGINT,
SIGTERM), a kill before the first checkpoint, a corrupt newest checkpoint, leftovers of killed
writers, fsync before rename, and ``--stop-after`` for one invocation only.

Kills and signals hit real child processes at a chosen step: the child patches one engine
function to kill itself (``kill -9`` right after a checkpoint is written, SIGINT/SIGTERM during
a step), so the moment is exact and the test is deterministic.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from synthbench.engine import load_synthesizer, rundir, train
from synthbench.errors import SynthbenchError

# ours at 64 px with narrow networks. 20 train slices / batch 4 = 5 steps per epoch; 4 epochs
# capped at 8 steps -> stages global 2, local 2, joint 4: boundaries after steps 2 and 4.
TINY = {"ngf": 8, "ndf": 8, "n_blocks": 2, "desum_channels": 16, "dfm_channels": 16}
DET = {"deterministic": True, "batch_size": 4, "train_split": "train", "checkpoint_every": 100, "epochs": 4, "max_steps": 8}
PIX = {"ngf": 8, "ndf": 8}


def _weights(run) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, sd in load_synthesizer(run).state_dict().items() for k, v in sd.items()}


def _assert_same_weights(a, b) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, differ[:5]


def _status(run) -> str:
    return json.loads((run / "manifest.json").read_text())["status"]


@pytest.fixture(scope="module")
def ours_full(phantom_dir, tmp_path_factory):
    """The uninterrupted reference run."""
    run = tmp_path_factory.mktemp("ours_full") / "run"
    result = train("ours", phantom_dir, run, "smoke", options=TINY, overrides=DET, show_progress=False)
    assert result.status == "finished" and result.steps == 8
    return run


def _child(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


# ------------------------------------------------------------------ stage boundaries
def test_stop_at_each_stage_boundary_resumes_to_equal_weights(phantom_dir, tmp_path, ours_full):
    """Old behaviour: the resume after a stop at step 2 raised ValueError (optimizer groups)."""
    run = tmp_path / "run"
    r1 = train("ours", phantom_dir, run, "smoke", options=TINY, overrides={**DET, "stop_after_steps": 2}, show_progress=False)
    assert r1.status == "stopped" and r1.steps == 2
    ck = torch.load(run / "checkpoints" / "ckpt_0000002.pt", weights_only=True)
    assert ck["position"]["stage_index"] == 1 and ck["optimizer_stage"] == "global"
    r2 = train("ours", phantom_dir, run, resume=True, overrides={"stop_after_steps": 2}, show_progress=False)
    assert r2.status == "stopped" and r2.steps == 4  # the local -> joint boundary
    r3 = train("ours", phantom_dir, run, resume=True, show_progress=False)
    assert r3.status == "finished" and r3.steps == 8
    _assert_same_weights(ours_full, run)
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == list(range(1, 9))


def test_boundary_checkpoint_of_an_older_version_resumes(phantom_dir, tmp_path, ours_full):
    """Checkpoints written before ``optimizer_stage`` existed hold the finished stage's optimizer
    state at a boundary; they resume too (old behaviour: ValueError on every retry)."""
    run = tmp_path / "run"
    train("ours", phantom_dir, run, "smoke", options=TINY, overrides={**DET, "stop_after_steps": 2}, show_progress=False)
    path = run / "checkpoints" / "ckpt_0000002.pt"
    old = torch.load(path, weights_only=True)
    del old["optimizer_stage"]
    torch.save(old, path)
    assert train("ours", phantom_dir, run, resume=True, show_progress=False).status == "finished"
    _assert_same_weights(ours_full, run)


KILL_AFTER_CHECKPOINT = """
    import os, signal, sys
    from synthbench.engine import rundir, train
    kill_at = int(sys.argv[3])
    save = rundir.save_checkpoint
    def save_then_die(run_dir, step, payload, keep_last_n):
        path = save(run_dir, step, payload, keep_last_n)
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return path
    rundir.save_checkpoint = save_then_die
    train("ours", sys.argv[1], sys.argv[2], "smoke", options=%r, overrides=%r, show_progress=False)
"""


def test_kill_9_at_a_stage_boundary_resumes_to_equal_weights(phantom_dir, tmp_path, ours_full):
    run = tmp_path / "run"
    child = _child(KILL_AFTER_CHECKPOINT % (TINY, {**DET, "checkpoint_every": 2}), str(phantom_dir), str(run), "4")
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert _status(run) == "running"  # killed: nothing recorded the end
    assert [p.name for p in rundir.list_checkpoints(run)][-1] == "ckpt_0000004.pt"  # the local -> joint boundary
    result = train("ours", phantom_dir, run, resume=True, show_progress=False)
    assert result.status == "finished" and result.steps == 8
    _assert_same_weights(ours_full, run)


SIGNAL_DURING_STEP = """
    import os, signal, sys
    from synthbench.engine import loop
    at, sig = int(os.environ["SIGNAL_AT_STEP"]), getattr(signal, os.environ["SIGNAL_NAME"])
    iteration = loop._iteration
    def iteration_then_signal(*args):
        if args[-1] + 1 == at:  # args[-1]: steps done before this one
            os.kill(os.getpid(), sig)
        return iteration(*args)
    loop._iteration = iteration_then_signal
    from synthbench.cli.main import main
    sys.argv = ["synthbench", *sys.argv[1:]]
    main()
"""


@pytest.mark.parametrize(("sig", "at"), [("SIGINT", 2), ("SIGTERM", 4)])
def test_signal_at_a_stage_boundary_checkpoints_and_resumes_to_equal_weights(phantom_dir, tmp_path, ours_full, sig, at):
    """Old behaviour: SIGINT saved nothing and recorded 'failed'; SIGTERM killed the process."""
    run = tmp_path / "run"
    args = ["train", "ours", "--data", str(phantom_dir), "--protocol", "smoke", "--out", str(run), "--quiet",
            *[f"--option={k}={v}" for k, v in TINY.items()], *[f"--set={k}={v}" for k, v in DET.items()]]
    child = _child(SIGNAL_DURING_STEP, *args, env={"SIGNAL_AT_STEP": str(at), "SIGNAL_NAME": sig})
    assert child.returncode == 130, child.stderr
    assert f"interrupted by {sig} after step {at}" in child.stderr
    assert f"resume with: synthbench train ours --data {phantom_dir} --out {run} --resume" in child.stderr
    assert "Traceback" not in child.stderr
    assert _status(run) == "interrupted"
    assert [p.name for p in rundir.list_checkpoints(run)] == [f"ckpt_{at:07d}.pt"]
    assert train("ours", phantom_dir, run, resume=True, show_progress=False).status == "finished"
    _assert_same_weights(ours_full, run)


# ------------------------------------------------------------------ before the first checkpoint
def test_resume_before_the_first_checkpoint_starts_from_step_0(phantom_dir, tmp_path, monkeypatch):
    """Old behaviour: --resume said 'no checkpoint to resume from' and a new start 'not empty'."""
    from synthbench.engine import loop

    full = train("pix2pix", phantom_dir, tmp_path / "full", "smoke", options=PIX,
                 overrides={"checkpoint_every": 100}, show_progress=False)
    iteration = loop._iteration

    def crash_at_step_3(*args):
        if args[-1] == 2:
            raise RuntimeError("simulated crash")
        return iteration(*args)

    run = tmp_path / "run"
    monkeypatch.setattr(loop, "_iteration", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated"):
        train("pix2pix", phantom_dir, run, "smoke", options=PIX, overrides={"checkpoint_every": 100}, show_progress=False)
    monkeypatch.undo()
    assert rundir.list_checkpoints(run) == [] and (run / "config.json").is_file()
    with pytest.raises(SynthbenchError, match="--resume"):
        train("pix2pix", phantom_dir, run, "smoke", options=PIX, show_progress=False)
    result = train("pix2pix", phantom_dir, run, resume=True, show_progress=False)
    assert result.status == full.status == "finished" and result.steps == 4
    _assert_same_weights(tmp_path / "full", run)
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_directory_of_a_run_killed_before_its_config_accepts_a_new_start(phantom_dir, tmp_path):
    run = tmp_path / "run"
    for sub in rundir.SUBDIRS:
        (run / sub).mkdir(parents=True)
    (run / ".synthbench.lock").write_text("{}")
    (run / ".config.json.abcd1234.tmp").write_text("{")
    with pytest.raises(SynthbenchError, match="nothing to resume"):
        train("pix2pix", phantom_dir, run, resume=True, show_progress=False)
    assert train("pix2pix", phantom_dir, run, "smoke", options=PIX, show_progress=False).status == "finished"
    assert not (run / ".config.json.abcd1234.tmp").exists()


# ------------------------------------------------------------------ corrupt newest checkpoint, leftovers
def test_corrupt_newest_checkpoint_falls_back_and_says_so(phantom_dir, tmp_path, capsys):
    """Old behaviour: resume failed on the newest checkpoint ('cannot read checkpoint')."""
    overrides = {"checkpoint_every": 1, "keep_last_n": 5, "max_steps": 5, "epochs": 2}
    train("pix2pix", phantom_dir, tmp_path / "full", "smoke", options=PIX, overrides=overrides, show_progress=False)
    run = tmp_path / "run"
    train("pix2pix", phantom_dir, run, "smoke", options=PIX, overrides={**overrides, "stop_after_steps": 3},
          show_progress=False)
    newest = run / "checkpoints" / "ckpt_0000003.pt"
    newest.write_bytes(newest.read_bytes()[:4000])  # cut by a host crash
    (run / "checkpoints" / ".ckpt_0000004.pt.k2j4h5g6.pt.tmp").write_bytes(b"partial")  # a killed writer's file
    capsys.readouterr()
    assert train("pix2pix", phantom_dir, run, resume=True, show_progress=False).status == "finished"
    err = capsys.readouterr().err
    assert "ckpt_0000003.pt" in err and "resuming from ckpt_0000002.pt" in err
    assert ".ckpt_0000004.pt.k2j4h5g6.pt.tmp" in err  # said, then removed
    assert not list((run / "checkpoints").glob(".*.tmp"))
    _assert_same_weights(tmp_path / "full", run)


def test_no_readable_checkpoint_is_an_error_naming_them(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt_0000002.pt").write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(SynthbenchError, match="no checkpoint is readable.*ckpt_0000002.pt"):
        rundir.load_latest_checkpoint(run)


def test_prepare_removes_staging_folders_of_a_killed_prepare(tmp_path):
    from synthbench.data.prepare import PhantomSource, PrepareOptions, prepare

    out = tmp_path / "data"
    leftovers = [tmp_path / ".data.staging.a1b2c3d4", tmp_path / ".data.x9y8z7w6.tmp", tmp_path / ".data.old"]
    for folder in leftovers:
        folder.mkdir()
        (folder / "train_aug_image.npy").write_bytes(b"x" * 100)
    other = tmp_path / ".database.staging.a1b2c3d4"  # another target's: kept
    other.mkdir()
    said = []
    prepare(PhantomSource(patients=3, slices_per_patient=2, size=32), out,
            PrepareOptions(size=32, train_factor=1, test_factor=1, keep_all_slices=True, workers=1), say=said.append)
    assert not any(p.exists() for p in leftovers) and other.exists()
    assert any("removed 3 folder(s)" in s for s in said)
    assert any("on disk" in s and "free" in s for s in said)  # the expected size, said before writing


# ------------------------------------------------------------------ durability
def test_checkpoints_final_weights_and_prepared_arrays_are_fsynced_before_the_rename(phantom_dir, tmp_path, monkeypatch):
    """Old behaviour: no fsync at all (a host crash could leave a renamed, empty checkpoint)."""
    import synthbench.io as sio

    events: list[tuple[str, str]] = []
    fsync, replace = sio.fsync_path, os.replace
    monkeypatch.setattr(sio, "fsync_path", lambda p: (events.append(("fsync", str(p))), fsync(p))[1])
    monkeypatch.setattr(sio.os, "replace", lambda a, b: (events.append(("replace", f"{a}>{b}")), replace(a, b))[1])
    run = tmp_path / "run"
    train("pix2pix", phantom_dir, run, "smoke", options=PIX, show_progress=False)
    for target in (run / "checkpoints" / "ckpt_0000004.pt", run / "final.pt"):
        i = next(i for i, (kind, what) in enumerate(events) if kind == "replace" and what.endswith(f">{target}"))
        tmp = events[i][1].split(">")[0]
        assert ("fsync", tmp) in events[:i], target

    from synthbench.data.prepare import PhantomSource, PrepareOptions, prepare

    events.clear()
    out = tmp_path / "data"
    prepare(PhantomSource(patients=3, slices_per_patient=2, size=32), out,
            PrepareOptions(size=32, train_factor=1, test_factor=1, keep_all_slices=True, workers=1))
    i = next(i for i, (kind, what) in enumerate(events) if kind == "replace" and what.endswith(f">{out}"))
    tmp = events[i][1].split(">")[0]
    synced = {what for kind, what in events[:i] if kind == "fsync"}
    for split in ("train", "train_aug"):
        assert f"{tmp}/splits/{split}/image.npy" in synced and f"{tmp}/splits/{split}/label.npy" in synced


# ------------------------------------------------------------------ --stop-after
def test_stop_after_applies_to_one_invocation_only(phantom_dir, tmp_path):
    """Old behaviour: stop_after_steps was recorded in config.json and every resume stopped again."""
    run = tmp_path / "run"
    overrides = {"max_steps": 9, "epochs": 2, "checkpoint_every": 100}
    r1 = train("pix2pix", phantom_dir, run, "smoke", options=PIX, overrides={**overrides, "stop_after_steps": 3},
               show_progress=False)
    assert r1.status == "stopped" and r1.steps == 3
    assert json.loads((run / "config.json").read_text())["protocol"]["stop_after_steps"] is None
    r2 = train("pix2pix", phantom_dir, run, resume=True, show_progress=False)
    assert r2.status == "finished" and r2.steps == 9
