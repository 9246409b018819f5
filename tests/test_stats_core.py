"""synthbench.stats: folds, Student-t interval, paired tests against known numbers."""

import math

import numpy as np
import pytest
from scipy import stats as st

from synthbench.errors import SynthbenchError
from synthbench.stats import folds, mean_ci, paired_test, summarize


def test_mean_ci_known_numbers():
    # x = 1..5: mean 3, s = sqrt(2.5), t_{0.975,4} = 2.7764451051977987
    mean, half = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert half == pytest.approx(2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5), rel=1e-12)
    assert half == pytest.approx(1.9632431614775572, rel=1e-9)


def test_mean_ci_matches_scipy_interval_and_confidence():
    rng = np.random.default_rng(3)
    x = rng.normal(size=10)
    mean, half = mean_ci(x, confidence=0.9)
    lo, hi = st.t.interval(0.9, df=9, loc=x.mean(), scale=st.sem(x))
    assert mean - half == pytest.approx(lo) and mean + half == pytest.approx(hi)
    assert mean_ci(x, 0.99)[1] > mean_ci(x, 0.95)[1] > half


def test_mean_ci_single_value_and_errors():
    m, h = mean_ci([4.0])
    assert m == 4.0 and math.isnan(h)
    with pytest.raises(SynthbenchError):
        mean_ci([])
    with pytest.raises(SynthbenchError):
        mean_ci([1, 2], confidence=1.5)


def test_folds_contiguous_partition():
    parts = folds(23, 10)
    assert len(parts) == 10
    assert [len(p) for p in parts] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert np.array_equal(np.concatenate(parts), np.arange(23))
    assert all(np.all(np.diff(p) == 1) for p in parts)


def test_folds_seeded_shuffle_is_reproducible_partition():
    a, b, c = folds(50, 5, seed=1), folds(50, 5, seed=1), folds(50, 5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(50))
    assert not all(np.all(np.diff(p) == 1) for p in a)


def test_folds_errors():
    with pytest.raises(SynthbenchError, match="3 images into 10 folds"):
        folds(3, 10)
    with pytest.raises(SynthbenchError):
        folds(10, 0)


def test_paired_tests():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    b = a + np.array([0.5, 0.4, 0.6, 0.3, 0.7, 0.5, 0.4, 0.6])
    assert paired_test(a, b) == pytest.approx(st.ttest_rel(a, b).pvalue)
    assert paired_test(a, b, "wilcoxon") == pytest.approx(st.wilcoxon(a, b).pvalue)
    assert paired_test(a, b) < 0.001
    assert paired_test(a, a) == 1.0 and paired_test(a, a, "wilcoxon") == 1.0
    assert paired_test(a, a + 1) == 0.0
    with pytest.raises(SynthbenchError):
        paired_test(a, b[:3])
    with pytest.raises(SynthbenchError):
        paired_test(a, b, "anova")


def test_summarize():
    s = summarize([1, 2, 3, 4, 5])
    assert s["mean"] == 3.0 and s["n"] == 5 and s["values"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert s["std"] == pytest.approx(math.sqrt(2.5))
    assert s["ci95"] == pytest.approx(1.9632431614775572)
