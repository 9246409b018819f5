"""Atomic writes: the target is complete or untouched; published files get ordinary modes."""

from __future__ import annotations

import os
import stat

import pytest

from synthbench.io import atomic_directory, atomic_path, atomic_write_json, atomic_write_text


def test_failed_write_leaves_old_content_and_no_temporaries(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_files_and_directories_are_not_private(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    mode = stat.S_IMODE(os.stat(tmp_path / "x.json").st_mode)
    assert mode & stat.S_IRGRP, oct(mode)
    with atomic_directory(tmp_path / "d") as d:
        (d / "f").write_text("1")
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) & stat.S_IXGRP


def test_directory_is_complete_or_absent(tmp_path):
    with pytest.raises(ValueError):
        with atomic_directory(tmp_path / "d") as d:
            (d / "part").write_text("1")
            raise ValueError("crash")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileExistsError):
        (tmp_path / "e").mkdir()
        with atomic_directory(tmp_path / "e"):
            pass
