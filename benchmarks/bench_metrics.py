"""Metric throughput: FID feature extraction and SSIM, synthbench vs the reference tools.

* FID features: images/s of synthbench's streamed extractor (:func:`evaluate_folders` path:
  PNG -> [-1, 1] -> InceptionFeatures) vs pytorch-fid's own ``python -m pytorch_fid`` path
  (``get_activations`` on the same folder with the same model instance).
* SSIM: images/s of :func:`synthbench.metrics.functional.ssim_per_image` (batched torch) vs
  ``skimage.metrics.structural_similarity`` (one image at a time), same convention.

Usage: ``python benchmarks/bench_metrics.py --n 200 [--size 256] [--device cpu]``; prints a
Markdown table (ratio > 1: synthbench faster).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_fid.fid_score import get_activations
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from synthbench.metrics import functional as Fm
from synthbench.metrics.evaluate import _load, to_image
from synthbench.metrics.inception import InceptionFeatures


def make_folder(root: Path, n: int, size: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = gaussian_filter(rng.random((size, size)), 2)
        img = (img - img.min()) / np.ptp(img)
        p = root / f"{i:05d}.png"
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def bench_fid(paths: list[Path], device: str, batch: int) -> tuple[float, float, float]:
    ext = InceptionFeatures(device)
    ext(to_image(_load(paths[:2])))  # warm-up
    t0 = time.perf_counter()
    ours = []
    for s in range(0, len(paths), batch):
        ours.append(ext(to_image(_load(paths[s : s + batch]))))
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = get_activations([str(p) for p in paths], ext.model, batch_size=batch, device=device, num_workers=0)
    t_ref = time.perf_counter() - t0
    diff = float(np.abs(torch.cat(ours).numpy() - ref).max())
    return len(paths) / t_ours, len(paths) / t_ref, diff


def bench_ssim(paths: list[Path], device: str, batch: int) -> tuple[float, float, float]:
    imgs = to_image(_load(paths))
    fake = (imgs + 0.05 * torch.randn_like(imgs)).clamp(-1, 1)
    t0 = time.perf_counter()
    ours = torch.cat([Fm.ssim_per_image(imgs[s : s + batch].to(device), fake[s : s + batch].to(device)).cpu()
                      for s in range(0, len(imgs), batch)])
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = [structural_similarity(imgs[i, 0].numpy(), fake[i, 0].numpy(), gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=2.0) for i in range(len(imgs))]
    t_ref = time.perf_counter() - t0
    return len(imgs) / t_ours, len(imgs) / t_ref, float(np.abs(ours.numpy() - np.asarray(ref)).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="number of images")
    ap.add_argument("--size", type=int, default=256, help="image size (pixels)")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_folder(Path(tmp) / "imgs", args.n, args.size, 0)
        f_ours, f_ref, f_diff = bench_fid(paths, args.device, args.batch)
        s_ours, s_ref, s_diff = bench_ssim(paths, args.device, args.batch)
    print(f"\n{args.n} images, {args.size}x{args.size}, device {args.device}, torch threads {torch.get_num_threads()}\n")
    print("| measurement | synthbench (img/s) | reference (img/s) | ratio | max abs diff |")
    print("|---|---|---|---|---|")
    print(f"| FID features vs pytorch-fid get_activations | {f_ours:.2f} | {f_ref:.2f} | {f_ours / f_ref:.2f} | {f_diff:.2e} |")
    print(f"| SSIM vs skimage structural_similarity | {s_ours:.1f} | {s_ref:.1f} | {s_ours / s_ref:.2f} | {s_diff:.2e} |")


if __name__ == "__main__":
    main()
