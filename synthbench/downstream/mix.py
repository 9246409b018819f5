"""How many real and synthetic images each training set holds, and which ones (paper Tables III/IV).

* ``replace`` (Table III): the total stays the number ``n`` of real training images;
  ``n_synthetic = round_half_up(ratio * n)`` of them are synthetic, ``n - n_synthetic`` real.
* ``add`` (Table IV): all ``n`` real images plus ``n_synthetic = round_half_up(ratio * n)``.

``round_half_up`` works on the decimal value of the ratio (``Fraction(str(ratio))``), so
``0.5 * 73 = 36.5 -> 37`` and ``0.7 * 5 = 3.5 -> 4`` exactly, free of binary floating-point
error. Selection is seeded and independent of the method: the real images dropped are the first
``n_synthetic`` of one seeded permutation of the real indices (so drops are nested: 20% drops
the 10% images and more), and the synthetic images are the first ``n_synthetic`` of one seeded
permutation of the sample ids that every compared synthesis folder holds. The same ratio
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


def select_mix(experiment: str, ratio: float, n_real: int, synthetic_ids: list[str], seed: int = 0) -> Mix:
    """The seeded, method-independent choice of real indices and synthetic ids for one ratio."""
    keep, k = mix_counts(experiment, ratio, n_real)
    if k > len(synthetic_ids):
        raise SynthbenchError(
            f"{experiment} {ratio:.0%} needs {k} synthetic images, the synthesis folders share only {len(synthetic_ids)}"
        )
    real_order = np.random.default_rng([seed, 1]).permutation(n_real)
    real = tuple(sorted(int(i) for i in real_order[k:])) if experiment == "replace" else tuple(range(n_real))
    ids = sorted(synthetic_ids)
    synth_order = np.random.default_rng([seed, 2]).permutation(len(ids))
    chosen = tuple(ids[int(i)] for i in synth_order[:k])
    assert len(real) == keep and len(chosen) == k
    return Mix(experiment, float(ratio), real, chosen)
