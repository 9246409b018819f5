"""Paired image-quality metrics: PSNR, SSIM, RMSE (paper Sec. "Evaluation", Table II).

Each compares synthetic image i with real image i and keeps one float per image, so the
paper's 10-fold mean and 95% interval (:mod:`synthbench.stats`) can be formed afterwards.
A metric's value over a set of images is the mean of its per-image values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from synthbench.metric import Metric
from synthbench.metrics import functional as Fm


class PairedMetric(Metric):
    """Shared state of per-image metrics: a float64 per image, in the order seen."""

    kind: ClassVar[str] = "paired"

    def reset(self) -> None:
        self._values: list[np.ndarray] = []

    #: Whether a mask given to :meth:`update` restricts the per-image value to the masked pixels.
    uses_mask: ClassVar[bool] = False

    def per_image(self, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def update(self, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """``mask`` (lung setting only): PSNR and RMSE average the squared error over its pixels."""
        mask = mask.to(self.device) if (mask is not None and self.uses_mask) else None
        values = self.per_image(real.to(self.device), fake.to(self.device), mask)
        self._values.append(values.detach().cpu().numpy().astype(np.float64))

    def values(self) -> np.ndarray:
        """Per-image values of every image seen, in order."""
        return np.concatenate(self._values) if self._values else np.zeros(0)

    def aggregate(self, values: np.ndarray) -> float:
        return float(np.mean(values)) if values.size else float("nan")

    def compute(self) -> dict[str, float]:
        return {self.name: self.aggregate(self.values())}

    def compute_folds(self, folds: Sequence[np.ndarray]) -> list[dict[str, float]]:
        v = self.values()
        return [{self.name: self.aggregate(v[np.asarray(idx)])} for idx in folds]

    def convention(self) -> dict[str, Any]:
        return {"input_range": [-1.0, 1.0], "aggregation": "mean of per-image values"}


class PSNR(PairedMetric):
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` per image, R = 2 for [-1, 1] images."""

    name = "psnr"
    higher_is_better = True
    summary = "PSNR in dB, data range 2 on [-1, 1] images (scikit-image peak_signal_noise_ratio)"

    uses_mask = True

    def per_image(self, real, fake, mask=None):
        return Fm.psnr_per_image(real, fake, Fm.DATA_RANGE, mask)

    def aggregate(self, values: np.ndarray) -> float:
        # Identical pairs have infinite PSNR; they are left out of the mean (counted in convention).
        return Fm.finite_mean(values)

    def convention(self) -> dict[str, Any]:
        v = self.values()
        return {
            **super().convention(),
            "data_range": Fm.DATA_RANGE,
            "reference": "skimage.metrics.peak_signal_noise_ratio",
            "identical_pairs_excluded": int(np.sum(~np.isfinite(v))),
            "lung_setting": "MSE averaged over lung pixels only",
        }


class SSIM(PairedMetric):
    """Structural similarity (Wang et al. 2004), Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03."""

    name = "ssim"
    higher_is_better = True
    summary = "SSIM, Gaussian window (sigma 1.5, 11 taps), data range 2 (scikit-image convention)"

    def per_image(self, real, fake, mask=None):
        return Fm.ssim_per_image(real, fake, Fm.DATA_RANGE)

    def convention(self) -> dict[str, Any]:
        return {
            **super().convention(),
            "data_range": Fm.DATA_RANGE,
            "window": "gaussian",
            "sigma": Fm.SSIM_SIGMA,
            "window_size": int(Fm.gaussian_window().numel()),
            "K1": Fm.SSIM_K1,
            "K2": Fm.SSIM_K2,
            "use_sample_covariance": False,
            "border": "mean over pixels >= 5 from the border (skimage crop)",
            "reference": "skimage.metrics.structural_similarity(gaussian_weights=True)",
        }


class RMSE(PairedMetric):
    """Root mean squared error per image, in [0, 1] intensity units (half the [-1, 1] RMSE)."""

    name = "rmse"
    higher_is_better = False
    summary = "RMSE in [0, 1] intensity units (images mapped from [-1, 1] by (x + 1) / 2)"

    uses_mask = True

    def per_image(self, real, fake, mask=None):
        return Fm.rmse_per_image(real, fake, Fm.DATA_RANGE, mask)

    def convention(self) -> dict[str, Any]:
        return {**super().convention(), "units": "[0, 1] intensity (RMSE on [-1, 1] divided by 2)",
                "lung_setting": "squared error averaged over lung pixels only"}
