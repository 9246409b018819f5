"""Functional core of the image-quality metrics (paper Sec. "Evaluation", Table II).

Conventions (stated in every result, see :func:`conventions`):

* images are ``float [B, 1, H, W]`` in ``[-1, 1]``; PSNR and SSIM use ``data_range = 2``;
* RMSE is reported in ``[0, 1]`` intensity units, i.e. on ``(x + 1) / 2`` (half the RMSE in
  ``[-1, 1]`` units), so that ``PSNR = 20 * log10(1 / RMSE)`` holds per image;
* SSIM follows Wang et al. (2004) as implemented by scikit-image's ``structural_similarity``
  with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``: an 11-tap Gaussian
  window (truncate 3.5), ``K1 = 0.01``, ``K2 = 0.03``, the SSIM map averaged over the pixels at
  least 5 pixels from the border (skimage crops the border the filter pads); with a lung mask,
  the full SSIM map (image mirrored at the border, skimage ``full=True``) averaged over the
  lung pixels;
* PSNR of an identical pair is its 8-bit ceiling :func:`psnr_ceiling` (finite, counted);
* FID is the Frechet distance of Gaussians fitted to Inception pool features (Heusel et al.
  2017), the same closed form as ``pytorch_fid.fid_score.calculate_frechet_distance``;
* KID is the unbiased MMD^2 with the polynomial kernel ``(x.y / d + 1)^3`` averaged over random
  (Binkowski et al. 2018), the same formula as torchmetrics' ``poly_mmd``; the headline KID
  is that estimate on all images, the spread is over random subsets (:func:`kid_from_features`).

Every per-image function returns one value per image (float64) so folds can be formed later.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from synthbench.errors import SynthbenchError

#: Intensity range of synthbench images ([-1, 1]).
DATA_RANGE = 2.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scipy.ndimage.gaussian_filter default, used by scikit-image
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape != fake.shape or real.dim() != 4:
        raise SynthbenchError(
            f"images must both be [B, C, H, W] of one shape, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> torch.Tensor:
    """1-D normalized Gaussian taps as scipy.ndimage.gaussian_filter (radius int(truncate*sigma+0.5))."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, 'valid' part only (the part skimage keeps after cropping).

    A sum of shifted slices (exact in float64; faster than a float64 ``conv2d`` on CPU).
    """
    n = w.numel()
    taps = [float(v) for v in w]
    h = x.shape[-2] - n + 1
    rows = x[..., 0:h, :] * taps[0]
    for k in range(1, n):
        rows.add_(x[..., k : k + h, :], alpha=taps[k])
    wd = x.shape[-1] - n + 1
    out = rows[..., 0:wd] * taps[0]
    for k in range(1, n):
        out.add_(rows[..., k : k + wd], alpha=taps[k])
    return out


#: CPU chunk of pixels per SSIM pass (keeps the five float64 moments in cache).
_SSIM_CPU_PIXELS = 1 << 17


def _ssim_map_chunk(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, c1: float, c2: float) -> torch.Tensor:
    """SSIM map (Wang et al. 2004, Eq. 13) of the 'valid' part: ``[B, C, H - 2r, W - 2r]``."""
    c = x.shape[1]
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # one filter pass for the five moments
    mu_x, mu_y, xx, yy, xy = _filter_valid(stack, w).split(c, dim=1)
    vx = xx - mu_x * mu_x
    vy = yy - mu_y * mu_y
    vxy = xy - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * vxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (vx + vy + c2))


def _symmetric_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Pad the last two dims by ``r`` mirroring the edge pixel too (scipy.ndimage mode 'reflect',
    numpy 'symmetric'): the padding scikit-image's full SSIM map uses."""
    x = torch.cat([x[..., :r, :].flip(-2), x, x[..., -r:, :].flip(-2)], dim=-2)
    return torch.cat([x[..., :r].flip(-1), x, x[..., -r:].flip(-1)], dim=-1)


def ssim_per_image(
    real: torch.Tensor,
    fake: torch.Tensor,
    data_range: float = DATA_RANGE,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean SSIM per image (Wang et al. 2004, Eq. 13 with a Gaussian window), float64 ``[B]``.

    Without ``mask``: equals ``skimage.metrics.structural_similarity(real, fake,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2)`` per image
    (the SSIM map averaged over pixels at least ``r`` = 5 from the border, channels averaged).

    With ``mask`` (bool, same shape): the SSIM map over the whole image (the image mirrored at its
    border, as scikit-image's ``full=True`` map) averaged over the masked pixels only,
    ``sum_p m_p S_p / sum_p m_p``; an image with an empty mask gives NaN.
    """
    _check_pair(real, fake)
    w = gaussian_window(sigma)
    r = w.numel() // 2
    if min(real.shape[-2:]) < w.numel():
        raise SynthbenchError(f"SSIM needs images of at least {w.numel()}x{w.numel()} pixels, got {tuple(real.shape[-2:])}")
    x = real.to(torch.float64)
    y = fake.to(torch.float64)
    if mask is not None:
        x, y = _symmetric_pad(x, r), _symmetric_pad(y, r)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    step = x.shape[0] if x.device.type != "cpu" else max(1, _SSIM_CPU_PIXELS // (x[0].numel()))
    out = []
    for i in range(0, x.shape[0], step):
        s = _ssim_map_chunk(x[i : i + step], y[i : i + step], w, c1, c2)
        if mask is None:
            out.append(s.reshape(s.shape[0], -1).mean(dim=1))
        else:
            m = mask[i : i + step].to(torch.float64).reshape(s.shape[0], -1)
            out.append((s.reshape(s.shape[0], -1) * m).sum(dim=1) / m.sum(dim=1))
    return torch.cat(out)


def mse_per_image(real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per image in the images' own units, float64 ``[B]``.

    With ``mask`` (bool, same shape) the mean runs over the masked pixels only (lung-only
    setting, :mod:`synthbench.composite`); an image with an empty mask gives NaN.
    """
    _check_pair(real, fake)
    d = real.to(torch.float64) - fake.to(torch.float64)
    sq = (d * d).reshape(d.shape[0], -1)
    if mask is None:
        return sq.mean(dim=1)
    m = mask.reshape(d.shape[0], -1).to(torch.float64)
    return (sq * m).sum(dim=1) / m.sum(dim=1)


def psnr_per_image(real: torch.Tensor, fake: torch.Tensor, data_range: float = DATA_RANGE,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """``10 log10(data_range^2 / MSE)`` per image (skimage ``peak_signal_noise_ratio``); ``inf`` if identical."""
    mse = mse_per_image(real, fake, mask)
    return 10.0 * torch.log10(torch.as_tensor(data_range, dtype=torch.float64) ** 2 / mse)


#: Gray levels of the 8-bit PNG images synthbench evaluates ([-1, 1] <-> 0..255).
LEVELS_8BIT = 255


def psnr_ceiling(pixels: torch.Tensor, levels: int = LEVELS_8BIT) -> torch.Tensor:
    """The PSNR of an identical pair: that of the closest non-identical 8-bit pair, one gray
    level (``data_range / levels``) off at one of ``pixels`` scored pixels,
    ``10 log10(levels^2 * pixels)`` dB (48.1 dB + 10 log10(pixels)); no other pair reaches it."""
    return 10.0 * torch.log10(torch.as_tensor(pixels, dtype=torch.float64) * float(levels) ** 2)


def rmse_per_image(real: torch.Tensor, fake: torch.Tensor, data_range: float = DATA_RANGE,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Root mean squared error per image in ``[0, 1]`` units (``sqrt(MSE) / data_range``)."""
    return mse_per_image(real, fake, mask).sqrt() / data_range


# --------------------------------------------------------------------------- distribution metrics
def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (``np.cov(rowvar=False)``) of ``[N, D]`` features, float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise SynthbenchError(f"FID needs at least 2 images per set, got {f.shape[0] if f.ndim == 2 else 0}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Heusel et al. 2017, as pytorch-fid)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))  # pytorch-fid's disp=False is deprecated in SciPy 1.16
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise SynthbenchError(f"FID: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """FID of two ``[N, D]`` feature sets, equal to ``frechet_distance`` of their mean/cov.

    When a set has no more images than feature dimensions (``N <= D``, the usual case for a
    test set: covariances of rank ``N - 1 < 2048``) the trace term is computed exactly from the
    low-rank factors instead of a 2048x2048 ``sqrtm``: with centred features ``A`` (n x D),
    ``B`` (m x D), ``S1 = A^T A / (n-1)``, ``S2 = B^T B / (m-1)``, the non-zero eigenvalues of
    ``S1 S2`` are the squared singular values of ``M = A B^T / sqrt((n-1)(m-1))``, so
    ``Tr (S1 S2)^(1/2) = ||M||_*`` (nuclear norm). Otherwise the pytorch-fid path is used.
    """
    a = np.asarray(real_features, dtype=np.float64)
    b = np.asarray(fake_features, dtype=np.float64)
    for f in (a, b):
        if f.ndim != 2 or f.shape[0] < 2:
            raise SynthbenchError(f"FID needs at least 2 images per set, got {f.shape[0] if f.ndim == 2 else 0}")
    if a.shape[1] != b.shape[1]:
        raise SynthbenchError(f"FID: feature dimensions differ ({a.shape[1]} vs {b.shape[1]})")
    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    if min(n, m) > d:
        return frechet_distance(*feature_statistics(a), *feature_statistics(b))
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    ca, cb = a - mu_a, b - mu_b
    tr_a = float((ca * ca).sum() / (n - 1))
    tr_b = float((cb * cb).sum() / (m - 1))
    cross = ca @ cb.T / np.sqrt((n - 1) * (m - 1))
    tr_covmean = float(np.linalg.svd(cross, compute_uv=False).sum())
    diff = mu_a - mu_b
    return float(diff.dot(diff) + tr_a + tr_b - 2.0 * tr_covmean)


def poly_mmd2(f_real: torch.Tensor, f_fake: torch.Tensor, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased MMD^2 with kernel ``k(x, y) = (x.y / d + coef)^degree`` (Binkowski et al. 2018, Eq. 3).

    ``sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1)) - 2 sum k(x_i, y_j) / (m n)``;
    with ``m == n`` the formula of torchmetrics' ``poly_mmd`` (KID on one subset).
    """
    x = f_real.to(torch.float64)
    y = f_fake.to(torch.float64)
    m, d = x.shape
    n = y.shape[0]
    if min(m, n) < 2:
        raise SynthbenchError(f"KID needs at least 2 images per set, got {min(m, n)}")
    gamma = 1.0 / d
    k_xx = (x @ x.T * gamma + coef) ** degree
    k_yy = (y @ y.T * gamma + coef) ** degree
    k_xy = (x @ y.T * gamma + coef) ** degree
    sum_xx = k_xx.sum() - k_xx.diagonal().sum()
    sum_yy = k_yy.sum() - k_yy.diagonal().sum()
    return float(sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * k_xy.sum() / (m * n))


def kid_from_features(
    real_features: np.ndarray | torch.Tensor,
    fake_features: np.ndarray | torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID mean and std over ``subsets`` random subsets of size ``min(subset_size, n)``.

    Subsets are drawn without replacement within a subset, independently for real and fake
    (torchmetrics ``KernelInceptionDistance``); std is the population std (``unbiased=False``).
    """
    xr = torch.as_tensor(np.asarray(real_features), dtype=torch.float64)
    xf = torch.as_tensor(np.asarray(fake_features), dtype=torch.float64)
    n = min(xr.shape[0], xf.shape[0])
    if n < 2:
        raise SynthbenchError(f"KID needs at least 2 images per set, got {n}")
    m = min(subset_size, n)
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        ir = torch.randperm(xr.shape[0], generator=gen)[:m]
        jf = torch.randperm(xf.shape[0], generator=gen)[:m]
        values.append(poly_mmd2(xr[ir], xf[jf]))
    v = np.asarray(values)
    return float(v.mean()), float(v.std())
