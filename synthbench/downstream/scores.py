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
"""

from __future__ import annotations

import math

import torch

METRICS = ("dice", "sensitivity", "specificity")
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
