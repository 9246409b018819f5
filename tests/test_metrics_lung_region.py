"""Lung-only setting: PSNR/RMSE average over lung pixels only (numpy reference), so they differ
from the complete-image values; outside the lung the complete image is the real image."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from synthbench.metrics.evaluate import evaluate_folders
from synthbench.metrics.paired import PSNR, RMSE


def test_masked_psnr_rmse_match_numpy_on_lung_pixels():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    fake = (real + 0.1 * torch.randn(3, 1, 16, 16, generator=g)).clamp(-1, 1)
    mask = torch.zeros(3, 1, 16, 16, dtype=torch.bool)
    mask[:, :, 4:12, 3:10] = True
    psnr, rmse = PSNR(), RMSE()
    psnr.update(real, fake, mask)
    rmse.update(real, fake, mask)
    r, f, m = real.double().numpy(), fake.double().numpy(), mask.numpy()
    mse = np.array([((r[i] - f[i])[m[i]] ** 2).mean() for i in range(3)])
    np.testing.assert_allclose(psnr.values(), 10 * np.log10(4.0 / mse), rtol=1e-10)
    np.testing.assert_allclose(rmse.values(), np.sqrt(mse) / 2, rtol=1e-10)


def _write(folder, arrays):
    folder.mkdir()
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:05d}.png")


def test_lung_setting_differs_from_complete(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (6, 32, 32), dtype=np.uint8)
    fake = np.clip(real.astype(int) + rng.integers(-40, 40, real.shape), 0, 255).astype(np.uint8)
    mask = np.zeros_like(real)
    mask[:, 8:24, 8:20] = 255
    _write(tmp_path / "real", real)
    _write(tmp_path / "fake", fake)
    _write(tmp_path / "mask", mask)
    df = evaluate_folders(tmp_path / "real", tmp_path / "fake", tmp_path / "mask",
                          metrics=["psnr", "rmse"], folds=2, show_progress=False)
    value = df.set_index(["setting", "metric"])["all_images"]
    # Outside the mask the complete image equals the real one, so its MSE is diluted by the
    # zero-error pixels; the lung setting averages over lung pixels only.
    lung_fraction = (mask > 0).mean()
    assert value[("lung", "rmse")] > value[("complete", "rmse")]
    np.testing.assert_allclose(
        value[("complete", "rmse")] ** 2 / lung_fraction,
        value[("lung", "rmse")] ** 2, rtol=0.05,
    )
