"""Issue 16: the conventions around the metrics, each pinned (and each failing on the old rule).

Headline FID/KID on all images with a fold jackknife interval, a meaningful kid_std, lung SSIM over
lung pixels, one rule for empty masks and identical pairs, both settings' conventions, natural
file order, truncated PNGs as a clear error, negative KID never best.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity
from torchmetrics.image.kid import poly_mmd
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.metrics import evaluate_folders
from synthbench.metrics import functional as Fm
from synthbench.metrics.distribution import FID, KID, FewImagesWarning
from synthbench.metrics.evaluate import _metric_rows
from synthbench.report import ComparisonResults
from synthbench.report.markdown import table_md
from synthbench.report.tables import image_quality_table
from synthbench.stats import folds, jackknife_ci, mean_ci, natural_key

PAIRED = ["psnr", "ssim", "rmse"]


def _features(n: int, shift: float, seed: int, dim: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, dim)) + shift).astype(np.float32)


def _stats(x: np.ndarray):
    x = x.astype(np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


# --------------------------------------------------------------------------- FID / KID headline
def test_headline_fid_is_all_images_with_fold_jackknife_interval():
    # Before: value = mean of the per-fold FIDs (n/10 images each), well above the all-images FID.
    real, fake = _features(40, 0.0, 0), _features(40, 0.3, 1)
    fid = FID()
    fid.update_features(torch.from_numpy(real), torch.from_numpy(fake))
    parts = folds(40, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewImagesWarning)
        (row,) = _metric_rows("complete", fid, parts, 40, 0, 0)
    ref = calculate_frechet_distance(*_stats(real), *_stats(fake))  # pytorch-fid on ALL images
    assert row["value"] == pytest.approx(ref, rel=1e-6) and row["all_images"] == row["value"]
    fold_ref = [calculate_frechet_distance(*_stats(real[p]), *_stats(fake[p])) for p in parts]
    assert row["fold_values"] == pytest.approx(fold_ref, rel=1e-6)
    assert np.mean(fold_ref) > 1.2 * ref  # the old headline: biased by the fold size
    rest = [np.setdiff1d(np.arange(40), p) for p in parts]
    loo = [calculate_frechet_distance(*_stats(real[r]), *_stats(fake[r])) for r in rest]
    assert row["interval"] == "jackknife"
    assert row["ci95"] == pytest.approx(jackknife_ci(loo), rel=1e-6) and row["ci95"] > 0


def test_jackknife_of_a_mean_is_the_fold_t_interval():
    x = np.random.default_rng(3).normal(size=50)
    parts = folds(50, 10)
    loo = [np.delete(x, p).mean() for p in parts]
    assert jackknife_ci(loo) == pytest.approx(mean_ci([x[p].mean() for p in parts])[1], rel=1e-12)
    assert np.isnan(jackknife_ci([1.0]))


def test_kid_all_images_and_a_spread_that_is_one():
    # Before: subsets of min(1000, n) = n images: every subset the whole set, kid_std ~ 1e-16.
    real, fake = _features(40, 0.0, 0), _features(40, 0.5, 1)
    kid = KID(subsets=50)
    kid.update_features(torch.from_numpy(real), torch.from_numpy(fake))
    with pytest.warns(FewImagesWarning, match="subset size 1000"):
        out = kid.compute()
    assert out["kid"] == pytest.approx(float(poly_mmd(torch.from_numpy(real).double(), torch.from_numpy(fake).double())),
                                       rel=1e-9)
    assert kid.subset_size(40) == 20 and out["kid_std"] > 1e-3 * abs(out["kid"])
    assert out["kid_std"] > 1e-6


# --------------------------------------------------------------------------- lung SSIM
def test_masked_ssim_is_skimage_full_map_over_the_mask():
    rng = np.random.default_rng(0)
    real = gaussian_filter(rng.uniform(-1, 1, (2, 1, 40, 36)), (0, 0, 2, 2))
    fake = np.clip(real + rng.normal(0, 0.1, real.shape), -1, 1)
    mask = np.zeros(real.shape, bool)
    mask[0, 0, 0:20, 3:30] = True  # touches the border: the mirrored full map is used there
    mask[1, 0, 10:35, 8:36] = True
    ours = Fm.ssim_per_image(torch.from_numpy(real), torch.from_numpy(fake), mask=torch.from_numpy(mask)).numpy()
    for i in range(2):
        _, full = structural_similarity(real[i, 0], fake[i, 0], data_range=2.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
        assert ours[i] == pytest.approx(full[mask[i, 0]].mean(), rel=1e-9)
    assert np.isnan(Fm.ssim_per_image(torch.from_numpy(real), torch.from_numpy(fake),
                                      mask=torch.zeros(real.shape, dtype=torch.bool)).numpy()).all()


def _write(folder, arrays, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(np.asarray(a, dtype=np.uint8)).save(folder / (names[i] if names else f"{i:05d}.png"))


def _u8(x: np.ndarray) -> np.ndarray:
    return np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)


def test_noise_lungs_score_low_lung_ssim(tmp_path, phantom_dir):
    # Before: lung-only SSIM compared whole lung-only images (mostly the constant -1): noise lungs 0.8.
    from synthbench.data.prepared import PreparedDataset

    data = PreparedDataset(phantom_dir)
    split = data.split("test")
    lung = data.lung_mask(torch.from_numpy(np.asarray(split.label, dtype=np.int64))).numpy()[:, 0]
    keep = lung.reshape(len(lung), -1).mean(axis=1) > 0.05
    real = np.asarray(split.image, dtype=np.float32)[keep]
    lung = lung[keep]
    noise = np.random.default_rng(0).uniform(-1, 1, real.shape).astype(np.float32)
    fake = np.where(lung, noise, real)
    _write(tmp_path / "real", _u8(real))
    _write(tmp_path / "fake", _u8(fake))
    _write(tmp_path / "mask", lung.astype(np.uint8) * 255)
    df = evaluate_folders(tmp_path / "real", tmp_path / "fake", tmp_path / "mask", metrics=PAIRED, folds=2,
                          show_progress=False)
    v = df.set_index(["setting", "metric"])["value"]
    assert v[("lung", "ssim")] < 0.15  # the lung holds noise: low
    assert v[("lung", "ssim_paper")] > 0.5  # the paper's definition hides it (kept, labelled)
    assert v[("complete", "ssim")] > v[("lung", "ssim")] + 0.3


# --------------------------------------------------------------------------- edge cases, one rule
def _synthesis(root, n=8, size=32, seed=0, names=None):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    real, fake, mask = [], [], []
    for i in range(n):
        base = gaussian_filter(rng.normal(size=(size, size)), 2)
        base = (base - base.min()) / np.ptp(base) * 2 - 1
        real.append(base)
        fake.append(np.clip(base + rng.normal(0, 0.05 + 0.02 * i, base.shape), -1, 1))
        mask.append((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 3 + i % 3) ** 2)
    return np.array(real), np.array(fake), np.array(mask)


def test_empty_mask_one_rule_with_a_warning(tmp_path):
    # Before: RMSE NaN dropped a whole fold, PSNR dropped the image, SSIM counted it as 1.0; no warning.
    real, fake, mask = _synthesis(tmp_path, n=9)
    mask[4] = False
    _write(tmp_path / "a" / "real", _u8(real))
    _write(tmp_path / "a" / "fake", _u8(fake))
    _write(tmp_path / "a" / "mask", mask.astype(np.uint8) * 255)
    with pytest.warns(UserWarning, match="1 of 9 images have an empty lung mask"):
        df = evaluate_folders(tmp_path / "a" / "real", tmp_path / "a" / "fake", tmp_path / "a" / "mask",
                              metrics=PAIRED, folds=2, show_progress=False)
    assert (df["excluded"] == 1).all() and (df["n"] == 8).all()
    assert df.attrs["source"]["excluded_empty_mask"] == ["00004.png"]
    assert any("empty lung mask" in w for w in df.attrs["warnings"])
    # the same numbers as without that image, in every metric and both settings
    keep = [i for i in range(9) if i != 4]
    names = [f"{i:05d}.png" for i in keep]
    _write(tmp_path / "b" / "real", _u8(real[keep]), names)
    _write(tmp_path / "b" / "fake", _u8(fake[keep]), names)
    _write(tmp_path / "b" / "mask", mask[keep].astype(np.uint8) * 255, names)
    ref = evaluate_folders(tmp_path / "b" / "real", tmp_path / "b" / "fake", tmp_path / "b" / "mask",
                           metrics=PAIRED, folds=2, show_progress=False)
    assert np.allclose(df["value"], ref["value"]) and np.isfinite(df["value"]).all()
    assert (ref["excluded"] == 0).all()


def test_metric_classes_share_the_empty_mask_rule():
    # At the Metric API too: no value for an empty mask, left out of every paired metric's mean.
    from synthbench.metrics.paired import PSNR, RMSE, SSIM

    real, fake, mask = (torch.from_numpy(a[:, None]) for a in _synthesis(None, n=4))
    mask[1] = False
    for cls in (PSNR, SSIM, RMSE):
        m, ref = cls(), cls()
        m.update(real, fake, mask)
        keep = [0, 2, 3]
        ref.update(real[keep], fake[keep], mask[keep])
        assert m.undefined() == 1 and np.isnan(m.values()[1])
        assert m.compute()[cls.name] == pytest.approx(ref.compute()[cls.name])


def test_identical_pairs_counted_and_scored_in_every_metric(tmp_path):
    real, fake, mask = _synthesis(tmp_path, n=6)
    fake[2] = real[2]
    _write(tmp_path / "real", _u8(real))
    _write(tmp_path / "fake", _u8(fake))
    _write(tmp_path / "mask", mask.astype(np.uint8) * 255)
    with pytest.warns(UserWarning, match="1 of 6 pairs are identical"):
        df = evaluate_folders(tmp_path / "real", tmp_path / "fake", tmp_path / "mask", metrics=PAIRED, folds=2,
                              show_progress=False)
    assert (df["identical"] == 1).all() and (df["n"] == 6).all()
    assert np.isfinite(df["value"]).all()
    conv = df.attrs["conventions"]
    assert conv["complete"]["psnr"]["identical_pairs"] == 1 and conv["lung"]["rmse"]["identical_pairs"] == 1


def test_conventions_keep_both_settings(tmp_path):
    # Before: one entry per metric, the lung setting overwrote the complete one.
    real, fake, mask = _synthesis(tmp_path, n=4)
    _write(tmp_path / "real", _u8(real))
    _write(tmp_path / "fake", _u8(fake))
    _write(tmp_path / "mask", mask.astype(np.uint8) * 255)
    df = evaluate_folders(tmp_path / "real", tmp_path / "fake", tmp_path / "mask", metrics=["ssim"], folds=2,
                          show_progress=False)
    conv = df.attrs["conventions"]
    assert set(conv) == {"complete", "lung"} and "ssim" in conv["complete"] and "ssim" in conv["lung"]


def test_folds_follow_natural_file_order(tmp_path):
    # Before: sorted(names): 1, 10, 11, 12, 2, 3, ... so fold 1 held slices 1, 10, 11, 12, 2, 3.
    real, fake, _ = _synthesis(tmp_path, n=12)
    names = [f"{i + 1}.png" for i in range(12)]
    _write(tmp_path / "real", _u8(real), names)
    _write(tmp_path / "fake", _u8(fake), names)
    assert sorted(names, key=natural_key)[:3] == ["1.png", "2.png", "3.png"]
    df = evaluate_folders(tmp_path / "real", tmp_path / "fake", metrics=["rmse"], folds=2, show_progress=False)
    real_q = torch.from_numpy(_u8(real)[:, None] / 127.5 - 1.0)
    per = Fm.rmse_per_image(real_q, torch.from_numpy(_u8(fake)[:, None] / 127.5 - 1.0)).numpy()
    assert df["fold_values"].iloc[0] == pytest.approx([per[:6].mean(), per[6:].mean()])


def test_truncated_png_is_a_one_line_error(tmp_path):
    # Issue 14: before, a traceback (OSError: image file is truncated) from the batch loader.
    real, fake, _ = _synthesis(tmp_path, n=4)
    _write(tmp_path / "real", _u8(real))
    _write(tmp_path / "fake", _u8(fake))
    bad = tmp_path / "fake" / "00002.png"
    bad.write_bytes(bad.read_bytes()[:-60])
    res = CliRunner().invoke(build_app(), ["evaluate", "--real", str(tmp_path / "real"), "--fake",
                                           str(tmp_path / "fake"), "--metrics", "rmse", "--folds", "2"])
    assert res.exit_code == 2, res.output
    assert res.output.strip().count("\n") == 0 and "00002.png" in res.output and "cannot read image" in res.output


# --------------------------------------------------------------------------- report
def _iq(kid_values: dict[str, float]) -> pd.DataFrame:
    rows = []
    for method, kid in kid_values.items():
        for metric, value, interval in (("fid", 30.0 + kid * 100, "jackknife"), ("kid", kid, "jackknife"),
                                        ("frd", 2.0 + kid, "jackknife"), ("ssim", 0.5, "folds"),
                                        ("ssim_paper", 0.8, "folds")):
            setting = "lung"
            rows.append({"method": method, "seed": 0, "setting": setting, "metric": metric, "value": value,
                         "ci95": 0.01, "interval": interval, "n": 20, "folds": 2, "fold_values": [value] * 2,
                         "higher_is_better": metric.startswith("ssim"), "excluded": 1, "identical": 0,
                         "status": "ok"})
    return pd.DataFrame(rows)


def test_negative_kid_is_never_best_and_new_columns_show(tmp_path):
    # Issue 15: before, the lowest (negative) KID was marked best.
    results = ComparisonResults(protocol="smoke", dataset="x", data_hash="h", runs=[],
                                image_quality=_iq({"a": -0.002, "b": 0.01}))
    table = image_quality_table(results)
    labels = [c.key for c in table.columns]
    assert labels[:3] == ["lung/FID", "lung/FRD", "lung/SSIM"]  # FRD beside FID
    assert "lung/SSIM (paper)" in labels
    kid = labels.index("lung/KID")
    assert not any(cells[kid].best for _, cells in table.rows)
    assert "Not ranked" in table.note and "KID" in table.note
    assert "jackknife" in table.note and "left out of every metric: a 1, b 1" in table.note
    fid = labels.index("lung/FID")
    assert [cells[fid].best for _, cells in table.rows] == [True, False]
    md = table_md(table)  # leaderboard.md (report.html renders the same Table)
    assert "FID \u2193 | FRD \u2193 | SSIM \u2191 | SSIM (paper) \u2191" in md.splitlines()[0]
    assert "**" not in md.splitlines()[2].split("|")[-2]  # KID cell of method a: not bold
    # positive KIDs are ranked as before
    table = image_quality_table(ComparisonResults(protocol="smoke", dataset="x", data_hash="h", runs=[],
                                                  image_quality=_iq({"a": 0.004, "b": 0.01})))
    assert [cells[kid].best for _, cells in table.rows] == [True, False]
