"""Fold statistics: mean and 95% confidence interval over folds, and paired tests.

The paper (Sec. "Evaluation") reports every metric as mean +- 95% confidence interval over 10
folds of the test set. This module is the single definition used by metrics, downstream tasks
and reports.

API
---
``folds(n, k=10, seed=None) -> list[np.ndarray]``
    Split indices ``0..n-1`` into ``k`` folds. ``seed=None`` (default): contiguous folds in
    order (``np.array_split``, sizes differ by at most one). An integer ``seed``: the indices
    are permuted with ``np.random.default_rng(seed)`` first, then split the same way. Each fold
    is a sorted int64 array; together they partition ``0..n-1``.
``mean_ci(values, confidence=0.95) -> (mean, half_width)``
    Student-t interval over the fold values ``x_1..x_k``:
    ``half_width = t_{(1+confidence)/2, k-1} * s / sqrt(k)`` with ``s`` the sample standard
    deviation (``ddof=1``). ``k == 1`` gives ``half_width = nan``.
``paired_test(a, b, method="t") -> p``
    Two-sided p-value that paired values ``a`` and ``b`` (e.g. per-fold scores of two methods)
    share the same mean: ``method="t"`` paired t-test (``scipy.stats.ttest_rel``),
    ``method="wilcoxon"`` Wilcoxon signed-rank (``scipy.stats.wilcoxon``). Identical inputs
    give ``p = 1``.
``jackknife_ci(leave_out, confidence=0.95) -> half_width``
    Delete-one-group jackknife interval of a statistic computed on *all* images (FID, KID): from
    the ``k`` values ``theta_(j)`` of the statistic without fold ``j``,
    ``se = sqrt((k-1)/k * sum_j (theta_(j) - mean_j theta_(j))^2)`` and
    ``half_width = t_{(1+confidence)/2, k-1} * se``. For the mean of equal folds it equals
    ``mean_ci``'s half-width. ``k == 1`` gives ``nan``.
``natural_key(name) -> tuple``
    Sort key that orders digit runs by value ("2.png" before "10.png"): file order for folds.
``summarize(values, confidence=0.95) -> dict``
    ``{"mean", "ci95", "std", "n", "values"}``, what results tables store.
``fold_count(requested, n, per_fold, what) -> (k, note)``
    The requested number of folds, or fewer when ``n`` images cannot give every fold
    ``per_fold`` images (FID needs 2); ``note`` says so (``None`` when nothing was reduced).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

from synthbench.errors import SynthbenchError

__all__ = ["fold_count", "folds", "jackknife_ci", "mean_ci", "natural_key", "paired_test", "summarize"]


def folds(n: int, k: int = 10, seed: int | None = None) -> list[np.ndarray]:
    """Split ``range(n)`` into ``k`` folds (paper: 10 folds of the test set).

    Contiguous when ``seed`` is None, otherwise a seeded permutation split the same way.
    """
    if k < 1:
        raise SynthbenchError(f"number of folds must be >= 1, got {k}")
    if n < k:
        raise SynthbenchError(f"cannot split {n} images into {k} folds (need at least {k})")
    order = np.arange(n, dtype=np.int64)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(order)
    return [np.sort(part) for part in np.array_split(order, k)]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width ``t_{(1+c)/2, k-1} * s / sqrt(k)`` of the Student-t interval."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise SynthbenchError("mean_ci: no values")
    if not 0.0 < confidence < 1.0:
        raise SynthbenchError(f"mean_ci: confidence must be in (0, 1), got {confidence}")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan
    sd = float(x.std(ddof=1))
    t = float(_st.t.ppf((1.0 + confidence) / 2.0, df=x.size - 1))
    return mean, t * sd / math.sqrt(x.size)


def jackknife_ci(leave_out: Sequence[float], confidence: float = 0.95) -> float:
    """Half-width ``t_{(1+c)/2, k-1} * sqrt((k-1)/k * sum (theta_(j) - theta_bar)^2)`` (module doc).

    ``leave_out``: the statistic recomputed without each of the ``k`` folds in turn. The folds are
    contiguous groups of slices (patients), so the interval reflects patient-level variation.
    """
    x = np.asarray(leave_out, dtype=np.float64).ravel()
    if x.size == 0:
        raise SynthbenchError("jackknife_ci: no values")
    if not 0.0 < confidence < 1.0:
        raise SynthbenchError(f"jackknife_ci: confidence must be in (0, 1), got {confidence}")
    k = x.size
    if k < 2 or not np.isfinite(x).all():
        return math.nan
    se = math.sqrt((k - 1) / k * float(((x - x.mean()) ** 2).sum()))
    return float(_st.t.ppf((1.0 + confidence) / 2.0, df=k - 1)) * se


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """``"slice_10.png"`` after ``"slice_2.png"``: digit runs compare as numbers, text case-folded."""
    name = str(name)
    parts = tuple((0, int(p)) if p.isdigit() else (1, p.casefold()) for p in _DIGITS.split(name))
    return parts, name


def paired_test(a: Sequence[float], b: Sequence[float], method: str = "t") -> float:
    """Two-sided p-value of a paired t-test (``"t"``) or Wilcoxon signed-rank test."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise SynthbenchError(f"paired_test: {x.size} values vs {y.size}; pairs must match")
    if x.size < 2:
        raise SynthbenchError("paired_test: need at least 2 pairs")
    d = x - y
    if np.all(d == 0):
        return 1.0
    if method == "t":
        if np.all(d == d[0]):  # constant non-zero difference: zero variance, certain shift
            return 0.0
        return float(_st.ttest_rel(x, y).pvalue)
    if method == "wilcoxon":
        return float(_st.wilcoxon(x, y).pvalue)
    raise SynthbenchError(f"paired_test: unknown method {method!r} (use 't' or 'wilcoxon')")


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean, CI half-width, sample std and the per-fold values, for results tables."""
    x = np.asarray(values, dtype=np.float64).ravel()
    mean, half = mean_ci(x, confidence)
    return {
        "mean": mean,
        "ci95": half,
        "std": float(x.std(ddof=1)) if x.size > 1 else math.nan,
        "n": int(x.size),
        "values": [float(v) for v in x],
    }


def fold_count(requested: int, n: int, per_fold: int = 1, what: str = "test set") -> tuple[int, str | None]:
    """The paper's 10 folds (``requested``), or fewer when a small set cannot fill them."""
    if requested < 1:
        raise SynthbenchError(f"number of folds must be >= 1, got {requested}")
    k = min(requested, n // per_fold)
    if k < 1:
        raise SynthbenchError(
            f"the {what} has {n} image{'s' if n != 1 else ''}: not even 1 of the {requested} requested folds can be "
            f"formed (each fold needs at least {per_fold} image{'s' if per_fold != 1 else ''})")
    note = f"The {what} has {n} images: results use {k} folds instead of {requested}." if k < requested else None
    return k, note
