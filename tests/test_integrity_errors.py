"""Clear errors instead of tracebacks (issue 14): exit 2 and one line naming the file, for a
read-only output folder, a full disk (training and data prepare), a checkpoint with other
shapes, a malicious pickle, ``--set lr=fast``, ``compare --experiments bogus`` and ``--protocol``
with ``--resume``; and prepared data that changed since it was prepared.

Disk-full and read-only cases run twice where possible: with the OS call monkeypatched to fail
(always), and on a real tmpfs mount (only where this process may mount one, e.g. as root).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.engine import load_synthesizer, rundir, train

PIX = ["--option", "ngf=8", "--option", "ndf=8"]


def _cli(*args: str):
    return CliRunner().invoke(build_app(), [str(a) for a in args])


def _one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()  # progress lines may come first; the error is the last one
    assert lines and lines[-1].startswith("error: ") and sum(ln.startswith("error") for ln in lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    assert "Traceback" not in result.output
    return lines[-1]


@contextlib.contextmanager
def tmpfs(path, size: str, read_only: bool = False):
    """A real tmpfs at ``path``; skips the test where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the monkeypatched variant covers this case")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ------------------------------------------------------------------ read-only output, full disk
def test_read_only_output_folder_monkeypatched(phantom_dir, tmp_path, monkeypatch):
    """``mkdir`` of the run directory fails with EROFS (monkeypatched; root ignores chmod).
    Old behaviour: an OSError traceback."""
    import pathlib

    mkdir = pathlib.Path.mkdir

    def read_only_mkdir(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only_mkdir)
    result = _cli("train", "pix2pix", "--data", phantom_dir, "--out", tmp_path / "ro" / "run", "--protocol", "smoke", *PIX)
    _one_error_line(result, str(tmp_path / "ro"), "read-only file system")


def test_read_only_output_folder_on_a_read_only_mount(phantom_dir, tmp_path):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        result = _cli("train", "pix2pix", "--data", phantom_dir, "--out", ro / "run", "--protocol", "smoke", *PIX)
        _one_error_line(result, str(ro / "run"), "read-only file system")
        result = _cli("data", "prepare", "phantom", "--out", ro / "data", "--size", "32")
        _one_error_line(result, str(ro), "read-only file system")


def test_disk_full_while_writing_a_checkpoint_monkeypatched(phantom_dir, tmp_path, monkeypatch):
    """``torch.save`` into the checkpoint fails with ENOSPC. Old behaviour: three chained tracebacks."""
    def full_disk_save(payload, fh):
        fh.write(b"PK\x03\x04partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rundir.torch, "save", full_disk_save)
    run = tmp_path / "run"
    result = _cli("train", "pix2pix", "--data", phantom_dir, "--out", run, "--protocol", "smoke", *PIX, "--quiet")
    _one_error_line(result, str(run / "checkpoints" / "ckpt_0000002.pt"), "No space left on device")
    assert not list((run / "checkpoints").iterdir())  # no partial file left behind
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"


def test_disk_full_in_training_on_a_small_tmpfs(phantom_dir, tmp_path):
    with tmpfs(tmp_path / "small", "200k") as small:
        result = _cli("train", "pix2pix", "--data", phantom_dir, "--out", small / "run", "--protocol", "smoke", *PIX, "--quiet")
        _one_error_line(result, str(small / "run"), "No space left on device")


def test_data_prepare_refuses_when_the_disk_cannot_hold_it(tmp_path, monkeypatch):
    """The expected size is checked before writing (free space monkeypatched to 1 MB).
    Old behaviour: a bare SIGBUS from the memory map once the disk filled."""
    import synthbench.io as sio

    monkeypatch.setattr(sio.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    result = _cli("data", "prepare", "phantom", "--out", tmp_path / "data", "--size", "64", "--patients", "3",
                  "--slices-per-patient", "2", "--workers", "1")
    line = _one_error_line(result, str(tmp_path), "not enough disk space", "1.0 MB free")
    assert "MB" in line.split("needs", 1)[1]
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging left, lock released


def test_data_prepare_write_error_is_one_line_monkeypatched(tmp_path, monkeypatch):
    """A write that fails with ENOSPC in spite of the check (another writer filled the disk)."""
    from synthbench.data import prepared

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(prepared, "_write_array", full)
    result = _cli("data", "prepare", "phantom", "--out", tmp_path / "data", "--size", "32", "--patients", "3",
                  "--slices-per-patient", "2", "--workers", "1")
    _one_error_line(result, "image.npy", "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_data_prepare_on_a_full_tmpfs(tmp_path, monkeypatch):
    """Real ENOSPC from the file system (the free-space check is bypassed to reach the writes)."""
    import synthbench.data.prepare as prep

    monkeypatch.setattr(prep, "require_free_space", lambda *a, **k: None)
    with tmpfs(tmp_path / "small", "300k") as small:
        result = _cli("data", "prepare", "phantom", "--out", small / "data", "--size", "64", "--patients", "4",
                      "--slices-per-patient", "4", "--workers", "1", "--train-factor", "4", "--test-factor", "4")
        _one_error_line(result, str(small), "No space left on device")
        assert list(small.iterdir()) == []


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_with_other_shapes_is_one_line(phantom_dir, tmp_path):
    """Old behaviour: a RuntimeError traceback from load_state_dict."""
    narrow, wide = tmp_path / "narrow", tmp_path / "wide"
    train("pix2pix", phantom_dir, narrow, "smoke", options={"ngf": 8, "ndf": 8}, show_progress=False)
    train("pix2pix", phantom_dir, wide, "smoke", options={"ngf": 16, "ndf": 8}, show_progress=False)
    shutil.copy(wide / "final.pt", narrow / "final.pt")
    from synthbench.errors import SynthbenchError

    with pytest.raises(SynthbenchError) as err:
        load_synthesizer(narrow)
    assert "\n" not in str(err.value) and "final.pt: weights do not fit" in str(err.value) and "size mismatch" in str(err.value)
    shutil.copy(wide / "checkpoints" / "ckpt_0000004.pt", narrow / "checkpoints" / "ckpt_0000004.pt")
    result = _cli("train", "pix2pix", "--data", phantom_dir, "--out", narrow, "--resume", "--max-steps", "6")
    assert result.exit_code == 2  # max_steps may not change on resume: refused before loading
    result = _cli("train", "pix2pix", "--data", phantom_dir, "--out", narrow, "--resume")
    _one_error_line(result, "ckpt_0000004.pt: weights do not fit", "size mismatch")


def test_malicious_pickle_is_refused_without_advising_an_unsafe_load(tmp_path):
    """Old behaviour: torch's message, which advises re-running with weights_only=False."""
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"nets": {}, "x": Evil()}, tmp_path / "evil.pt")
    from synthbench.errors import SynthbenchError

    with pytest.raises(SynthbenchError) as err:
        rundir.load_checkpoint(tmp_path / "evil.pt")
    message = str(err.value)
    assert "\n" not in message and "weights_only" not in message and "refused" in message
    assert not marker.exists()


# ------------------------------------------------------------------ bad arguments, checked up front
def test_set_lr_fast_is_one_line(phantom_dir, tmp_path):
    """Old behaviour: TypeError traceback (can't multiply sequence by non-int of type 'float')."""
    result = _cli("train", "pix2pix", "--data", phantom_dir, "--out", tmp_path / "run", "--set", "lr=fast")
    _one_error_line(result, "lr must be a number, got 'fast'")
    assert not (tmp_path / "run").exists()


def test_compare_with_a_bogus_experiment_fails_before_training(tmp_path):
    """Old behaviour: every method trained, synthesized and was evaluated first."""
    result = _cli("compare", "--methods", "pix2pix", "--protocol", "smoke", "--out", tmp_path / "cmp",
                  "--experiments", "replace,bogus")
    _one_error_line(result, "unknown downstream experiment(s) 'bogus'", "replace, add")
    assert not (tmp_path / "cmp").exists()


def test_protocol_with_resume_must_be_the_recorded_one(phantom_dir, tmp_path):
    """Old behaviour: --protocol was silently ignored by --resume."""
    run = tmp_path / "run"
    assert _cli("train", "pix2pix", "--data", phantom_dir, "--out", run, "--protocol", "smoke", *PIX,
                "--stop-after", "2", "--quiet").exit_code == 0
    result = _cli("train", "pix2pix", "--data", phantom_dir, "--out", run, "--resume", "--protocol", "quick")
    _one_error_line(result, "--protocol quick with --resume", "'smoke'", "config.json")
    ok = _cli("train", "pix2pix", "--data", phantom_dir, "--out", run, "--resume", "--protocol", "smoke", "--quiet")
    assert ok.exit_code == 0, ok.output


# ------------------------------------------------------------------ prepared data verification
@pytest.fixture
def data_copy(phantom_dir, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(phantom_dir, copy)
    return copy


def _flip_byte(path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_train_refuses_a_changed_shard(data_copy, tmp_path):
    """Cheap check at train start. Old behaviour: trained on the changed data under the old hash."""
    shard = data_copy / "splits" / "train_aug" / "image.npy"
    _flip_byte(shard, 200)  # inside the first sampled block
    result = _cli("train", "pix2pix", "--data", data_copy, "--out", tmp_path / "run", "--protocol", "smoke", *PIX)
    _one_error_line(result, str(shard), "changed since it was prepared")
    with open(shard, "ab") as fh:
        fh.write(b"\0")
    result = _cli("train", "pix2pix", "--data", data_copy, "--out", tmp_path / "run", "--protocol", "smoke", *PIX)
    _one_error_line(result, str(shard), "bytes, the manifest records")


def test_data_verify_finds_a_change_the_cheap_check_misses(tmp_path):
    from synthbench.data.prepared import FINGERPRINT_BLOCK, PreparedDataset
    from synthbench.testing import write_tiny_dataset

    data = write_tiny_dataset(tmp_path / "data", num_classes=4, size=128, count=60)  # 1.9 MB of images
    ok = _cli("data", "verify", data)
    assert ok.exit_code == 0 and "ok" in ok.stdout, ok.output
    shard = data / "splits" / "train" / "image.npy"
    assert shard.stat().st_size > 20 * FINGERPRINT_BLOCK
    _flip_byte(shard, FINGERPRINT_BLOCK + 7)  # between the first two sampled blocks
    PreparedDataset(data).check_files()  # the cheap check cannot see it ...
    result = _cli("data", "verify", data)
    _one_error_line(result, str(shard), "sha256 differs")  # ... the full hash does


def test_data_verify_of_a_data_set_prepared_before_file_records(data_copy):
    manifest = json.loads((data_copy / "manifest.json").read_text())
    del manifest["files"]
    (data_copy / "manifest.json").write_text(json.dumps(manifest))
    ok = _cli("data", "verify", data_copy)
    assert ok.exit_code == 0 and "content hash recomputed" in ok.stdout
    _flip_byte(data_copy / "splits" / "train" / "label.npy", 300)
    _one_error_line(_cli("data", "verify", data_copy), "content hash differs")


def test_data_prepare_states_its_size_before_writing_and_stages_nothing_twice(tmp_path, monkeypatch):
    """Issue 22: prepare was silent for 18 min and needed the augmented data twice on disk.
    Now it says the size before writing, checks it against the free space and moves the staged
    augmented arrays into place."""
    import synthbench.data.prepare as prep

    checked = []
    monkeypatch.setattr(prep, "require_free_space", lambda folder, needed, what: checked.append(needed))
    moved = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append((str(a), str(b))), replace(a, b))[1])
    result = _cli("data", "prepare", "phantom", "--out", tmp_path / "data", "--size", "32", "--patients", "3",
                  "--slices-per-patient", "2", "--workers", "1", "--train-factor", "3", "--test-factor", "5")
    assert result.exit_code == 0, result.output
    said = result.stderr
    assert "at 32 px" in said and "on disk;" in said and "free in" in said
    assert "augmenting train_aug" in said and "writing" in said
    arrays = sum(p.stat().st_size for p in (tmp_path / "data").rglob("*.npy"))
    headers = len(list((tmp_path / "data").rglob("*.npy")))
    assert len(checked) == 1 and 0 < arrays - checked[0] <= headers * 128  # the stated size, plus the .npy headers
    staged = [(a, b) for a, b in moved if ".staging." in a]
    assert {Path(b).parent.name + "/" + Path(b).name for _, b in staged} == {
        "train_aug/image.npy", "train_aug/label.npy", "test_aug/image.npy", "test_aug/label.npy",
        "seg_test_aug/image.npy", "seg_test_aug/label.npy"}
