"""Pipeline and CLI: patient-level split, determinism (content hash), prepare/info/preview."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.data.prepare import prepare_phantom
from synthbench.data.prepared import PreparedDataset
from synthbench.data.preprocess import check_intensity, split_patients, to_unit
from synthbench.data.spec import PAPER_CLASSES, DatasetSpec
from synthbench.errors import SynthbenchError


def test_phantom_dir_fixture(phantom_dir):
    ds = PreparedDataset(phantom_dir)
    assert ds.size == 64 and ds.spec.class_names == ["background", "lung", "ground_glass", "consolidation"]
    assert set(ds.split_names) == {"train", "test", "seg_test", "train_aug", "test_aug", "seg_test_aug"}
    sides = [set(ds.split(s).patient) for s in ("train", "test", "seg_test")]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert set(ds.split("train_aug").patient) == sides[0] and set(ds.split("test_aug").patient) == sides[1]
    assert len(ds.split("train_aug")) == 3 * len(ds.split("train"))
    # the segmentation-test set is augmented by the synthesis-test factor (Table I: 73 -> 10,220 both)
    assert set(ds.split("seg_test_aug").patient) == sides[2]
    assert len(ds.split("seg_test_aug")) == 4 * len(ds.split("seg_test"))
    assert ds.verify()
    batch = ds.collate([ds.torch_dataset("train_aug")[i] for i in range(4)])
    assert batch.image.shape == (4, 1, 64, 64) and batch.image.min() >= -1 and batch.image.max() <= 1


def test_same_seed_same_hash_and_bytes(tmp_path):
    kw = dict(size=32, patients=3, slices_per_patient=2, train_factor=2, test_factor=2, keep_all_slices=True)
    a = prepare_phantom(tmp_path / "a", seed=1, **kw)
    b = prepare_phantom(tmp_path / "b", seed=1, **kw)
    c = prepare_phantom(tmp_path / "c", seed=2, **kw)
    assert a == b != c
    assert (tmp_path / "a/splits/train_aug/image.npy").read_bytes() == (tmp_path / "b/splits/train_aug/image.npy").read_bytes()
    with pytest.raises(SynthbenchError, match="already exists"):
        prepare_phantom(tmp_path / "a", seed=1, **kw)


def test_split_proportions_and_no_patient_twice():
    counts = {f"p{i}": 20 + (i * 7) % 30 for i in range(40)}
    out = split_patients(counts, seed=0)
    assert sum(len(v) for v in out.values()) == 40
    assert len(set(sum(out.values(), []))) == 40
    share = {k: sum(counts[p] for p in v) / sum(counts.values()) for k, v in out.items()}
    assert abs(share["train"] - 300 / 446) < 0.05 and abs(share["test"] - 73 / 446) < 0.05
    assert split_patients(counts, seed=0) == out and split_patients(counts, seed=1) != out
    with pytest.raises(SynthbenchError, match="at least 3 patients"):
        split_patients({"a": 3, "b": 4}, seed=0)


def test_window_and_declared_kind():
    hu = DatasetSpec("h", PAPER_CLASSES, "hu")
    np.testing.assert_allclose(to_unit(np.array([-1000.0, -600.0, 450.0, 1500.0, 3000.0]), hu), [-1, -1, 0, 1, 1])
    scaled = DatasetSpec("s", PAPER_CLASSES, "scaled")
    np.testing.assert_allclose(to_unit(np.array([0.0, 255.0]), scaled), [-1, 1])
    with pytest.raises(SynthbenchError, match="x.png: declared Hounsfield"):
        check_intensity(np.array([0.0, 255.0]), hu, "x.png")
    with pytest.raises(SynthbenchError, match="y.nii: declared scaled"):
        check_intensity(np.array([-1000.0, 40.0]), scaled, "y.nii")


def test_cli_prepare_info_preview(tmp_path):
    app, runner = build_app(), CliRunner()
    out = tmp_path / "ph"
    r = runner.invoke(app, ["data", "prepare", "phantom", "--out", str(out), "--size", "32", "--patients", "3",
                            "--slices-per-patient", "2", "--train-factor", "2", "--test-factor", "3", "--keep-all-slices"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["data", "info", str(out), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    rows = {row["split"]: row for row in info["table_i"]}
    assert rows["train"]["after"] == 2 * rows["train"]["before"] and rows["test"]["after"] == 3 * rows["test"]["before"]
    assert rows["seg_test"]["after"] == 3 * rows["seg_test"]["before"]
    assert abs(sum(info["splits"]["train"]["class_fraction"].values()) - 1) < 1e-6
    r = runner.invoke(app, ["data", "info", str(out)])
    assert r.exit_code == 0 and "Table I" in r.output
    png = tmp_path / "grid.png"
    r = runner.invoke(app, ["data", "preview", str(out), "--out", str(png), "--n", "3"])
    assert r.exit_code == 0, r.output
    grid = np.asarray(Image.open(png))
    assert grid.ndim == 3 and (grid[..., 0] > grid[..., 2] + 60).any()  # red lung overlay present
    r = runner.invoke(app, ["data", "prepare", "phantom", "--out", str(out), "--size", "32"])
    assert r.exit_code == 2 and "already exists" in r.output
    r = runner.invoke(app, ["data", "info", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "not a prepared data set" in r.output
    r = runner.invoke(app, ["data", "prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "source not found" in r.output


def test_parallel_augmentation_is_byte_identical(tmp_path, monkeypatch):
    """Worker processes change the speed of augmentation, never its output (same content hash)."""
    from synthbench.data import prepare as prep

    monkeypatch.setattr(prep, "PARALLEL_MIN_PIXELS", 1)
    hashes = []
    for workers in (1, 2):
        source = prep.PhantomSource(patients=4, slices_per_patient=3, size=32, seed=3)
        options = prep.PrepareOptions(size=32, seed=3, train_factor=3, test_factor=2, keep_all_slices=True, workers=workers)
        hashes.append(prep.prepare(source, tmp_path / f"w{workers}", options))
    assert hashes[0] == hashes[1]
