"""Frechet Radiomics Distance (FRD v1; Konz, Osuala et al., Medical Image Analysis 2026): a
distribution distance in a feature space made for medical images, beside FID's ImageNet one.

Features (``frd-score``'s v1 2-D pipeline, ``frd_score.frd.process_image_mask_pair``): PyRadiomics
with frd-score's own configuration (``frd_score/configs/extraction_2d.yaml``: Original, LoG
sigma 2-5 and wavelet images; first-order, GLCM, GLRLM, GLSZM, NGTDM features plus the numeric
diagnostics; bin width 5, resampled to 2-pixel spacing), computed on each image's 8-bit gray
levels (0..255, what frd-score reads from a PNG). The region of interest is the lung mask in the
lung setting and, without a mask, the whole image except one corner pixel (frd-score's rule).
An image whose region has at most one pixel, or whose features hold a NaN, is left out of its set.

Distance (``frd_score.frd.calculate_feature_statistics``, v1): features as float32; z-scores
with the real set's mean and population standard deviation; feature columns that are NaN or
infinite after that are dropped; ``FRD = ln(|mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)))``
on the z-scores (``np.cov``, ddof 1). Equal to ``frd_score.compute_frd`` on the same PNG files
(tests/test_metrics_conventions.py).

Optional: needs ``pyradiomics`` and ``frd-score`` (docs/metrics.md says how to install them).
Without them :meth:`FRD.unavailable_reason` says so and ``evaluate_folders`` records the metric
as "not installed" (never a number).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch

from synthbench.errors import SynthbenchError
from synthbench.metric import Metric
from synthbench.metrics import functional as Fm

INSTALL_HINT = (
    "FRD needs pyradiomics and frd-score: pip install versioneer numpy wheel && "
    "pip install --no-build-isolation pyradiomics==3.0.1 && "
    "pip install --no-deps frd-score==1.0.1 && pip install SimpleITK PyWavelets pykwalify six"
)
FRD_VERSION = "v1"
_CACHE_SIZE = 50_000
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """``None`` when pyradiomics and frd-score import, else why FRD cannot be computed."""
    try:
        with warnings.catch_warnings():  # pyradiomics' import-time deprecation noise
            warnings.simplefilter("ignore")
            import frd_score  # noqa: F401
            import radiomics  # noqa: F401
            import SimpleITK  # noqa: F401
    except Exception as exc:  # ImportError, or a broken C extension
        return f"not installed ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
    return None


@lru_cache(maxsize=1)
def _extractor():
    """frd-score's v1 2-D PyRadiomics extractor (its YAML configuration, its LoG sigmas)."""
    from frd_score import frd

    frd._ensure_radiomics()
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    return frd.get_feature_extractor(FRD_VERSION, image_dim=2)


_features_cache: OrderedDict[bytes, np.ndarray | None] = OrderedDict()
_pool = None


def _region(levels: np.ndarray, roi: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The image as frd-score reads a PNG (float32 gray levels) and its mask (module docstring)."""
    img = np.ascontiguousarray(levels, dtype=np.float32)
    if roi is None:
        mask = np.ones(img.shape, dtype=np.uint8)
        mask[0, 0] = 0  # frd-score's workaround of pyradiomics issue 765
    else:
        mask = np.ascontiguousarray(roi, dtype=np.float32)  # frd-score: a 0/255 PNG mask / 255.0
    return img, mask


def _extract(img: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """``frd_score.frd.process_image_mask_pair`` (v1, 2-D) on arrays; ``None`` for a region <= 1 pixel."""
    import SimpleITK as sitk

    if mask.sum() <= 1:
        return None
    image3d = sitk.GetImageFromArray(img[None])
    image3d.SetSpacing((1.0, 1.0, 1.0))
    mask3d = sitk.GetImageFromArray(mask[None])
    mask3d.SetSpacing((1.0, 1.0, 1.0))
    output = _extractor().execute(image3d, mask3d)
    out = []
    for name, value in output.items():
        if "diagnostics" not in name:
            out.append(float(value))
        else:  # frd-score v1 keeps the numeric diagnostics, as the paper's pipeline did
            try:
                out.append(float(value))
            except (TypeError, ValueError):
                pass
    return np.asarray(out, dtype=np.float64)


def _extract_pair(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray | None:
    return _extract(*pair)


def default_workers() -> int:
    """Processes for PyRadiomics (about 0.5 s per image): ``SYNTHBENCH_FRD_WORKERS``, else half the
    CPU cores up to 8 (1, i.e. no pool, on a machine of 3 cores or fewer)."""
    env = os.environ.get("SYNTHBENCH_FRD_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError as exc:
            raise SynthbenchError(f"SYNTHBENCH_FRD_WORKERS must be an integer, got {env!r}") from exc
    return max(1, min(8, (os.cpu_count() or 1) // 2))


def features(items: Sequence[tuple[np.ndarray, np.ndarray | None]], workers: int = 1) -> list[np.ndarray | None]:
    """Radiomic feature vectors (float64) of ``(levels [H, W] in 0..255, roi bool [H, W] or None)``.

    ``roi=None``: the whole image but its corner pixel. ``None`` marks an image whose region has at
    most one pixel (frd-score skips such images). Results are cached by content, so the real images
    of several methods are measured once; uncached images go to ``workers`` processes (spawned
    once, reused) when there are more than ``workers`` of them.
    """
    global _pool
    pairs = [_region(levels, roi) for levels, roi in items]
    keys = [hashlib.sha1(img.tobytes() + mask.tobytes() + bytes(str(img.shape), "ascii")).digest() for img, mask in pairs]
    with _LOCK:
        missing = list(dict.fromkeys(k for k in keys if k not in _features_cache))
    todo = [pairs[keys.index(k)] for k in missing]
    if workers > 1 and len(todo) > workers:
        if _pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        computed = list(_pool.map(_extract_pair, todo, chunksize=max(1, len(todo) // (4 * workers))))
    else:
        computed = [_extract(img, mask) for img, mask in todo]
    with _LOCK:
        for k, v in zip(missing, computed, strict=True):
            _features_cache[k] = v
        out = []
        for k in keys:
            _features_cache.move_to_end(k)
            out.append(_features_cache[k])
        while len(_features_cache) > _CACHE_SIZE:
            _features_cache.popitem(last=False)
    return out


def frd_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FRD v1 of two ``[N, F]`` radiomic feature sets (module docstring); rows with NaN are dropped."""
    r = np.asarray(real, dtype=np.float64)
    f = np.asarray(fake, dtype=np.float64)
    r = r[~np.isnan(r).any(axis=1)].astype(np.float32)
    f = f[~np.isnan(f).any(axis=1)].astype(np.float32)
    if min(len(r), len(f)) < 2:
        raise SynthbenchError(f"FRD needs at least 2 images per set with features, got {min(len(r), len(f))}")
    mean, std = np.nanmean(r, axis=0), np.nanstd(r, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        zr, zf = (r - mean) / std, (f - mean) / std
    keep = np.isfinite(zr).all(axis=0) & np.isfinite(zf).all(axis=0)
    zr, zf = zr[:, keep], zf[:, keep]
    if not keep.any():
        raise SynthbenchError("FRD: no radiomic feature varies over the real images")
    with warnings.catch_warnings():  # sqrtm of a rank-deficient product: said once by FRD.compute
        warnings.simplefilter("ignore")
        d2 = Fm.frechet_distance(zr.mean(axis=0), np.cov(zr, rowvar=False), zf.mean(axis=0),
                                 np.cov(zf, rowvar=False))
    return math.log(d2) if d2 > 0 else float("-inf")


def _levels(images: torch.Tensor) -> np.ndarray:
    """``[B, 1, H, W]`` in [-1, 1] -> the 8-bit gray levels of the PNGs, float ``[B, H, W]``."""
    return torch.round((images.detach().float().cpu()[:, 0] + 1.0) * 127.5).clamp(0, 255).numpy()


class FRD(Metric):
    """Frechet Radiomics Distance v1 (frd-score) between the real and the synthetic images.

    Options: ``workers`` (processes for PyRadiomics; default :func:`default_workers`).
    """

    name = "frd"
    higher_is_better = False
    kind: ClassVar[str] = "distribution"
    interval: ClassVar[str] = "jackknife"
    uses_mask: ClassVar[bool] = True
    summary = "FRD v1 (frd-score): ln Frechet distance of z-scored PyRadiomics features (Original, LoG, wavelet)"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return unavailable()

    def reset(self) -> None:
        self._real: list[np.ndarray | None] = []
        self._fake: list[np.ndarray | None] = []

    def update(self, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        reason = unavailable()
        if reason:
            raise SynthbenchError(f"FRD: {reason}")
        rl, fl = _levels(real), _levels(fake)
        roi = mask.detach().cpu().numpy()[:, 0].astype(bool) if mask is not None else [None] * len(rl)
        workers = int(self.options.get("workers") or default_workers())
        values = features([*zip(rl, roi, strict=True), *zip(fl, roi, strict=True)], workers)
        self._real += values[: len(rl)]
        self._fake += values[len(rl) :]

    def _arrays(self, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        width = next((len(v) for v in self._real + self._fake if v is not None), None)
        if width is None:
            raise SynthbenchError("FRD: no image had a region of more than one pixel")
        rows = range(len(self._real)) if idx is None else np.asarray(idx)

        def stack(side: list[np.ndarray | None]) -> np.ndarray:
            return np.stack([side[i] if side[i] is not None else np.full(width, np.nan) for i in rows])

        return stack(self._real), stack(self._fake)

    def compute(self) -> dict[str, float]:
        real, fake = self._arrays()
        dropped = int(np.isnan(real).any(axis=1).sum() + np.isnan(fake).any(axis=1).sum())
        if dropped:
            warnings.warn(f"FRD: {dropped} image(s) without radiomic features (region <= 1 pixel or NaN) were left out",
                          UserWarning, stacklevel=2)
        n, features = min(len(real), len(fake)), real.shape[1]
        if n <= features:
            warnings.warn(f"FRD over {n} images (<= {features} radiomic features): the feature covariance is "
                          "rank-deficient, as for FID below 2048 images; compare FRD values at equal image counts",
                          UserWarning, stacklevel=2)
        return {self.name: frd_from_features(real, fake)}

    def compute_folds(self, folds: Sequence[np.ndarray]) -> list[dict[str, float]]:
        out = []
        for idx in folds:
            try:
                out.append({self.name: frd_from_features(*self._arrays(idx))})
            except SynthbenchError:  # fewer than 2 images with features in this fold: no value
                out.append({self.name: float("nan")})
        return out

    @property
    def count(self) -> int:
        return len(self._real)

    def convention(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {
            "implementation": f"frd-score {version('frd-score')} (v1 2-D configuration), pyradiomics {version('pyradiomics')}",
            "features": "PyRadiomics on 8-bit gray levels: Original, LoG (sigma 2, 3, 4, 5), wavelet; "
                        "firstorder, glcm, glrlm, glszm, ngtdm, numeric diagnostics",
            "region": "lung mask (lung setting); whole image but one corner pixel (no mask)",
            "normalization": "z-score with the real set's mean and population std (D1 reference); "
                             "non-finite columns dropped",
            "formula": "ln(|mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)))",
            "images": self.count,
        }
