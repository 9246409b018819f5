"""NIfTI out is a CT again: a MedSeg volume -> prepare -> synthesize -> nibabel gives the real
slices back in HU (within the window) at the right voxel positions, in the source's orientation,
with labels in the source's coding (issue 15, "NIfTI out must be a CT again")."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from synthbench.data.prepare import PrepareOptions, prepare, resolve_source
from synthbench.data.prepared import PreparedDataset
from synthbench.synthesis import synthesize

X, Y, Z = 32, 28, 6
#: Stored left-posterior-superior with anisotropic voxels and an offset origin (not RAS, not eye).
AFFINE = np.array([[-0.7, 0, 0, 80.0], [0, -0.8, 0, 60.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])


def _patient(seed: int):
    rng = np.random.default_rng(seed)
    ct = np.full((X, Y, Z), -1000.0, np.float32)
    ct[2:30, 2:26] = 40.0
    ct[4:15, 4:24] = -850.0
    ct[17:28, 4:24] = -850.0
    ct[8:12, 18:22] = 1000.0  # bright landmark (bone-like), inside the window
    ct += rng.normal(0, 30, ct.shape).astype(np.float32)
    lung = np.zeros((X, Y, Z), np.uint8)
    lung[4:15, 4:24] = 1
    lung[17:28, 4:24] = 1
    inf = np.zeros((X, Y, Z), np.uint8)
    inf[5:8, 5:8, 1:5] = 1  # ground-glass
    inf[18:20, 9:12, 2:] = 2  # consolidation
    inf[27, 4:24, :] = 3  # effusion: background under the default rule
    return ct, lung, inf


@pytest.fixture(scope="module")
def medseg(tmp_path_factory):
    root = tmp_path_factory.mktemp("medseg")
    for i in range(3):
        for folder, arr in zip(("rp_im", "rp_lung_msk", "rp_msk"), _patient(i), strict=True):
            (root / folder).mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(arr, AFFINE), str(root / folder / f"case{i}.nii.gz"))
    return root


def _untrained(ds: PreparedDataset):
    from synthbench.plugins import get_registry

    cls = get_registry().synthesizer("pix2pix")
    return cls(ds.num_classes, ds.size, options=dict(cls.reduced_options))


def _synthesize(medseg, tmp_path, size: int):
    prepare(resolve_source(str(medseg), size, 0), tmp_path / "p", PrepareOptions(size=size, train_factor=0, test_factor=0))
    ds = PreparedDataset(tmp_path / "p")
    record = synthesize(None, tmp_path / "p", tmp_path / "syn", split="test", show_progress=False, synth=_untrained(ds))
    return ds, record


def _world(affine, ijk):
    return (affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]


def test_real_view_round_trips_in_hu_at_source_voxels(medseg, tmp_path):
    # 32 x 28 slices at size 32: no scaling, four padding rows (aspect ratio kept).
    ds, record = _synthesize(medseg, tmp_path, 32)
    info = record["nifti_volumes"]
    assert record["nifti"] is True and info["intensity"] == "HU" and info["window"] == [-600.0, 1500.0]
    (volume,) = info["volumes"]
    ct, _, inf = _patient(int(volume["source"][-1]))
    out = nib.load(str(tmp_path / "syn" / "nifti" / "real" / f"{volume['volume']}.nii.gz"))
    assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(AFFINE) == ("L", "P", "S")  # the input's orientation
    assert np.allclose(np.abs(np.diag(out.affine))[:3], [0.7, 0.8, 2.5])  # source spacing (no scaling)
    assert "clipped" in out.header["descrip"].tobytes().decode()
    data = np.asarray(out.dataobj)
    # Every source voxel of a synthesized slice, found through the two affines.
    i, j = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    for z in volume["slices"]:
        src = np.c_[i.ravel(), j.ravel(), np.full(i.size, z)]
        dst = np.linalg.solve(out.affine, np.c_[_world(AFFINE, src), np.ones(len(src))].T).T[:, :3]
        assert np.allclose(dst, np.round(dst), atol=1e-4)  # lands on output voxel centres
        d = np.round(dst).astype(int)
        got = data[d[:, 0], d[:, 1], d[:, 2]]
        np.testing.assert_allclose(got, np.clip(ct[i, j, z].ravel(), -600, 1500), atol=1.1)  # float16 storage
    others = sorted(set(range(Z)) - set(volume["slices"]))
    assert others and (data[:, :, others] == info["fill_value"]).all() and info["fill_value"] < -600
    # Labels in the source's coding: rp_msk values (1 ground-glass, 2 consolidation), lung/effusion 0.
    label = np.asarray(nib.load(str(tmp_path / "syn" / "nifti" / "label" / f"{volume['volume']}.nii.gz")).dataobj)
    z = volume["slices"][0]
    src = np.c_[i.ravel(), j.ravel(), np.full(i.size, z)]
    d = np.round(np.linalg.solve(out.affine, np.c_[_world(AFFINE, src), np.ones(len(src))].T).T[:, :3]).astype(int)
    expected = np.where(np.isin(inf[:, :, z], (1, 2)), inf[:, :, z], 0).ravel()
    np.testing.assert_array_equal(label[d[:, 0], d[:, 1], d[:, 2]], expected)
    assert info["label_coding"] == [0, 0, 1, 2]


def test_resized_volume_keeps_anatomy_in_world_coordinates(medseg, tmp_path):
    # size 64: voxels halved in-plane; the bright landmark's centroid stays at the same world position.
    ds, record = _synthesize(medseg, tmp_path, 64)
    (volume,) = record["nifti_volumes"]["volumes"]
    ct, _, _ = _patient(int(volume["source"][-1]))
    out = nib.load(str(tmp_path / "syn" / "nifti" / "real" / f"{volume['volume']}.nii.gz"))
    assert np.allclose(np.abs(np.diag(out.affine))[:3], [0.35, 0.4, 2.5], atol=1e-6)
    z = volume["slices"][0]
    data = np.asarray(out.dataobj)[:, :, z]

    def centroid(values, affine):
        w = np.clip(values - 500.0, 0, None)  # the landmark only (1000 HU vs <= 40 elsewhere)
        idx = np.argwhere(w > 0)
        world = _world(affine, np.c_[idx, np.full(len(idx), z)])
        return (world * w[w > 0][:, None]).sum(0) / w.sum()

    np.testing.assert_allclose(centroid(data, out.affine), centroid(np.clip(ct[:, :, z], -600, 1500), AFFINE), atol=0.02)


def test_medseg_effusion_rule_from_the_cli_and_layout_named_in_errors(medseg, tmp_path):
    from typer.testing import CliRunner

    from synthbench.cli.main import build_app

    result = CliRunner().invoke(build_app(), ["data", "prepare", str(medseg), "--out", str(tmp_path / "p"), "--size", "32",
                                              "--train-factor", "0", "--test-factor", "0", "--effusion", "class"])
    assert result.exit_code == 0, result.output
    ds = PreparedDataset(tmp_path / "p")
    assert ds.spec.class_names[-1] == "pleural_effusion" and ds.manifest["source"]["effusion"] == "class"
    assert 4 in np.asarray(ds.split("train").label)
    bad = CliRunner().invoke(build_app(), ["data", "prepare", str(medseg), "--out", str(tmp_path / "q"), "--effusion", "pleura"])
    assert bad.exit_code == 2 and "effusion rule must be one of background, lung, class" in bad.output
    (tmp_path / "empty").mkdir()
    unknown = CliRunner().invoke(build_app(), ["data", "prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
    assert unknown.exit_code == 2 and "MedSeg/Radiopaedia NIfTI folder (rp_im/, rp_lung_msk/, rp_msk/)" in unknown.output
