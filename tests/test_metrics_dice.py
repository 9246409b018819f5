"""Per-image Dice (MONAI's convention, ignore_empty stated) beside the paper's pooled Dice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthbench.downstream.mix import Mix
from synthbench.downstream.scores import (
    PER_IMAGE_DICE,
    per_image_dice,
    per_image_dice_folds,
    segmentation_counts,
    segmentation_scores,
)

NAMES = ["ggo", "consolidation"]


def _maps(n=6, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (n, size, size), generator=g)
    pred = torch.where(torch.rand(n, size, size, generator=g) < 0.7, target, torch.randint(0, 3, (n, size, size), generator=g))
    target[0][target[0] == 2] = 0  # image 0 has no consolidation in the ground truth ...
    pred[0][pred[0] == 2] = 0  # ... nor in the prediction
    target[1][target[1] == 1] = 0  # image 1 has no ggo, but the prediction has some
    return pred, target


@pytest.mark.parametrize("ignore_empty", [True, False])
def test_per_image_dice_matches_monai(ignore_empty):
    monai_metrics = pytest.importorskip("monai.metrics", reason="MONAI (test extra) not installed")
    pred, target = _maps()
    ours = per_image_dice(pred, target, NAMES, ignore_empty=ignore_empty)
    onehot = lambda x: torch.nn.functional.one_hot(x, 3).permute(0, 3, 1, 2).float()  # noqa: E731
    ref = monai_metrics.DiceMetric(include_background=False, reduction="none", ignore_empty=ignore_empty)(
        onehot(pred), onehot(target)).double().numpy()
    np.testing.assert_allclose(ours["ggo"], ref[:, 0], rtol=1e-6)
    np.testing.assert_allclose(ours["consolidation"], ref[:, 1], rtol=1e-6)
    union = monai_metrics.DiceMetric(include_background=False, reduction="none", ignore_empty=ignore_empty)(
        onehot((pred > 0).long())[:, :2], onehot((target > 0).long())[:, :2]).double().numpy()[:, 0]
    np.testing.assert_allclose(ours["infection"], union, rtol=1e-6)
    if ignore_empty:
        assert math.isnan(ours["consolidation"][0]) and math.isnan(ours["ggo"][1])
    else:
        assert ours["consolidation"][0] == 1.0 and ours["ggo"][1] == 0.0


def test_per_image_fold_means_differ_from_pooled_dice():
    pred, target = _maps(n=8, seed=1)
    folds = [np.arange(0, 4), np.arange(4, 8)]
    per_fold = per_image_dice_folds(pred, target, NAMES, folds)
    per = per_image_dice(pred, target, NAMES)
    for k, idx in enumerate(folds):
        v = per["ggo"][idx]
        assert per_fold["ggo"][k] == pytest.approx(np.nanmean(v))
        pooled = segmentation_scores(pred[idx], target[idx], NAMES)["ggo"]["dice"]
        assert per_fold["ggo"][k] != pytest.approx(pooled, abs=1e-9)  # two different conventions
    assert set(per_fold) == set(segmentation_counts(pred, target, NAMES))


def test_downstream_rows_offer_per_image_dice(monkeypatch):
    """Scored batch by batch (3 images per batch across 2 folds of 4), the fold counts and fold
    means of the per-image Dice equal those of the whole prediction at once."""
    from synthbench import stats
    from synthbench.downstream import experiment
    from synthbench.downstream.experiment import _fold_scores, _rows

    pred, target = _maps(n=8, seed=2)
    monkeypatch.setattr(experiment, "predict", lambda model, images, batch_size, device, memory_format: torch.as_tensor(images))
    counts, dice = _fold_scores(None, pred.numpy(), target.numpy(), (1, 2), 3, NAMES, 2, 3, "cpu")
    folds = stats.folds(8, 2)
    whole = per_image_dice_folds(pred, target, NAMES, folds)
    assert dice.keys() == whole.keys()
    for name in whole:
        assert dice[name] == pytest.approx(whole[name], nan_ok=True)
    for fold, fold_counts in zip(folds, counts, strict=True):
        idx = torch.as_tensor(fold)
        assert fold_counts == {c: [int(v) for v in n] for c, n in segmentation_counts(pred[idx], target[idx], NAMES).items()}
    mix = Mix(experiment="replace", ratio=0.0, real_indices=tuple(range(4)), synthetic_ids=())
    rows = _rows("replace", "real", "sweep", mix, counts, NAMES, dice)
    got = {(r["class"], r["metric"]): r for r in rows}
    assert got[("ggo", PER_IMAGE_DICE)]["folds"] == pytest.approx(dice["ggo"])
    assert ("ggo", "dice") in got and ("infection", PER_IMAGE_DICE) in got
    # records written before per-image Dice existed still give the paper's three metrics
    assert {r["metric"] for r in _rows("replace", "real", "sweep", mix, counts, NAMES)} == {
        "dice", "sensitivity", "specificity"}
