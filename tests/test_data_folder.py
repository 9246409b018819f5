"""Generic folder loader: the shared real slices (built-in layout) and configs with bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthbench.data.folder import FolderSource, load_config
from synthbench.data.prepare import PrepareOptions, prepare, resolve_source
from synthbench.data.prepared import PreparedDataset
from synthbench.errors import SynthbenchError

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "covid19-ct-lung-infection-256"


@pytest.fixture
def real_subset(tmp_path):
    if not (REAL / "images").is_dir():
        pytest.skip(f"shared real slices not found at {REAL} (only inside the project workplace)")
    root = tmp_path / "real"
    for sub in ("images", "lung_masks", "infection_masks"):
        (root / sub).mkdir(parents=True)
        for i in (0, 1, 2, 3, 800, 801, 802, 1610, 1611, 1612):
            (root / sub / f"{i:04d}.png").symlink_to(REAL / sub / f"{i:04d}.png")
    return root


def test_real_slices_builtin_layout(real_subset, tmp_path):
    src = resolve_source(str(real_subset), 64, 0)
    assert isinstance(src, FolderSource)
    assert src.spec.intensity == "scaled" and src.spec.class_names == ["background", "lung", "infection"]
    assert src.patient_count() == 3  # the runs from files 0, 789 and 1565 (folder.COVID19_256_STARTS)
    p = next(src.iter_patients())
    lung = np.asarray(Image.open(real_subset / "lung_masks" / "0000.png")) > 127
    inf = np.asarray(Image.open(real_subset / "infection_masks" / "0000.png")) > 127
    assert np.array_equal(p.label[0] == 2, inf & lung)
    assert np.array_equal(p.label[0] >= 1, lung)
    digest = prepare(src, tmp_path / "p", PrepareOptions(size=64, train_factor=1, test_factor=1))
    ds = PreparedDataset(tmp_path / "p")
    assert ds.content_hash == digest and ds.spec.num_classes == 3
    img = np.asarray(ds.split("train").image, np.float32)
    assert img.min() >= -1 and img.max() <= 1 and img.std() > 0.2  # linear 0..255 scaling, no HU window
    assert set(np.unique(ds.split("train").label)) <= {0, 1, 2}


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)


def _layout(root, n=6, size=32):
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 256, (size, size))
        lab = np.zeros((size, size), np.uint8)
        lab[8:24, 4:14] = 1
        lab[8:24, 18:28] = 1
        lab[10:14, 6:10] = 2
        _png(root / "img" / f"p{i // 2}_{i}.png", img)
        _png(root / "lab" / f"p{i // 2}_{i}.png", lab)
    cfg = {"name": "toy", "intensity": "scaled", "images": "img", "labels": "lab",
           "classes": [["background", "background"], ["lung", "lung"], ["lesion", "lesion"]],
           "patients": {"mode": "regex", "pattern": "^(p\\d+)_"}}
    (root / "synthbench-data.json").write_text(json.dumps(cfg))
    return cfg


def _fails(root, out, match, **opts):
    with pytest.raises(SynthbenchError, match=match):
        prepare(resolve_source(str(root), 32, 0), out, PrepareOptions(size=32, train_factor=1, test_factor=1, **opts))
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*")), "half-written output"


def test_config_layout_and_toml(tmp_path):
    root = tmp_path / "d"
    cfg = _layout(root)
    src = resolve_source(str(root), 32, 0)
    assert [g[0] for g in src.groups] == ["p0", "p1", "p2"]
    prepare(src, tmp_path / "o", PrepareOptions(size=32, train_factor=1, test_factor=1))
    ds = PreparedDataset(tmp_path / "o")
    assert sum(len(ds.split(s)) for s in ("train", "test", "seg_test")) == 6
    toml = tmp_path / "c.toml"
    toml.write_text('name = "t"\nintensity = "scaled"\nimages = "img"\nlabels = "lab"\n'
                    'classes = [["background", "background"], ["lung", "lung"], ["lesion", "lesion"]]\n'
                    '[patients]\nmode = "block_size"\nsize = 2\n')
    assert load_config(toml).spec.name == "t" and cfg["name"] == "toy"
    assert len(FolderSource(root, load_config(toml)).groups) == 3


def test_bad_inputs(tmp_path):
    root = tmp_path / "d"
    cfg = _layout(root)
    out = tmp_path / "out"
    # labels outside the declared classes
    _png(root / "lab" / "p1_3.png", np.full((32, 32), 7))
    _fails(root, out, r"lab/p1_3.png: label value 7 outside the declared classes")
    _layout(root)
    # image/mask shape mismatch
    _png(root / "lab" / "p2_4.png", np.zeros((16, 32)))
    _fails(root, out, r"lab/p2_4.png: label shape")
    _layout(root)
    # missing mask file
    (root / "lab" / "p0_1.png").unlink()
    _fails(root, out, r"missing file: no mask for image p0_1.png")
    _layout(root)
    # PNG 0..255 declared as Hounsfield units
    (root / "synthbench-data.json").write_text(json.dumps({**cfg, "intensity": "hu"}))
    _fails(root, out, r"img/p0_0.png.*declared Hounsfield units")
    # empty selection: no slice has a lesion
    _layout(root)
    for f in (root / "lab").iterdir():
        _png(f, np.where(np.asarray(Image.open(f)) == 2, 1, np.asarray(Image.open(f))))
    _fails(root, out, r"empty selection")
    # missing image folder / unknown layout / bad config
    with pytest.raises(SynthbenchError, match="unknown data layout"):
        resolve_source(str(tmp_path / "d" / "img"), 32, 0)
    (root / "synthbench-data.json").write_text("{not json")
    with pytest.raises(SynthbenchError, match="synthbench-data.json: cannot parse config"):
        resolve_source(str(root), 32, 0)


def test_hu_values_declared_scaled(tmp_path):
    import nibabel as nib

    root = tmp_path / "n"
    (root / "vol").mkdir(parents=True)
    (root / "seg").mkdir()
    ct = np.full((16, 16, 3), -1000.0, np.float32)
    seg = np.zeros((16, 16, 3), np.uint8)
    seg[4:8, 4:8] = 2
    for stem in ("a", "b", "c"):  # three patients: fewer are refused before any volume is read
        nib.save(nib.Nifti1Image(ct, np.eye(4)), str(root / "vol" / f"{stem}.nii.gz"))
        nib.save(nib.Nifti1Image(seg, np.eye(4)), str(root / "seg" / f"{stem}.nii.gz"))
    cfg = {"intensity": "scaled", "images": "vol", "labels": "seg", "patients": {"mode": "per_file"},
           "classes": [["background", "background"], ["lung", "lung"], ["lesion", "lesion"]]}
    (root / "synthbench-data.json").write_text(json.dumps(cfg))
    _fails(root, tmp_path / "o", r"a.nii.gz.*declared scaled intensities.*Hounsfield")
