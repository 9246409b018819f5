"""Augmentation of the paper (Sec. "Data and preprocessing"): random resize and crop, random rotation,
Gaussian noise (image only) and elastic transform, with torchvision.transforms.v2 (the elastic
displacement smoothed by the separable form of torchvision's blur: the same field, far cheaper).

Image and label map are transformed together as ``tv_tensors.Image`` / ``tv_tensors.Mask`` so the
label map is resampled with nearest interpolation and stays aligned. Every augmented sample is
seeded from (seed, split, source slice, augmentation number) alone: the same seed gives
byte-identical samples whatever the order, so every method sees exactly the same data.
Expansion factors default to the paper's (300 -> 12,000 is x40; 73 -> 10,220 is x140).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from synthbench.errors import SynthbenchError

#: Paper expansion factors: train 300 -> 12,000 (x40), test 73 -> 10,220 (x140).
PAPER_TRAIN_FACTOR = 40
PAPER_TEST_FACTOR = 140


@dataclass(frozen=True)
class AugmentOptions:
    """Augmentation strengths (configurable; recorded in the prepared manifest)."""

    crop_scale: tuple[float, float] = (0.7, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.11)
    rotation_degrees: float = 15.0
    noise_sigma: float = 0.02  # in [-1, 1] units
    elastic_alpha: float = 30.0
    elastic_sigma: float = 6.0

    def to_dict(self) -> dict:
        return asdict(self)


def elastic_kernel_half_width(sigma: float) -> int:
    """Half the Gaussian kernel torchvision's ElasticTransform smooths its displacement field with
    (kernel ``int(8 * sigma + 1)``, made odd); the slice must be larger than this."""
    kernel = int(8 * sigma + 1)
    kernel += 1 - kernel % 2
    return kernel // 2


def gaussian_kernel1d(kernel_size: int, sigma: float) -> torch.Tensor:
    """torchvision's 1-D Gaussian kernel of ``gaussian_blur`` (softmax of ``-(x / sigma)^2`` on
    ``kernel_size`` points spanning ``+-(kernel_size - 1) / (2 sqrt 2)``)."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=kernel_size)
    return torch.softmax(x.div(sigma).pow(2).neg(), dim=0)


def separable_gaussian_blur(field: torch.Tensor, kernel_size: int, sigma: tuple[float, float]) -> torch.Tensor:
    """``torchvision gaussian_blur(field [1, 1, H, W], [k, k], sigma)`` as two 1-D passes: the same
    reflect padding, then the x kernel (``sigma[0]``) along W and the y kernel (``sigma[1]``) along H.
    The 2-D kernel is their outer product, so the result is identical up to float rounding at
    2k instead of k^2 multiply-adds per pixel."""
    half = kernel_size // 2
    padded = F.pad(field, [half, half, half, half], mode="reflect")
    kx = gaussian_kernel1d(kernel_size, sigma[0]).to(field.dtype)
    ky = gaussian_kernel1d(kernel_size, sigma[1]).to(field.dtype)
    return F.conv2d(F.conv2d(padded, kx.view(1, 1, 1, -1)), ky.view(1, 1, -1, 1))


class SeparableElasticTransform(v2.ElasticTransform):
    """torchvision's ``v2.ElasticTransform`` with the displacement field smoothed by the separable
    form of its Gaussian blur (:func:`separable_gaussian_blur`): the same random numbers in the same
    order, the same kernel size, sigma and reflect padding, so the same displacement within float
    rounding; warping (``F.elastic``: interpolation, fill, nearest for masks, one displacement for
    every input of a call) is torchvision's own ``transform``. The 2-D blur was most of the
    augmentation time (issue 21)."""

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        fields = []
        for axis, extent in ((0, width), (1, height)):
            field = torch.rand(1, 1, height, width) * 2 - 1
            if self.sigma[axis] > 0.0:
                kernel = int(8 * self.sigma[axis] + 1)
                kernel += 1 - kernel % 2  # odd, as torchvision
                field = separable_gaussian_blur(field, kernel, (self.sigma[0], self.sigma[1]))
            fields.append(field * self.alpha[axis] / extent)
        return {"displacement": torch.concat(fields, 1).permute([0, 2, 3, 1])}  # 1 x H x W x 2


def build_transform(size: int, options: AugmentOptions = AugmentOptions()) -> v2.Compose:
    """The paper's augmentation chain for ``size x size`` slices in ``[-1, 1]`` (air = -1 fill).

    Refused (one line) when the elastic transform's smoothing kernel does not fit the slice."""
    half = elastic_kernel_half_width(options.elastic_sigma)
    if size <= half:
        raise SynthbenchError(
            f"augmentation at {size} px: the elastic transform (sigma {options.elastic_sigma:g} px) smooths with a "
            f"{2 * half + 1}-pixel kernel, which needs slices larger than {half} px; prepare at --size "
            f"{max(32, half + 1)} or more, or use --train-factor 0 --test-factor 0 (no augmentation)")
    fill = {tv_tensors.Image: -1.0, tv_tensors.Mask: 0}
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=options.crop_scale, ratio=options.crop_ratio, antialias=True),
            v2.RandomRotation(options.rotation_degrees, fill=fill),
            SeparableElasticTransform(alpha=options.elastic_alpha, sigma=options.elastic_sigma, fill=fill),
            v2.GaussianNoise(sigma=options.noise_sigma, clip=False),
        ]
    )


def sample_seed(seed: int, split: str, source_index: int, k: int) -> int:
    """Seed of one augmented sample, from its identity only (order-independent)."""
    h = hashlib.sha256(f"{seed}/{split}/{source_index}/{k}".encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def augment_one(
    transform: v2.Compose, image: np.ndarray, label: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (image [H,W] float32 in [-1,1], label [H,W] uint8) pair, seeded."""
    # copies: the inputs may be read-only (memory-mapped splits), which torch.from_numpy warns about
    img = tv_tensors.Image(torch.from_numpy(np.array(image, np.float32)).unsqueeze(0))
    msk = tv_tensors.Mask(torch.from_numpy(np.array(label, np.uint8)).unsqueeze(0))
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only, the one fork_rng restores: torch.manual_seed would also seed
        # (and leave seeded) every accelerator's generator, at ~1 ms per sample (20% of it)
        torch.default_generator.manual_seed(seed)
        out_img, out_msk = transform(img, msk)
    return out_img[0].clamp(-1, 1).numpy(), out_msk[0].numpy().astype(np.uint8)
