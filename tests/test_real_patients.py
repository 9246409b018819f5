"""Patients of the shared real slices: runs of file numbers cut where a CT volume ends (never
equal blocks that cut a patient across the train/test split), and the ``starts`` mode behind it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthbench.data.folder import COVID19_256, COVID19_256_STARTS, FolderSource, parse_config
from synthbench.errors import SynthbenchError

REAL = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "covid19-ct-lung-infection-256").resolve()


def _config(patients: dict, limit: int = 0) -> dict:
    return {**COVID19_256, "patients": patients, "limit": limit}


def _folder(root: Path, numbers) -> Path:
    for sub in ("images", "lung_masks", "infection_masks"):
        (root / sub).mkdir(parents=True)
        for n in numbers:
            Image.fromarray(np.full((8, 8), 255 if sub != "images" else n, np.uint8)).save(root / sub / f"{n:04d}.png")
    return root


def test_starts_mode_groups_files_into_runs_by_file_number(tmp_path):
    root = _folder(tmp_path / "d", range(10))
    src = FolderSource(root, parse_config(_config({"mode": "starts", "starts": [7, 0, 4]})))
    assert [(pid, [f.name for f in files]) for pid, files in src.groups] == [
        ("from-0", ["0000.png", "0001.png", "0002.png", "0003.png"]),
        ("from-4", ["0004.png", "0005.png", "0006.png"]),
        ("from-7", ["0007.png", "0008.png", "0009.png"]),
    ]
    limited = FolderSource(root, parse_config(_config({"mode": "starts", "starts": [0, 4, 7]}, limit=5)))
    assert [len(files) for _, files in limited.groups] == [4, 1]
    late = FolderSource(root, parse_config(_config({"mode": "starts", "starts": [3]})))
    assert [pid for pid, _ in late.groups] == ["before-first-start", "from-3"]


@pytest.mark.parametrize("starts", [[], [-1, 4], ["4"], 4, [1.5]])
def test_starts_mode_rejects_bad_lists(starts):
    with pytest.raises(SynthbenchError, match="patients.starts"):
        parse_config(_config({"mode": "starts", "starts": starts}))


def test_starts_mode_needs_numbered_files(tmp_path):
    root = _folder(tmp_path / "d", range(2))
    for sub in ("images", "lung_masks", "infection_masks"):
        (root / sub / "0001.png").rename(root / sub / "extra.png")
    with pytest.raises(SynthbenchError, match="number in every file name"):
        FolderSource(root, parse_config(_config({"mode": "starts", "starts": [0]})))


def _slice(number: int) -> np.ndarray:
    image = Image.open(REAL / "images" / f"{number:04d}.png").convert("L").resize((64, 64), Image.BILINEAR)
    return np.asarray(image, np.float32)


@pytest.mark.skipif(not (REAL / "images").is_dir(),
                    reason=f"the shared real CT slices are not here ({REAL}); this checkout has no ../shared/data")
def test_builtin_patient_runs_end_where_a_ct_volume_ends():
    """Consecutive slices of one patient differ by about 3/255 on average (median at 64 px); where
    one volume ends and the next begins (lung apex -> liver, or another field of view) by 25 or
    more. Every cut between two runs of the built-in layout is such a jump; 20 equal blocks cut
    inside patients (files 80|81 of the first, 160|161, ...)."""
    src = FolderSource(REAL, parse_config(COVID19_256))
    assert [pid for pid, _ in src.groups] == [f"from-{s}" for s in COVID19_256_STARTS]
    assert sum(len(files) for _, files in src.groups) == 1614
    for (_, before), (_, after) in zip(src.groups[:-1], src.groups[1:], strict=True):
        last, first = int(before[-1].stem), int(after[0].stem)
        assert first == last + 1
        jump = float(np.abs(_slice(first) - _slice(last)).mean())
        assert jump > 25, f"files {last}|{first}: mean difference {jump:.1f}/255, no new volume"
