"""Paired image-quality metrics: PSNR, SSIM, RMSE (paper Sec. "Evaluation", Table II).

Each compares synthetic image i with real image i and keeps one float per image, so the
paper's 10-fold mean and 95% interval (:mod:`synthbench.stats`) can be formed afterwards.
A metric's value over a set of images is the mean of its per-image values.

Region and edge-case rules (one for every paired metric, docs/metrics.md):

* with a ``mask`` (the lung setting) every metric is averaged over the masked pixels only:
  PSNR and RMSE over the squared error of the lung pixels, SSIM over the lung pixels of the
  SSIM map. An image whose mask is empty has no value (NaN); it is left out of every mean and
  counted (:meth:`PairedMetric.undefined`). ``evaluate_folders`` removes such images before any
  metric sees them, so in its results this count is 0.
* an identical pair is scored like any other pair: RMSE 0, SSIM 1 and PSNR at its ceiling
  :func:`synthbench.metrics.functional.psnr_ceiling` (finite), and counted
  (:meth:`PairedMetric.identical`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from synthbench.metric import Metric
from synthbench.metrics import functional as Fm


class PairedMetric(Metric):
    """Shared state of per-image metrics: float64 values per image, in the order seen.

    :meth:`per_image` returns the metric's own value (a ``[B]`` tensor) or a dict of named
    values (the first is the metric's own; SSIM adds the paper's whole-image value).
    """

    kind: ClassVar[str] = "paired"

    def reset(self) -> None:
        self._values: dict[str, list[np.ndarray]] = {}
        self._identical = 0

    #: Whether a mask given to :meth:`update` restricts the per-image value to the masked pixels.
    uses_mask: ClassVar[bool] = False

    def per_image(self, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor | None = None):  # pragma: no cover
        raise NotImplementedError

    def update(self, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """``mask`` (lung setting only): the value is averaged over the masked pixels (module doc)."""
        real, fake = real.to(self.device), fake.to(self.device)
        mask = mask.to(self.device).bool() if (mask is not None and self.uses_mask) else None
        values = self.per_image(real, fake, mask)
        if isinstance(values, torch.Tensor):
            values = {self.name: values}
        for key, v in values.items():
            self._values.setdefault(key, []).append(v.detach().cpu().numpy().astype(np.float64))
        diff = (real != fake) if mask is None else (real != fake) & mask
        self._identical += int((~diff.flatten(1).any(dim=1)).sum())

    def values(self, key: str | None = None) -> np.ndarray:
        """Per-image values of every image seen, in order (NaN where undefined)."""
        parts = self._values.get(key or self.name, [])
        return np.concatenate(parts) if parts else np.zeros(0)

    def aggregate(self, values: np.ndarray) -> float:
        """Mean of the defined (non-NaN) per-image values; NaN when none is defined."""
        v = values[~np.isnan(values)]
        return float(v.mean()) if v.size else float("nan")

    def compute(self) -> dict[str, float]:
        return {key: self.aggregate(self.values(key)) for key in (self._values or {self.name: []})}

    def compute_folds(self, folds: Sequence[np.ndarray]) -> list[dict[str, float]]:
        keys = list(self._values or {self.name: []})
        return [{k: self.aggregate(self.values(k)[np.asarray(idx)]) for k in keys} for idx in folds]

    def undefined(self) -> int:
        """Images without a value (empty mask): left out of every mean."""
        return int(np.isnan(self.values()).sum())

    def identical(self) -> int:
        """Identical pairs (within the mask when one was given): scored, and counted here."""
        return self._identical

    def convention(self) -> dict[str, Any]:
        return {
            "input_range": [-1.0, 1.0],
            "aggregation": "mean of per-image values",
            "region": "masked pixels only when a mask is given (lung setting), else every pixel",
            "empty_mask": "no value; left out of the mean and counted",
            "identical_pairs": self.identical(),
            "undefined_images": self.undefined(),
        }


class PSNR(PairedMetric):
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` per image, R = 2 for [-1, 1] images."""

    name = "psnr"
    higher_is_better = True
    summary = "PSNR in dB, data range 2 on [-1, 1] images (scikit-image peak_signal_noise_ratio)"
    uses_mask = True

    def per_image(self, real, fake, mask=None):
        psnr = Fm.psnr_per_image(real, fake, Fm.DATA_RANGE, mask)
        pixels = mask.flatten(1).sum(dim=1) if mask is not None else torch.full_like(psnr, real[0].numel())
        # Identical pairs: the 8-bit ceiling instead of inf (module doc); NaN (empty mask) stays NaN.
        return torch.where(torch.isinf(psnr), Fm.psnr_ceiling(pixels).to(psnr), psnr)

    def convention(self) -> dict[str, Any]:
        return {
            **super().convention(),
            "data_range": Fm.DATA_RANGE,
            "reference": "skimage.metrics.peak_signal_noise_ratio",
            "identical_pair_value": "ceiling 10 log10(255^2 * pixels) dB (one gray level off at one pixel)",
            "lung_setting": "MSE averaged over lung pixels only",
        }


class SSIM(PairedMetric):
    """Structural similarity (Wang et al. 2004), Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03.

    With a mask (lung setting): ``ssim`` is the SSIM map averaged over the lung pixels, and
    ``ssim_paper`` the paper's definition, the mean SSIM of the whole lung-only image (about 84%
    of which is the constant outside value in both images, so it stays near the complete-image
    SSIM whatever the lungs hold; kept only as a labelled column).
    """

    name = "ssim"
    higher_is_better = True
    summary = "SSIM, Gaussian window (sigma 1.5, 11 taps), data range 2 (scikit-image convention)"
    uses_mask = True

    #: Key of the paper's whole-image lung-only SSIM.
    PAPER_KEY = "ssim_paper"

    def per_image(self, real, fake, mask=None):
        if mask is None:
            return Fm.ssim_per_image(real, fake, Fm.DATA_RANGE)
        return {
            self.name: Fm.ssim_per_image(real, fake, Fm.DATA_RANGE, mask=mask),
            self.PAPER_KEY: Fm.ssim_per_image(real, fake, Fm.DATA_RANGE),
        }

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
            "border": "no mask: mean over pixels >= 5 from the border (skimage crop); "
                      "mask: full map, image mirrored at the border (skimage full=True map)",
            "lung_setting": "SSIM map averaged over lung pixels (ssim); the whole lung-only image (ssim_paper, paper)",
            "reference": "skimage.metrics.structural_similarity(gaussian_weights=True[, full=True])",
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
