"""MedSeg/Radiopaedia NIfTI loader: label rule, orientation, bad input (synthbench.data.medseg)."""

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.data.medseg import MedSegSource, read_nifti_slices
from synthbench.data.prepare import PrepareOptions, prepare, resolve_source
from synthbench.data.prepared import PreparedDataset
from synthbench.errors import SynthbenchError

X, Y, Z = 24, 20, 5


def _volumes(seed):
    rng = np.random.default_rng(seed)
    ct = np.full((X, Y, Z), -1000.0, np.float32)
    ct[3:21, 3:17] = 40.0
    ct[5:11, 5:15] = -850.0
    ct[13:19, 5:15] = -850.0
    ct += rng.normal(0, 5, ct.shape).astype(np.float32)
    lung = np.zeros((X, Y, Z), np.uint8)
    lung[5:11, 5:15] = 1
    lung[13:19, 5:15] = 2
    inf = np.zeros((X, Y, Z), np.uint8)
    inf[6:9, 6:9, 1:4] = 1
    inf[14:16, 10:13, 2:] = 2
    inf[18, 5:15, :] = 3
    return ct, lung, inf


def _write(root, stem, arrays, affine=np.eye(4)):
    for folder, arr in zip(("rp_im", "rp_lung_msk", "rp_msk"), arrays, strict=False):
        (root / folder).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(arr, affine), str(root / folder / f"{stem}.nii.gz"))


@pytest.fixture
def medseg_dir(tmp_path):
    root = tmp_path / "medseg"
    for i in range(3):
        _write(root, str(i + 1), _volumes(i))
    return root


def test_labels_and_default_effusion_rule(medseg_dir):
    src = resolve_source(str(medseg_dir), 32, 0)
    assert isinstance(src, MedSegSource) and src.patient_count() == 3
    p = next(src.iter_patients())
    assert p.image.shape == (Z, Y, X) and p.label.shape == (Z, Y, X)
    assert set(np.unique(p.label)) == {0, 1, 2, 3}
    ct, lung, inf = _volumes(0)
    # effusion (3) -> background by default; x = 18 is image column X-1-18
    assert (p.label[:, :, X - 1 - 18] == 0).all()
    src_lung = MedSegSource(medseg_dir, effusion="lung")
    assert (next(src_lung.iter_patients()).label[:, 5:15, X - 1 - 18] == 1).all()
    src_cls = MedSegSource(medseg_dir, effusion="class")
    assert src_cls.spec.num_classes == 5 and 4 in next(src_cls.iter_patients()).label


def test_orientation_flipped_affine_gives_same_slices(tmp_path):
    ct = np.zeros((X, Y, Z), np.float32)
    ct[X - 3 :, :, :] = 100.0  # largest x = patient's right in RAS+
    ct[:, Y - 2 :, :] = 200.0  # largest y = anterior
    nib.save(nib.Nifti1Image(ct, np.eye(4)), str(tmp_path / "a.nii.gz"))
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = X - 1  # same world positions, x axis stored reversed
    nib.save(nib.Nifti1Image(ct[::-1].copy(), flip), str(tmp_path / "b.nii.gz"))
    a = read_nifti_slices(tmp_path / "a.nii.gz")
    b = read_nifti_slices(tmp_path / "b.nii.gz")
    assert np.array_equal(a, b)
    # radiological view: patient's right on the image left, anterior up
    assert (a[:, 2:, :3] == 100).all() and (a[:, :2, :] == 200).all()
    assert (a[:, 2:, 3:] == 0).all()


def test_prepare_medseg_end_to_end(medseg_dir, tmp_path):
    digest = prepare(resolve_source(str(medseg_dir), 32, 0), tmp_path / "p", PrepareOptions(size=32, train_factor=2, test_factor=2))
    ds = PreparedDataset(tmp_path / "p")
    assert ds.content_hash == digest and ds.verify() and ds.size == 32
    assert ds.manifest["source"]["slices_total"] == 3 * Z
    assert ds.manifest["source"]["slices_kept"] == 3 * 4  # slices 1..4 hold infection


def test_corrupt_nifti_and_mismatch(medseg_dir, tmp_path):
    bad = medseg_dir / "rp_msk" / "2.nii.gz"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(SynthbenchError, match="2.nii.gz.*cannot read NIfTI"):
        prepare(resolve_source(str(medseg_dir), 32, 0), tmp_path / "out", PrepareOptions(size=32, train_factor=1, test_factor=1))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    result = CliRunner().invoke(build_app(), ["data", "prepare", str(medseg_dir), "--out", str(tmp_path / "o"), "--size", "32"])
    assert result.exit_code == 2 and "2.nii.gz" in result.output and len(result.output.strip().splitlines()) == 1
    _write(medseg_dir, "2", _volumes(1)[:2] + (np.zeros((X, Y, Z + 1), np.uint8),))
    with pytest.raises(SynthbenchError, match="rp_msk/2.nii.gz: mask shape"):
        list(MedSegSource(medseg_dir).iter_patients())
    (medseg_dir / "rp_lung_msk" / "3.nii.gz").unlink()
    with pytest.raises(SynthbenchError, match="missing file.*3"):
        MedSegSource(medseg_dir)


def test_synthesis_from_nifti_source_writes_nifti_volumes(medseg_dir, tmp_path):
    """Data that came from NIfTI gets NIfTI output beside the PNGs: one volume per source volume
    and view, in HU, on the source grid (tests/test_realdata_nifti_out.py checks the geometry)."""
    from PIL import Image

    from synthbench.engine import train
    from synthbench.synthesis import synthesize

    prepare(resolve_source(str(medseg_dir), 32, 0), tmp_path / "p", PrepareOptions(size=32, train_factor=1, test_factor=1))
    run = train("pix2pix", tmp_path / "p", tmp_path / "run", protocol="smoke", overrides={"max_steps": 1},
                show_progress=False)
    record = synthesize(run.run_dir, tmp_path / "p", tmp_path / "syn", split="test", show_progress=False)
    assert record["nifti"] is True
    (volume,) = record["nifti_volumes"]["volumes"]  # the one test patient
    z = volume["slices"][0]
    complete = nib.load(str(tmp_path / "syn" / "nifti" / "complete" / f"{volume['volume']}.nii.gz"))
    label = nib.load(str(tmp_path / "syn" / "nifti" / "label" / f"{volume['volume']}.nii.gz"))
    assert complete.shape[2] == Z and np.asarray(label.dataobj).dtype == np.uint8
    png = np.asarray(Image.open(tmp_path / "syn" / "complete" / "00000.png"), dtype=np.float64)
    hu = np.asarray(complete.dataobj)[:, :, z]
    assert hu.min() >= -600 - 1e-3 and hu.max() <= 1500 + 1e-3  # HU within the window, not [-1, 1]
    # eye affine: stored = RAS, so voxel (x, y) is view pixel (row 31 - y, column 31 - x)
    view = np.transpose(hu[::-1, ::-1], (1, 0))
    np.testing.assert_allclose((view + 600) / 2100 * 255, png, atol=0.51)
    assert not (tmp_path / "syn" / ".staging").exists()
