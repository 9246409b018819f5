"""Segmentation scores of the paper's downstream experiment (Sec. "Evaluation", Tables III/IV).

For every lesion class and for "infection" (the union of all lesion classes) the pixel counts
TP, FP, TN, FN come from :func:`torchmetrics.functional.classification.multiclass_stat_scores`
(``average=None``, ``multidim_average="global"``) resp. ``binary_stat_scores`` for the union, and

* Dice        = 2 TP / (2 TP + FP + FN)
* sensitivity = TP / (TP + FN)
* specificity = TN / (TN + FP)

Counts are pooled over all pixels of one fold of the test set (not averaged per image): a fold's
score is defined even when single slices lack a class, and slices weigh by their lesion area.
A ratio whose denominator is 0 (the class is absent from the fold's ground truth and predictions)
is NaN and is left out of the fold mean (the table records how many folds contributed).

Pooled specificity is dominated by the true negatives of the body's outside and of the healthy
lung (lesions cover a few percent of a slice), so it stays near 100% for any reasonable model;
read Dice and sensitivity for the lesions.

Per-image Dice (:func:`per_image_dice`, MONAI's ``DiceMetric(include_background=False,
reduction="none", ignore_empty=...)`` convention): ``2 |P n G| / (|P| + |G|)`` for each image and
class; with ``ignore_empty=True`` (the default, MONAI's too) an image whose ground truth lacks the
class has no value and is left out of the mean, with ``ignore_empty=False`` it scores 1 when the
prediction lacks the class too, else 0. A fold's per-image Dice is the mean over its images
(:func:`per_image_dice_folds`): every slice weighs the same, small lesions as much as large ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch

METRICS = ("dice", "sensitivity", "specificity")
#: Metric name of the per-image Dice (MONAI convention, ignore_empty=True) in downstream tables.
PER_IMAGE_DICE = "dice_per_image"
INFECTION = "infection"


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def scores_from_counts(tp: float, fp: float, tn: float, fn: float) -> dict[str, float]:
    """Dice, sensitivity and specificity from pixel counts (NaN where the denominator is 0)."""
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def segmentation_counts(pred: torch.Tensor, target: torch.Tensor, class_names: list[str]) -> dict[str, tuple[int, int, int, int]]:
    """Pixel counts ``(tp, fp, tn, fn)`` per lesion class and for their union.

    ``pred`` and ``target``: int64 ``[N, H, W]`` in the U-Net's label space (0 = background or
    non-lesion, ``k`` = ``class_names[k - 1]``). ``class_names`` names the lesion classes;
    the union entry is ``"infection"`` (or ``"infection (union)"`` if a class is itself named
    "infection" and there is more than one lesion class; with one lesion class the union is that
    class and only one entry is returned).
    """
    pred = pred.reshape(pred.shape[0], -1).long()
    target = target.reshape(target.shape[0], -1).long()
    num_classes = len(class_names) + 1
    # Imported here: torchmetrics takes seconds to import and every CLI start loads this plugin.
    from torchmetrics.functional.classification import binary_stat_scores, multiclass_stat_scores

    stats = multiclass_stat_scores(pred, target, num_classes=num_classes, average=None, multidim_average="global")
    out: dict[str, tuple[int, int, int, int]] = {}
    for k, name in enumerate(class_names, start=1):
        tp, fp, tn, fn = (int(v) for v in stats[k, :4])
        out[name] = (tp, fp, tn, fn)
    union = binary_stat_scores((pred > 0).long(), (target > 0).long(), multidim_average="global")
    union_name = union_class_name(class_names)
    if union_name not in out:
        out[union_name] = tuple(int(v) for v in union[:4])
    return out


def union_class_name(class_names: list[str]) -> str:
    """Name of the union-of-lesions row: ``infection`` unless a lesion class already uses it."""
    if len(class_names) == 1:
        return class_names[0] if class_names[0] == INFECTION else INFECTION
    return INFECTION if INFECTION not in class_names else f"{INFECTION} (union)"


def segmentation_scores(pred: torch.Tensor, target: torch.Tensor, class_names: list[str]) -> dict[str, dict[str, float]]:
    """``{class: {metric: value}}`` for each lesion class and the union (see module docstring)."""
    return {name: scores_from_counts(*c) for name, c in segmentation_counts(pred, target, class_names).items()}


def per_image_dice(pred: torch.Tensor, target: torch.Tensor, class_names: list[str],
                   ignore_empty: bool = True) -> dict[str, np.ndarray]:
    """``{class: float64 [N]}``: the Dice of every image per lesion class and for their union
    (module docstring; layouts as :func:`segmentation_counts`). NaN marks "no value"."""
    pred = pred.reshape(pred.shape[0], -1).long()
    target = target.reshape(target.shape[0], -1).long()
    masks = {name: (pred == k, target == k) for k, name in enumerate(class_names, start=1)}
    union = union_class_name(class_names)
    masks.setdefault(union, (pred > 0, target > 0))
    out = {}
    for name, (p, g) in masks.items():
        inter = (p & g).sum(dim=1).double()
        size = p.sum(dim=1).double() + g.sum(dim=1).double()
        dice = torch.where(size > 0, 2 * inter / size.clamp(min=1), torch.ones_like(size))
        empty_gt = g.sum(dim=1) == 0
        if ignore_empty:
            dice = torch.where(empty_gt, torch.full_like(dice, math.nan), dice)
        else:
            dice = torch.where(empty_gt & (p.sum(dim=1) > 0), torch.zeros_like(dice), dice)
        out[name] = dice.numpy()
    return out


def per_image_dice_folds(pred: torch.Tensor, target: torch.Tensor, class_names: list[str], folds: list[np.ndarray],
                         ignore_empty: bool = True) -> dict[str, list[float]]:
    """``{class: [fold mean of the per-image Dice]}`` (NaN for a fold where no image has a value)."""
    per = per_image_dice(pred, target, class_names, ignore_empty)
    out = {}
    for name, values in per.items():
        fold_means = []
        for idx in folds:
            v = values[np.asarray(idx)]
            v = v[~np.isnan(v)]
            fold_means.append(float(v.mean()) if v.size else math.nan)
        out[name] = fold_means
    return out
