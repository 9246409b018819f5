"""Image/mask folders as hospitals and public sets hold them (issue 15): palette PNG, RGB, JPEG,
BMP, TIFF, unsupported types, the mask-threshold trap, classes that never occur, unknown config
keys, 16-bit PNG errors naming the file, non-square and variable-size slices, few patients."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.data.folder import FolderSource, _read, load_config
from synthbench.data.prepare import PrepareOptions, prepare, resolve_source
from synthbench.data.prepared import PreparedDataset
from synthbench.errors import SynthbenchError

CLASSES = [["background", "background"], ["lung", "lung"], ["lesion", "lesion"]]


def _slice(i: int, size=(32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """A gray slice (0..255) and its label map (0 background, 1 lung, 2 lesion)."""
    h, w = size
    rng = np.random.default_rng(i)
    img = rng.integers(0, 80, size).astype(np.uint8)
    lab = np.zeros(size, np.uint8)
    lab[h // 4: 3 * h // 4, w // 8: w // 2 - 1] = 1
    lab[h // 4: 3 * h // 4, w // 2 + 1: 7 * w // 8] = 1
    lab[h // 3: h // 3 + 4, w // 4: w // 4 + 4] = 2
    img[lab == 1] = 30
    img[lab == 2] = 200
    return img, lab


def _write(root, cfg: dict, n: int = 6, suffix: str = ".png", size=(32, 32), masks: bool = False, mask_scale: int = 255):
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, lab = _slice(i, size)
        Image.fromarray(img).save(root / "img" / f"{i:03d}{suffix}")
        if masks:
            for folder, on in (("lung", lab >= 1), ("inf", lab == 2)):
                (root / folder).mkdir(exist_ok=True)
                Image.fromarray((on * mask_scale).astype(np.uint8)).save(root / folder / f"{i:03d}.png")
        else:
            (root / "lab").mkdir(exist_ok=True)
            Image.fromarray(lab).save(root / "lab" / f"{i:03d}.png")
    base = {"name": "t", "intensity": "scaled", "images": "img", "classes": CLASSES,
            "patients": {"mode": "blocks", "count": 3}}
    if not masks:
        base["labels"] = "lab"
    (root / "synthbench-data.json").write_text(json.dumps({**base, **cfg}))
    return root


def _prepare(root, out, **opts):
    options = {"size": 32, "train_factor": 0, "test_factor": 0, **opts}
    prepare(resolve_source(str(root), options["size"], 0), out, PrepareOptions(**options))
    return PreparedDataset(out)


def test_palette_png_goes_through_its_palette_and_label_png_keeps_indices(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    # a palette whose index i shows gray 255 - i: raw indices would come out inverted
    pal = Image.new("P", (16, 16))
    pal.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    pal.putdata(list(gray.ravel()))
    pal.save(tmp_path / "img.png")
    np.testing.assert_array_equal(_read(tmp_path / "img.png", "image")[0], 255 - gray)
    np.testing.assert_array_equal(_read(tmp_path / "img.png", "label")[0], gray)  # label maps: indices


def test_rgb_only_where_gray_jpeg_bmp_tiff_read(tmp_path):
    img, _ = _slice(0)
    Image.fromarray(np.stack([img] * 3, -1)).save(tmp_path / "gray_rgb.png")
    np.testing.assert_array_equal(_read(tmp_path / "gray_rgb.png")[0], img)
    colour = np.stack([img, img, np.clip(img.astype(int) + 9, 0, 255).astype(np.uint8)], -1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(SynthbenchError, match=r"colour.png: colour image \(RGB channels differ by up to 9\)"):
        _read(tmp_path / "colour.png")
    for suffix in (".bmp", ".tif"):
        Image.fromarray(img).save(tmp_path / f"a{suffix}")
        np.testing.assert_array_equal(_read(tmp_path / f"a{suffix}")[0], img)
    Image.fromarray(np.stack([img] * 3, -1)).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(_read(tmp_path / "a.jpg")[0] - img).mean() < 3  # lossy, but gray
    root = _write(tmp_path / "jpeg", {}, suffix=".jpg")
    ds = _prepare(root, tmp_path / "o")
    assert sum(len(ds.split(s)) for s in ("train", "test", "seg_test")) == 6


def test_unsupported_image_type_counts_files(tmp_path):
    root = _write(tmp_path / "d", {})
    for i in range(3):
        Image.fromarray(_slice(i)[0]).save(root / "img" / f"x{i}.gif")
    (root / "img" / "README.txt").write_text("notes are fine")
    with pytest.raises(SynthbenchError, match=r"img: unsupported image type: 3 \.gif files besides 6 supported"):
        resolve_source(str(root), 32, 0)


def test_mask_threshold_trap_is_an_error_and_default_threshold_reads_0_1_and_1_bit_masks(tmp_path):
    masks = [{"folder": "lung", "class": "lung", "threshold": 127},
             {"folder": "inf", "class": "lesion", "threshold": 127, "within": ["lung"]}]
    root = _write(tmp_path / "d", {"masks": masks}, masks=True, mask_scale=1)
    with pytest.raises(SynthbenchError, match=r"masks in lung/ never exceed their threshold 127 \(largest value 1\)"):
        _prepare(root, tmp_path / "o", keep_all_slices=True)
    assert not (tmp_path / "o").exists()
    default = [{"folder": "lung", "class": "lung"}, {"folder": "inf", "class": "lesion", "within": ["lung"]}]
    (root / "synthbench-data.json").write_text(json.dumps({**json.loads((root / "synthbench-data.json").read_text()), "masks": default}))
    ds = _prepare(root, tmp_path / "o2")
    for name in ("lung", "inf"):  # the same masks as 1-bit PNGs
        for f in (root / name).iterdir():
            Image.open(f).point(lambda v: 255 * (v > 0)).convert("1").save(f)
    ds1 = _prepare(root, tmp_path / "o3")
    for d in (ds, ds1):
        fractions = np.bincount(np.asarray(d.split("train").label).ravel(), minlength=3)
        assert (fractions > 0).all()  # lung and lesion present, not 100% background


def test_declared_class_that_never_occurs_or_misses_the_train_split(tmp_path):
    root = _write(tmp_path / "d", {"classes": [*CLASSES, ["consolidation", "lesion"]]})
    with pytest.raises(SynthbenchError, match=r"class 'consolidation' never occurs"):
        _prepare(root, tmp_path / "o")
    # consolidation only in the slices of a patient the split sends to test: a warning naming it
    from synthbench.data.preprocess import split_patients

    test_block = split_patients({f"block-{b}": 2 for b in range(3)}, 0)["test"][0]
    b = int(test_block[-1])
    for i in (2 * b, 2 * b + 1):
        lab = np.asarray(Image.open(root / "lab" / f"{i:03d}.png")).copy()
        lab[lab == 2] = 3
        Image.fromarray(lab).save(root / "lab" / f"{i:03d}.png")
    with pytest.warns(UserWarning, match=r"class 'consolidation' never occurs in the train split"):
        ds = _prepare(root, tmp_path / "o2")
    assert 3 not in np.asarray(ds.split("train").label) and 3 in np.asarray(ds.split("test").label)
    assert any("'consolidation'" in w for w in ds.manifest["source"]["warnings"])


def test_unknown_config_keys_are_rejected_listing_known_keys(tmp_path):
    root = _write(tmp_path / "d", {"limt": 3})
    with pytest.raises(SynthbenchError, match=r"unknown key 'limt' in the data config \(known keys: name, .*limit"):
        resolve_source(str(root), 32, 0)
    _write(root, {"patients": {"mode": "blocks", "count": 3, "sise": 2}})
    with pytest.raises(SynthbenchError, match=r"unknown key 'sise' in \[patients\]"):
        resolve_source(str(root), 32, 0)


def test_16_bit_png_error_names_the_offending_file(tmp_path):
    root = _write(tmp_path / "d", {})
    Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(root / "img" / "001.png")  # 2nd file of block 0
    with pytest.raises(SynthbenchError, match=r"img/001.png: declared scaled intensities in 0..255 .*16-bit"):
        _prepare(root, tmp_path / "o")


def test_non_square_slices_keep_their_aspect_ratio_and_variable_sizes_group(tmp_path):
    root = _write(tmp_path / "d", {}, size=(32, 64))
    ds = _prepare(root, tmp_path / "o", keep_all_slices=True)
    label = np.asarray(ds.split("train").label[0])
    rows = np.nonzero((label > 0).any(axis=1))[0]
    cols = np.nonzero((label > 0).any(axis=0))[0]
    # the lungs span half the height and 3/4 of the width of a 2:1 slice: aspect ratio kept, padding background
    assert (np.ptp(cols) + 1) / (np.ptp(rows) + 1) == pytest.approx((0.75 * 32) / (0.5 * 16), rel=0.1)
    assert (label[:8] == 0).all() and (np.asarray(ds.split("train").image[0])[:8] == -1).all()
    stretched = _prepare(root, tmp_path / "s", keep_all_slices=True, resize="stretch")
    label = np.asarray(stretched.split("train").label[0])
    rows = np.nonzero((label > 0).any(axis=1))[0]
    assert np.ptp(rows) + 1 == pytest.approx(16, abs=1)
    # one patient's slices of two sizes: resized one by one, then grouped (was: "slices have different sizes")
    Image.fromarray(_slice(1, (48, 48))[0]).save(root / "img" / "001.png")
    Image.fromarray(_slice(1, (48, 48))[1]).save(root / "lab" / "001.png")
    ds = _prepare(root, tmp_path / "v", keep_all_slices=True)
    assert sum(len(ds.split(s)) for s in ("train", "test", "seg_test")) == 6


def test_fewer_than_three_patients_refused_before_reading_unless_slice_split(tmp_path, monkeypatch):
    root = _write(tmp_path / "d", {"patients": {"mode": "blocks", "count": 2}})

    def no_reading(self):
        raise AssertionError("volumes read before the patient count was checked")

    monkeypatch.setattr(FolderSource, "iter_patients", no_reading)
    with pytest.raises(SynthbenchError, match=r"the source has 2 patients; a patient-level split .* --slice-split"):
        _prepare(root, tmp_path / "o")
    monkeypatch.undo()
    result = CliRunner().invoke(build_app(), ["data", "prepare", str(root), "--out", str(tmp_path / "o"), "--size", "32",
                                              "--train-factor", "0", "--test-factor", "0", "--slice-split"])
    assert result.exit_code == 0, result.output
    assert "warning: slice-level split" in result.stderr
    ds = PreparedDataset(tmp_path / "o")
    assert ds.manifest["options"]["slice_split"] is True
    assert any("slice-level split" in w for w in ds.manifest["source"]["warnings"])
    assert len(ds.split("test")) and set(ds.split("test").patient) & set(ds.split("train").patient)
    info = CliRunner().invoke(build_app(), ["data", "info", str(tmp_path / "o")])
    assert "slice-level split" in info.stderr


def test_load_config_toml_with_region(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('images = "img"\nlabels = "lab"\nregion = "lesion"\nintensity = "scaled"\n'
                    'classes = [["background", "background"], ["ggo", "lesion"], ["consolidation", "lesion"]]\n')
    assert load_config(toml).spec.region == "lesion"


def test_augmentation_too_small_for_the_elastic_kernel_is_a_one_line_error(tmp_path):
    """Old: preparing at 24 px or less crashed with a raw torch traceback ("Padding size should be
    less than the corresponding input dimension") from ElasticTransform, after printing progress."""
    from typer.testing import CliRunner

    from synthbench.cli.main import build_app

    result = CliRunner().invoke(build_app(), ["data", "prepare", "phantom", "--out", str(tmp_path / "d"), "--size", "24",
                                              "--patients", "3", "--slices-per-patient", "2", "--train-factor", "1",
                                              "--test-factor", "1"])
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "augmentation at 24 px" in last and "49-pixel kernel" in last and "Traceback" not in result.output
    assert "augmenting" not in result.stderr and not (tmp_path / "d").exists()
