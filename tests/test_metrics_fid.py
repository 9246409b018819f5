"""FID and KID end to end against pytorch-fid's own pipeline on the same PNG files (offline).

Both use the same ``InceptionV3`` instance loaded from synthbench's resolved weights; pytorch-fid
reads the PNGs itself (``convert('RGB')`` + ``ToTensor``) and computes its statistics with
``calculate_activation_statistics`` / ``calculate_frechet_distance``.
"""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_fid.fid_score import calculate_activation_statistics, calculate_frechet_distance
from scipy.ndimage import gaussian_filter
from torchmetrics.image.kid import poly_mmd

from synthbench.metrics import evaluate_folders
from synthbench.metrics.distribution import FewImagesWarning
from synthbench.metrics.inception import InceptionFeatures

N = 32  # 2 x 32 images at 64 px: Inception on CPU is slow


def _folders(root):
    rng = np.random.default_rng(7)
    for d in ("real", "fake"):
        (root / d).mkdir(parents=True)
    yy, xx = np.mgrid[:64, :64]
    for i in range(N):
        blob = np.exp(-((xx - 32 - rng.integers(-8, 8)) ** 2 + (yy - 32) ** 2) / 300.0)
        real = np.clip(0.6 * blob + 0.4 * gaussian_filter(rng.random((64, 64)), 2), 0, 1)
        fake = np.clip(0.5 * blob + 0.3 * rng.random((64, 64)), 0, 1)  # noisier: a real FID gap
        Image.fromarray(np.round(real * 255).astype(np.uint8)).save(root / "real" / f"{i:03d}.png")
        Image.fromarray(np.round(fake * 255).astype(np.uint8)).save(root / "fake" / f"{i:03d}.png")
    return root / "real", root / "fake"


def test_fid_and_kid_match_pytorch_fid_pipeline(tmp_path):
    real_dir, fake_dir = _folders(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = evaluate_folders(real_dir, fake_dir, metrics=["fid", "kid"], folds=2, batch_size=N, show_progress=False)
    assert any("rank-deficient" in str(w.message) for w in caught)
    assert any("rank-deficient" in m for m in df.attrs["warnings"])
    ours = df.set_index("metric").all_images

    model = InceptionFeatures("cpu").model  # the same instance evaluate_folders used
    files = lambda d: sorted(str(p) for p in d.glob("*.png"))  # noqa: E731
    with torch.no_grad():
        mu1, s1 = calculate_activation_statistics(files(real_dir), model, batch_size=N, device="cpu", num_workers=0)
        mu2, s2 = calculate_activation_statistics(files(fake_dir), model, batch_size=N, device="cpu", num_workers=0)
    ref = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert ref > 1.0  # the two folders really differ
    assert ours["fid"] == pytest.approx(ref, rel=1e-3)
    # the headline (issue 16) is that all-images FID, not the mean of the per-fold FIDs
    row = df.set_index("metric").loc["fid"]
    assert row["value"] == pytest.approx(ref, rel=1e-3) and row["interval"] == "jackknife"
    assert np.mean(row["fold_values"]) > ref and row["ci95"] > 0  # per-fold FIDs: biased by fold size

    conv = df.attrs["conventions"]["complete"]["fid"]
    assert len(conv["weights"]["sha256"]) == 64 and conv["images"] == N
    assert "repeat" in conv["gray_to_rgb"] and "299" in conv["resize"]
    # KID beside FID (its formula is checked against torchmetrics below): a clear positive gap
    assert ours["kid"] > 10 * ours["kid_std"]


def test_kid_on_inception_features_matches_torchmetrics(tmp_path):
    # Features through our extractor vs torchmetrics' MMD on the same features (cheap: 2 x 8 images).
    ext = InceptionFeatures("cpu")
    rng = np.random.default_rng(1)
    real = torch.from_numpy(rng.uniform(-1, 1, (8, 1, 64, 64)).astype(np.float32))
    fake = torch.from_numpy(gaussian_filter(rng.uniform(-1, 1, (8, 1, 64, 64)), (0, 0, 2, 2)).astype(np.float32))
    fr, ff = ext(real), ext(fake)
    assert fr.shape == (8, 2048) and torch.isfinite(fr).all()
    from synthbench.metrics.distribution import KID

    m = KID(subsets=3)
    m.use_extractor(ext)
    m.update_features(fr, ff)
    assert m.compute()["kid"] == pytest.approx(float(poly_mmd(fr.double(), ff.double())), rel=1e-9)
    assert issubclass(FewImagesWarning, UserWarning)
