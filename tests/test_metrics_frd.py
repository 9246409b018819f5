"""FRD (Frechet Radiomics Distance) as a metric plugin: equal to frd-score's own ``compute_frd`` on
the same PNG files, and a clear "not installed" record (never a number) without pyradiomics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from synthbench.metrics import evaluate_folders
from synthbench.metrics import radiomics as R
from synthbench.report import ComparisonResults
from synthbench.report.tables import image_quality_table

SIZE = 40  # pyradiomics takes about 0.5 s per image whatever the size: few, tiny images


def _images(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    real, fake, mask = [], [], []
    for i in range(n):
        base = gaussian_filter(rng.normal(size=(SIZE, SIZE)), 2)
        base = (base - base.min()) / np.ptp(base)
        real.append(np.round(base * 255).astype(np.uint8))
        fake.append(np.round(np.clip(base + rng.normal(0, 0.15, base.shape), 0, 1) * 255).astype(np.uint8))
        mask.append((xx - SIZE / 2) ** 2 + (yy - SIZE / 2) ** 2 < (SIZE / 3 + i % 3) ** 2)
    return np.array(real), np.array(fake), np.array(mask)


def _write(folder, arrays):
    folder.mkdir(parents=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:05d}.png")


def _tensor(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8[:, None].astype(np.float32) / 127.5 - 1.0)


@pytest.mark.skipif(R.unavailable() is not None, reason=f"FRD dependencies missing: {R.unavailable()}")
def test_frd_matches_frd_score_on_the_same_pngs(tmp_path):
    from frd_score import compute_frd

    real, fake, mask = _images(3)
    _write(tmp_path / "real", real)
    _write(tmp_path / "fake", fake)
    _write(tmp_path / "mask", mask.astype(np.uint8) * 255)
    # with the lung mask as region of interest (the lung setting)
    ref = compute_frd([str(tmp_path / "real"), str(tmp_path / "fake")],
                      paths_masks=[str(tmp_path / "mask"), str(tmp_path / "mask")], num_workers=1)
    m = R.FRD()
    m.update(_tensor(real), _tensor(fake), torch.from_numpy(mask[:, None]))
    assert m.compute()["frd"] == pytest.approx(float(ref), rel=1e-6)
    # without a mask: the whole image but one corner pixel (frd-score's rule), through the
    # process pool this time (spawned workers, no cached features)
    ref = compute_frd([str(tmp_path / "real"), str(tmp_path / "fake")], num_workers=1)
    R._features_cache.clear()
    m = R.FRD(workers=2)
    m.update(_tensor(real), _tensor(fake))
    assert R._pool is not None
    assert m.compute()["frd"] == pytest.approx(float(ref), rel=1e-6)
    assert m.convention()["formula"].startswith("ln(")


def test_frd_without_pyradiomics_is_recorded_not_installed(tmp_path, monkeypatch):
    real, fake, mask = _images(4)
    _write(tmp_path / "real", real)
    _write(tmp_path / "fake", fake)
    _write(tmp_path / "mask", mask.astype(np.uint8) * 255)
    monkeypatch.setattr(R, "unavailable", lambda: "not installed (ImportError: No module named 'radiomics'); hint")
    with pytest.warns(UserWarning, match="metric frd not computed: not installed"):
        df = evaluate_folders(tmp_path / "real", tmp_path / "fake", tmp_path / "mask", metrics=["frd", "rmse"],
                              folds=2, show_progress=False)
    frd = df[df.metric == "frd"]
    assert set(frd.setting) == {"complete", "lung"} and frd["value"].isna().all()
    assert frd["status"].str.startswith("not installed").all() and (df[df.metric == "rmse"]["status"] == "ok").all()
    with pytest.raises(Exception, match="not installed"):
        R.FRD().update(_tensor(real), _tensor(fake))
    # the leaderboard says so instead of a number
    results = ComparisonResults(protocol="smoke", dataset="x", data_hash="h", runs=[],
                                image_quality=df.assign(method="m", seed=0))
    table = image_quality_table(results)
    col = [c.key for c in table.columns].index("complete/FRD")
    assert table.rows[0][1][col].text() == "not installed"
