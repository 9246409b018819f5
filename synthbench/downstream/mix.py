"""How many real and synthetic images each training set holds, and which ones (paper Tables III/IV).

* ``replace`` (Table III): the total stays the number ``n`` of real training images;
  ``n_synthetic = round_half_up(ratio * n)`` of them are synthetic, ``n - n_synthetic`` real.
* ``add`` (Table IV): all ``n`` real images plus ``n_synthetic = round_half_up(ratio * n)``.

``round_half_up`` works on the decimal value of the ratio (``Fraction(str(ratio))``), so
``0.5 * 73 = 36.5 -> 37`` and ``0.7 * 5 = 3.5 -> 4`` exactly, free of binary floating-point
error.

Real and synthetic images are paired: synthetic image ``i`` was made from the label map of real
training sample ``i`` (both come from the augmented synthesis-test label maps, ``test_aug``).
Selection is seeded and independent of the method: the label maps chosen are the first
``n_synthetic`` of one seeded permutation of the training indices (so choices are nested: 20%
takes the 10% maps and more). ``replace`` swaps the real image of each chosen map for its
synthetic one (every ratio trains on the same label maps; only the image source changes);
``add`` adds the synthetic images of the chosen maps to all real images. The same ratio
therefore uses the same real images and the same label maps for every method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from synthbench.errors import SynthbenchError

EXPERIMENTS = ("replace", "add")


def round_half_up(ratio: float, n: int) -> int:
    """``round(ratio * n)`` with halves rounded up, on the ratio's decimal value."""
    value = Fraction(str(ratio)) * n
    return math.floor(value + Fraction(1, 2))


@dataclass(frozen=True)
class Mix:
    """Indices of the real images kept and ids of the synthetic images used for one ratio."""

    experiment: str
    ratio: float
    real_indices: tuple[int, ...]
    synthetic_ids: tuple[str, ...]

    @property
    def n_real(self) -> int:
        return len(self.real_indices)

    @property
    def n_synthetic(self) -> int:
        return len(self.synthetic_ids)


def mix_counts(experiment: str, ratio: float, n_real: int) -> tuple[int, int]:
    """``(real images, synthetic images)`` of a training set (see module docstring)."""
    if experiment not in EXPERIMENTS:
        raise SynthbenchError(f"unknown experiment {experiment!r} (use {' or '.join(EXPERIMENTS)})")
    if not 0.0 <= ratio <= 1.0:
        raise SynthbenchError(f"ratio {ratio} outside [0, 1]")
    k = round_half_up(ratio, n_real)
    return (n_real - k, k) if experiment == "replace" else (n_real, k)


def select_mix(experiment: str, ratio: float, n_real: int, paired_ids: list[str], seed: int = 0) -> Mix:
    """The seeded, method-independent choice for one ratio; ``paired_ids[i]`` is the synthetic
    image made from real training sample ``i``'s label map (see the module docstring)."""
    keep, k = mix_counts(experiment, ratio, n_real)
    if len(paired_ids) != n_real:
        raise SynthbenchError(
            f"{experiment} {ratio:.0%}: {len(paired_ids)} synthetic images for {n_real} real training images; "
            "each real label map needs its synthetic image")
    order = np.random.default_rng([seed, 1]).permutation(n_real)
    chosen = sorted(int(i) for i in order[:k])
    real = tuple(sorted(int(i) for i in order[k:])) if experiment == "replace" else tuple(range(n_real))
    synthetic = tuple(paired_ids[i] for i in chosen)
    assert len(real) == keep and len(synthetic) == k
    return Mix(experiment, float(ratio), real, synthetic)
