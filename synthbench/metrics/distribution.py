"""Distribution metrics on Inception features: FID and KID (paper Sec. "Evaluation", Table II).

FID follows the standard pytorch-fid convention (the paper's own FID convention is not stated,
see paper.md Table II note). Both keep one 2048-d float32 feature per image and side (the only
state that grows), so folds (:mod:`synthbench.stats`) can be formed afterwards.

The headline value of both is computed on *all* images (``compute``): a set statistic is biased
by the set size, so the mean of per-fold values (n/10 images each) sits well above it.
``evaluate_folders`` puts a delete-one-fold jackknife interval beside it
(:func:`synthbench.stats.jackknife_ci`, :attr:`InceptionMetric.interval`). With fewer than
2048 images the covariance is rank-deficient: FID is still computed as pytorch-fid does and a
warning is issued; KID (unbiased) should be read beside it. KID with fewer images than its subset
size is flagged too: its subsets are then half the set, and the estimate can be negative.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from synthbench.errors import SynthbenchError
from synthbench.metric import Metric
from synthbench.metrics import functional as Fm
from synthbench.metrics.inception import FID_MIN_IMAGES, InceptionFeatures


class FewImagesWarning(UserWarning):
    """FID over fewer than 2048 images (rank-deficient covariance, biased upward), or KID over
    fewer images than its subset size (spread over half-size subsets; may be negative)."""


class InceptionMetric(Metric):
    """Shared state: Inception features of every real and synthetic image seen, in order.

    Options: ``weights`` (explicit path of the FID Inception weights; else the resolver's order).
    :meth:`update_features` lets a caller compute features once for FID and KID together.
    """

    kind: ClassVar[str] = "distribution"
    #: The headline is the value on all images; its interval a delete-one-fold jackknife.
    interval: ClassVar[str] = "jackknife"

    def __init__(self, device: torch.device | str = "cpu", **options: Any):
        super().__init__(device, **options)
        self._extractor: InceptionFeatures | None = None

    @property
    def extractor(self) -> InceptionFeatures:
        if self._extractor is None:
            self._extractor = InceptionFeatures(self.device, self.options.get("weights"))
        return self._extractor

    def use_extractor(self, extractor: InceptionFeatures) -> None:
        """Share one loaded network between FID and KID (features computed once per batch)."""
        self._extractor = extractor

    def reset(self) -> None:
        self._real: list[np.ndarray] = []
        self._fake: list[np.ndarray] = []

    def update(self, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.update_features(self.extractor(real), self.extractor(fake))

    def update_features(self, real_features: torch.Tensor, fake_features: torch.Tensor) -> None:
        """Add precomputed ``[B, 2048]`` features (same order as images)."""
        self._real.append(np.asarray(real_features, dtype=np.float32))
        self._fake.append(np.asarray(fake_features, dtype=np.float32))

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._real:
            raise SynthbenchError(f"{self.name}: no images were given")
        return np.concatenate(self._real), np.concatenate(self._fake)

    @property
    def count(self) -> int:
        return int(sum(len(r) for r in self._real))

    def convention(self) -> dict[str, Any]:
        return {**self.extractor.convention(), "images": self.count}


class FID(InceptionMetric):
    """Frechet Inception distance (Heusel et al. 2017) in the pytorch-fid convention."""

    name = "fid"
    higher_is_better = False
    summary = "FID, pytorch-fid InceptionV3 (2015 TF weights), gray repeated to RGB, bilinear 299"

    def _fid(self, real: np.ndarray, fake: np.ndarray) -> float:
        if len(real) < FID_MIN_IMAGES:
            warnings.warn(
                f"FID over {len(real)} images (< {FID_MIN_IMAGES}): the feature covariance is rank-deficient "
                "and FID is biased upward; read KID beside it",
                FewImagesWarning,
                stacklevel=3,
            )
        return Fm.fid_from_features(real, fake)

    def compute(self) -> dict[str, float]:
        return {self.name: self._fid(*self.features())}

    def compute_folds(self, folds: Sequence[np.ndarray]) -> list[dict[str, float]]:
        real, fake = self.features()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewImagesWarning)  # compute() already warned once
            return [{self.name: self._fid(real[idx], fake[idx])} for idx in map(np.asarray, folds)]

    def convention(self) -> dict[str, Any]:
        return {**super().convention(), "formula": "pytorch_fid.fid_score.calculate_frechet_distance on mean/cov (ddof 1)"}


class KID(InceptionMetric):
    """Kernel Inception distance (Binkowski et al. 2018): unbiased MMD^2, kernel (x.y/d + 1)^3.

    ``kid``: the unbiased estimate on all images. ``kid_std``: the standard deviation of the
    estimate over ``subsets`` random subsets of ``m = min(subset_size, n // 2)`` images each
    (torchmetrics' spread; with ``m = n``, the old rule, every subset is the whole set and the
    spread is 0 up to rounding). Options: ``subsets`` (100), ``subset_size`` (1000), ``seed`` (0).
    """

    name = "kid"
    higher_is_better = False
    summary = "KID, unbiased MMD^2 with cubic polynomial kernel on all images; spread over random subsets"

    def _params(self) -> tuple[int, int, int]:
        o = self.options
        return int(o.get("subsets", 100)), int(o.get("subset_size", 1000)), int(o.get("seed", 0))

    def subset_size(self, n: int) -> int:
        """Images per subset for ``kid_std``: at most half the set, so subsets differ."""
        return min(self._params()[1], n // 2)

    def compute(self) -> dict[str, float]:
        real, fake = self.features()
        subsets, size, seed = self._params()
        n = min(len(real), len(fake))
        kid = Fm.poly_mmd2(torch.from_numpy(real), torch.from_numpy(fake))
        m = self.subset_size(n)
        std = Fm.kid_from_features(real, fake, subsets, m, seed)[1] if m >= 2 and subsets > 1 else float("nan")
        if n < size:
            warnings.warn(
                f"KID over {n} images (< its subset size {size}): kid_std is the spread over subsets of {m} "
                "images, and KID can be negative at this size (a negative KID means no measurable difference)",
                FewImagesWarning,
                stacklevel=2,
            )
        elif kid < 0:
            warnings.warn(f"KID is negative ({kid:.3g}): below its sampling noise", FewImagesWarning, stacklevel=2)
        return {self.name: kid, f"{self.name}_std": std}

    def compute_folds(self, folds: Sequence[np.ndarray]) -> list[dict[str, float]]:
        real, fake = self.features()
        r, f = torch.from_numpy(real), torch.from_numpy(fake)
        return [{self.name: Fm.poly_mmd2(r[idx], f[idx])} for idx in map(torch.as_tensor, folds)]

    def convention(self) -> dict[str, Any]:
        subsets, size, seed = self._params()
        return {
            **super().convention(),
            "kernel": "(x.y / 2048 + 1)^3",
            "estimator": "unbiased MMD^2 (torchmetrics poly_mmd) on all images",
            "spread": f"kid_std: std over {subsets} random subsets of min({size}, n // 2) images (seed {seed})",
            "subsets": subsets,
            "subset_size": f"min({size}, n // 2)",
            "seed": seed,
        }
