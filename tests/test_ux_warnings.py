"""Our own code raises no library warnings (issue 22): SciPy's deprecated ``sqrtm(disp=...)`` in
the Fréchet distance, and a read-only NumPy array handed to ``torch.from_numpy`` in augmentation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from synthbench.data.augment import augment_one, build_transform
from synthbench.metrics.functional import frechet_distance


def test_frechet_distance_raises_no_warning():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(0.3, 1.2, size=(40, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old sqrtm(..., disp=False) is a DeprecationWarning in SciPy >= 1.16
        value = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert value == pytest.approx(expected, rel=1e-9)


def test_augment_accepts_read_only_arrays_without_warning():
    image = np.linspace(-1, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    label = (np.arange(32 * 32).reshape(32, 32) % 3).astype(np.uint8)
    image.setflags(write=False)  # as a memory-mapped split hands them over
    label.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy on a non-writable array is a UserWarning
        out_img, out_lbl = augment_one(build_transform(32), image, label, seed=3)
    again_img, again_lbl = augment_one(build_transform(32), image.copy(), label.copy(), seed=3)
    assert np.array_equal(out_img, again_img) and np.array_equal(out_lbl, again_lbl)
