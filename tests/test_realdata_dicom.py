"""DICOM CT series as a source (synthbench.data.dicom): small real-shaped series written here with
pydicom, read in position order with the rescale applied, refused when ambiguous, and taken end to
end through prepare -> smoke train -> synthesize -> evaluate (issue 15, "What hospitals have")."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from synthbench.cli.main import build_app  # noqa: E402
from synthbench.data.dicom import DicomPatient, find_patients, read_series  # noqa: E402
from synthbench.data.folder import FolderSource  # noqa: E402
from synthbench.data.prepare import resolve_source  # noqa: E402
from synthbench.data.volume import view_of  # noqa: E402
from synthbench.errors import SynthbenchError  # noqa: E402

COLS, ROWS, SLICES = 32, 28, 5
SPACING = (0.8, 0.7)  # PixelSpacing: row spacing, column spacing (mm)
DZ = 2.5
ORIGIN = (-12.0, -20.0, 100.0)  # LPS position of the first slice's first pixel
SLOPE, INTERCEPT = 2.0, -2048.0
CONFIG = """name = "hospital-ct"
intensity = "hu"
images = "dicom"
labels = "labels"
classes = [["background", "background"], ["lung", "lung"], ["lesion", "lesion"]]
"""


def _volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """HU [cols, rows, slices] (even integers, so the stored value is exact) and its label map."""
    rng = np.random.default_rng(seed)
    hu = np.full((COLS, ROWS, SLICES), -1000.0)
    hu[2:30, 2:26] = 40.0
    hu[4:15, 4:24] = -850.0
    hu[17:28, 4:24] = -850.0
    hu[6:9, 6:10, 1:4] = -400.0
    hu[20:23, 3:5] = 900.0  # right-left asymmetric landmark (patient's left: larger LPS x)
    hu += 2 * rng.integers(-10, 10, hu.shape)
    label = np.zeros(hu.shape, np.uint8)
    label[4:15, 4:24] = 1
    label[17:28, 4:24] = 1
    label[6:9, 6:10, 1:4] = 2
    return hu, label


def _ras_affine() -> np.ndarray:
    lps = np.array([[SPACING[1], 0, 0, ORIGIN[0]], [0, SPACING[0], 0, ORIGIN[1]], [0, 0, DZ, ORIGIN[2]], [0, 0, 0, 1]])
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _slice(hu2d: np.ndarray, k: int, series: str, patient: str, **tags) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName = patient, patient
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(entropy_srcs=[patient]), series
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20200401", "120000", "1", ""
    ds.Modality, ds.SeriesDescription, ds.SeriesNumber = "CT", "chest", 2
    ds.InstanceNumber = SLICES - k  # reversed: sorting must use positions
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * DZ]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = list(SPACING)
    ds.SliceThickness = DZ
    ds.Rows, ds.Columns = hu2d.shape[1], hu2d.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
    ds.PixelData = np.ascontiguousarray(((hu2d - INTERCEPT) / SLOPE).T.astype(np.uint16)).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def write_series(folder: Path, hu: np.ndarray, patient: str, **tags) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    paths = []
    for k in range(hu.shape[2]):
        path = folder / f"IM{(k * 7919) % 10007:05d}"  # names in no slice order, no extension
        _slice(hu[:, :, k], k, series, patient, **tags).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_source(root: Path, patients: int = 3) -> Path:
    for p in range(patients):
        hu, label = _volume(p)
        write_series(root / "dicom" / f"patient{p}", hu, f"P{p}")
        (root / "labels").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(label, _ras_affine()), str(root / "labels" / f"patient{p}.nii.gz"))
    (root / "synthbench-data.toml").write_text(CONFIG)
    return root


def test_series_sorted_by_position_rescaled_and_oriented(tmp_path):
    hu, label = _volume(0)
    folder = tmp_path / "p0"
    write_series(folder, hu, "P0")
    (folder / "notes.txt").write_text("not DICOM")
    scout = np.full((COLS, ROWS, 1), -1000.0)
    write_series(folder / "scout", scout, "P0", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    img, info = read_series(DicomPatient("p0", sorted(p for p in folder.rglob("*") if p.is_file()), folder))
    assert info["slices"] == SLICES
    np.testing.assert_allclose(np.asarray(img.dataobj), hu)  # exact HU: slope and intercept applied, z in position order
    np.testing.assert_allclose(img.affine, _ras_affine())
    view = view_of(img, "x")
    # radiological view: the landmark at the patient's left (LPS x large) is on the image right
    assert view[:, 3:5, 20:23].min() > 800 and view[:, 3:5, COLS - 23:COLS - 20].max() < 200


def test_ambiguous_or_broken_series_are_refused(tmp_path):
    hu, _ = _volume(0)
    two = tmp_path / "two"
    write_series(two, hu, "P0")
    write_series(two / "again", hu, "P0")
    with pytest.raises(SynthbenchError, match="2 image series for one patient.*keep one series"):
        read_series(DicomPatient("two", sorted(p for p in two.rglob("*") if p.is_file()), two))
    gap = tmp_path / "gap"
    files = write_series(gap, hu, "P0")
    files[2].unlink()  # a missing slice
    with pytest.raises(SynthbenchError, match="uneven slice spacing"):
        read_series(DicomPatient("gap", sorted(gap.iterdir()), gap))
    mr = tmp_path / "mr"
    write_series(mr, hu, "P0", Modality="MR")
    with pytest.raises(SynthbenchError, match="modality MR"):
        read_series(DicomPatient("mr", sorted(mr.iterdir()), mr))


def test_mask_in_another_voxel_grid_is_refused(tmp_path):
    root = make_source(tmp_path / "src")
    moved = _ras_affine()
    moved[0, 3] += 5.0  # 5 mm off: the mask would be applied to the wrong anatomy
    nib.save(nib.Nifti1Image(_volume(1)[1], moved), str(root / "labels" / "patient1.nii.gz"))
    src = resolve_source(str(root), 32, 0)
    with pytest.raises(SynthbenchError, match="patient1.nii.gz: mask voxel grid"):
        list(src.iter_patients())


def test_dicomdir_lists_patients(tmp_path):
    from pydicom.fileset import FileSet

    fs = FileSet()
    for p in range(2):
        hu, _ = _volume(p)
        series = generate_uid()
        for k in range(SLICES):
            fs.add(_slice(hu[:, :, k], k, series, f"P{p}"))
    fs.write(tmp_path / "media")
    patients = find_patients(tmp_path / "media")
    assert [p.name for p in patients] == ["P0", "P1"]
    img, _ = read_series(patients[1])
    np.testing.assert_allclose(np.asarray(img.dataobj), _volume(1)[0])


def test_dicom_end_to_end_prepare_train_synthesize_evaluate(tmp_path):
    root = make_source(tmp_path / "hospital")
    src = resolve_source(str(root), 32, 0)
    assert isinstance(src, FolderSource) and src.format == "dicom" and src.patient_count() == 3
    app = build_app()
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output + str(result.exception)
        return result

    data, run_dir = tmp_path / "data", tmp_path / "runs" / "p2p"
    run("data", "prepare", root, "--out", data, "--size", 32, "--train-factor", 1, "--test-factor", 1)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["source"]["format"] == "dicom" and len(manifest["source"]["volumes"]) == 3
    run("train", "pix2pix", "--data", data, "--protocol", "smoke", "--out", run_dir, "--option", "ngf=8",
        "--option", "ndf=8", "--max-steps", 2, "--quiet")
    run("synthesize", run_dir, "--data", data, "--out", run_dir / "synthesis" / "test")
    result = run("evaluate", run_dir, "--metrics", "psnr,ssim,rmse", "--json")
    out = json.loads(result.stdout)
    assert {r["setting"] for r in out["results"]} == {"complete", "lung"}
    # NIfTI out: the DICOM series' grid and orientation, HU within the window
    record = json.loads((run_dir / "synthesis" / "test" / "synthesis.json").read_text())
    (volume,) = record["nifti_volumes"]["volumes"]
    real = nib.load(str(run_dir / "synthesis" / "test" / "nifti" / "real" / f"{volume['volume']}.nii.gz"))
    assert nib.aff2axcodes(real.affine) == nib.aff2axcodes(_ras_affine())
    hu = _volume(int(volume["source"][-1]))[0]
    z = volume["slices"][0]
    # voxel (i, j) of the source series at world position A (i, j, z); the output has the same grid here
    ijk = np.linalg.solve(real.affine, _ras_affine() @ np.array([10.0, 12.0, z, 1.0]))[:3]
    got = np.asarray(real.dataobj)[tuple(np.round(ijk).astype(int))]
    assert abs(got - np.clip(hu[10, 12, z], -600, 1500)) < 1.1
