"""Metric functional core and Metric classes against their reference implementations.

SSIM/PSNR vs scikit-image, RMSE vs numpy, KID vs torchmetrics, FID formula vs pytorch-fid.
"""

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

from synthbench import composite
from synthbench.errors import SynthbenchError
from synthbench.metrics import functional as Fm
from synthbench.metrics.paired import PSNR, RMSE, SSIM
from synthbench.plugins import get_registry
from synthbench.stats import folds


def _images(n=6, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    real = np.stack([gaussian_filter(rng.normal(size=(h, w)), 2) for _ in range(n)])
    real = np.clip(real / np.abs(real).max(), -1, 1)
    fake = np.clip(real + rng.normal(0, 0.1, real.shape) * rng.uniform(0.2, 2, (n, 1, 1)), -1, 1)
    return torch.from_numpy(real[:, None]).float(), torch.from_numpy(fake[:, None]).float()


def test_ssim_psnr_rmse_match_references_per_image():
    real, fake = _images()
    ssim = Fm.ssim_per_image(real, fake)
    psnr = Fm.psnr_per_image(real, fake)
    rmse = Fm.rmse_per_image(real, fake)
    for i in range(real.shape[0]):
        r, f = real[i, 0].numpy(), fake[i, 0].numpy()
        ref = structural_similarity(r, f, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2.0)
        assert abs(float(ssim[i]) - ref) < 1e-6
        assert abs(float(psnr[i]) - peak_signal_noise_ratio(r, f, data_range=2.0)) < 1e-4
        r01, f01 = (r.astype(np.float64) + 1) / 2, (f.astype(np.float64) + 1) / 2
        assert abs(float(rmse[i]) - np.sqrt(np.mean((r01 - f01) ** 2))) < 1e-9
    # PSNR = 20 log10(1 / RMSE) with RMSE in [0, 1] units: one consistent convention
    assert torch.allclose(psnr, 20 * torch.log10(1 / rmse))
    # ordering sanity: noisier image -> lower SSIM
    assert float(Fm.ssim_per_image(real, real).min()) == pytest.approx(1.0)


def test_ssim_on_lung_only_composite_matches_skimage():
    real, fake = _images(n=3, h=64, w=64, seed=1)
    lung = torch.zeros_like(real, dtype=torch.bool)
    lung[..., 16:48, 10:40] = True
    r, f = composite.lung_only(real, lung), composite.lung_only(fake, lung)
    ours = Fm.ssim_per_image(r, f)
    for i in range(3):
        ref = structural_similarity(r[i, 0].numpy(), f[i, 0].numpy(), gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=2.0)
        assert abs(float(ours[i]) - ref) < 1e-6


def test_ssim_rejects_tiny_and_mismatched_images():
    with pytest.raises(SynthbenchError, match="at least 11x11"):
        Fm.ssim_per_image(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(SynthbenchError):
        Fm.mse_per_image(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


def test_paired_metric_classes_stream_and_fold():
    real, fake = _images(n=10)
    parts = folds(10, 5)
    for cls, fn in ((SSIM, Fm.ssim_per_image), (PSNR, Fm.psnr_per_image), (RMSE, Fm.rmse_per_image)):
        m = cls()
        m.update(real[:4], fake[:4])
        m.update(real[4:], fake[4:])  # streamed batches == one batch
        per = fn(real, fake).numpy()
        assert m.compute()[cls.name] == pytest.approx(per.mean())
        fold_vals = [d[cls.name] for d in m.compute_folds(parts)]
        assert fold_vals == pytest.approx([per[p].mean() for p in parts])
        m.reset()
        assert m.values().size == 0


def test_psnr_identical_pairs_scored_at_the_8bit_ceiling():
    # One rule for every metric (issue 16): an identical pair stays in PSNR, SSIM and RMSE alike;
    # its PSNR is the 8-bit ceiling 10 log10(255^2 * pixels), not inf and not dropped.
    real, fake = _images(n=4)
    fake[0] = real[0]
    m = PSNR()
    m.update(real, fake)
    ceiling = 10 * np.log10(255**2 * real[0].numel())
    expected = (ceiling + Fm.psnr_per_image(real[1:], fake[1:]).sum().item()) / 4
    assert m.compute()["psnr"] == pytest.approx(expected)
    assert m.identical() == 1 and m.convention()["identical_pairs"] == 1
    # the ceiling lies above any non-identical 8-bit pair: one gray level off at one pixel
    near = real[:1].clone()
    near[0, 0, 0, 0] += 2 / 255 if near[0, 0, 0, 0] < 0 else -2 / 255
    assert Fm.psnr_per_image(real[:1], near).item() == pytest.approx(ceiling)


def test_builtin_plugin_registers_all_metrics():
    reg = get_registry()
    assert {"fid", "kid", "psnr", "ssim", "rmse"} <= set(reg.metrics)
    assert reg.records["metrics"].error is None
    assert reg.metric("ssim").higher_is_better and not reg.metric("fid").higher_is_better


@pytest.mark.parametrize("n,d", [(40, 64), (30, 8), (12, 12)])
def test_fid_formula_matches_pytorch_fid(n, d):
    rng = np.random.default_rng(n + d)
    a = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, d) + rng.uniform(0, 1, d)
    b = 0.8 * a + rng.normal(size=(n + 3, d))[:n] * 0.7 + 0.2
    ref = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert Fm.fid_from_features(a, b) == pytest.approx(ref, rel=1e-6)  # low-rank path (n <= d) or sqrtm path
    mu1, s1 = Fm.feature_statistics(a)
    assert Fm.frechet_distance(mu1, s1, *Fm.feature_statistics(b)) == pytest.approx(ref, rel=1e-9)
    assert Fm.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6 * ref)


def test_fid_unequal_set_sizes_and_errors():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(20, 32)), rng.normal(size=(25, 32)) + 0.5
    ref = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert Fm.fid_from_features(a, b) == pytest.approx(ref, rel=1e-6)
    with pytest.raises(SynthbenchError, match="at least 2"):
        Fm.fid_from_features(a[:1], b)


def test_poly_mmd_matches_torchmetrics():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(30, 16)))
    y = torch.from_numpy(rng.normal(size=(30, 16)) + 0.3)
    assert Fm.poly_mmd2(x, y) == pytest.approx(float(poly_mmd(x, y, degree=3, gamma=None, coef=1.0)), rel=1e-10)


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x


def test_kid_matches_torchmetrics_class_with_subsets():
    rng = np.random.default_rng(3)
    real = torch.from_numpy(rng.normal(size=(50, 24)))
    fake = torch.from_numpy(rng.normal(size=(50, 24)) * 1.1 + 0.2)
    tm = KernelInceptionDistance(feature=_Identity(), subsets=7, subset_size=20)
    tm.update(real, real=True)
    tm.update(fake, real=False)
    torch.manual_seed(11)  # torchmetrics draws its subsets from the global generator
    tm_mean, tm_std = tm.compute()
    mean, std = Fm.kid_from_features(real.numpy(), fake.numpy(), subsets=7, subset_size=20, seed=11)
    assert mean == pytest.approx(float(tm_mean), rel=1e-9)
    assert std == pytest.approx(float(tm_std), rel=1e-9)
    # subset size is capped at n (KID over all images when n < subset_size)
    full, full_std = Fm.kid_from_features(real.numpy(), fake.numpy(), subsets=3, subset_size=1000)
    assert full == pytest.approx(Fm.poly_mmd2(real, fake)) and full_std < 1e-12
    same = torch.from_numpy(rng.normal(size=(50, 24)))
    far = real + 2.0
    assert Fm.kid_from_features(real, same, subsets=5)[0] < 0.01 < Fm.kid_from_features(real, far, subsets=5)[0]


def test_fid_kid_classes_fold_on_streamed_features():
    from synthbench.metrics.distribution import FID, KID, FewImagesWarning

    rng = np.random.default_rng(9)
    real = rng.normal(size=(20, 16)).astype(np.float32)
    fake = (rng.normal(size=(20, 16)) + 0.4).astype(np.float32)
    parts = folds(20, 2)
    fid, kid = FID(), KID(subsets=4, subset_size=1000)
    for m in (fid, kid):
        for s in range(0, 20, 6):  # streamed in uneven batches
            m.update_features(real[s : s + 6], fake[s : s + 6])
    with pytest.warns(FewImagesWarning, match="rank-deficient"):
        assert fid.compute()["fid"] == pytest.approx(Fm.fid_from_features(real, fake))
    assert [d["fid"] for d in fid.compute_folds(parts)] == pytest.approx(
        [Fm.fid_from_features(real[p], fake[p]) for p in parts]
    )
    k_folds = kid.compute_folds(parts)
    assert [d["kid"] for d in k_folds] == pytest.approx([Fm.poly_mmd2(torch.from_numpy(real[p]), torch.from_numpy(fake[p])) for p in parts])
    assert set(kid.compute()) == {"kid", "kid_std"}
