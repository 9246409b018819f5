"""Preprocessing of the paper (Sec. "Data and preprocessing"): intensity check and HU window,
resize, slice selection and the deterministic patient-level split.

* HU sources: window ``spec.hu_window`` (paper [-600, 1500]) mapped linearly to ``[-1, 1]``.
* Scaled sources (e.g. 8-bit PNG already windowed): ``spec.value_range`` mapped to ``[-1, 1]``;
  never HU-windowed.
* Values that do not fit the declared kind are an error (0..255 declared HU, negative HU values
  declared scaled).
* Resize: images bilinear with antialiasing, label maps nearest (paper: 630 -> 512).
* Selection: keep slices that contain a lesion class (paper: 446 of 829 slices).
* Split: whole patients to ``train`` / ``test`` / ``seg_test`` in the paper's 300/73/73 proportions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synthbench.data.spec import DatasetSpec
from synthbench.errors import SynthbenchError

#: Paper split of the 446 kept slices: 300 synthesis train, 73 synthesis test, 73 segmentation test.
PAPER_SPLIT = (300, 73, 73)
SPLIT_NAMES = ("train", "test", "seg_test")

#: A CT volume in Hounsfield units has air near -1000; its minimum is below this in any chest slice set.
HU_AIR_THRESHOLD = -200.0


def check_intensity(image: np.ndarray, spec: DatasetSpec, where: str) -> None:
    """Raise if the values do not fit the declared intensity kind (``where`` names the file)."""
    if not np.isfinite(image).all():
        raise SynthbenchError("image contains NaN or infinite values", where)
    lo, hi = float(image.min()), float(image.max())
    if spec.intensity == "hu":
        if lo > HU_AIR_THRESHOLD:
            raise SynthbenchError(
                f"declared Hounsfield units but the values span {lo:g}..{hi:g} with no air (nothing below "
                f"{HU_AIR_THRESHOLD:g}); scaled data (e.g. 8-bit PNG) must be declared intensity 'scaled'",
                where,
            )
        if lo < -4096 or hi > 32767:
            raise SynthbenchError(f"values {lo:g}..{hi:g} are outside any Hounsfield range", where)
    else:
        vlo, vhi = spec.value_range
        if lo < vlo or hi > vhi:
            raise SynthbenchError(
                f"declared scaled intensities in {vlo:g}..{vhi:g} but the values span {lo:g}..{hi:g}"
                + (" (negative values look like Hounsfield units: declare intensity 'hu')" if lo < 0 <= vlo else ""),
                where,
            )


def to_unit(image: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """Source intensities -> float32 in ``[-1, 1]``: HU window or linear value range (paper HU window)."""
    lo, hi = spec.hu_window if spec.intensity == "hu" else spec.value_range
    if not hi > lo:
        raise SynthbenchError(f"data set {spec.name!r}: empty intensity window {lo:g}..{hi:g}")
    out = (np.asarray(image, np.float32) - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    return np.clip(out, -1.0, 1.0)


def resize(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``[N,H,W]`` image (antialiased bilinear) and label (nearest) to ``[N,size,size]``."""
    if image.shape[-2:] == (size, size):
        return image.astype(np.float32, copy=False), label
    img = torch.from_numpy(np.ascontiguousarray(image, np.float32)).unsqueeze(1)
    lab = torch.from_numpy(np.ascontiguousarray(label)).unsqueeze(1).float()
    img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    lab = F.interpolate(lab, size=(size, size), mode="nearest-exact")
    return img.squeeze(1).clamp_(-1, 1).numpy(), lab.squeeze(1).round().to(torch.uint8).numpy()


def has_lesion(label: np.ndarray, spec: DatasetSpec, min_pixels: int = 1) -> np.ndarray:
    """``[N]`` bool: slice contains at least ``min_pixels`` pixels of a lesion class."""
    ids = np.asarray(spec.lesion_ids, dtype=label.dtype)
    counts = np.isin(label, ids).reshape(label.shape[0], -1).sum(axis=1)
    return counts >= max(min_pixels, 1)


def split_patients(
    counts: dict[str, int], seed: int, proportions: Sequence[float] = PAPER_SPLIT
) -> dict[str, list[str]]:
    """Deterministic patient-level split; slice counts approach ``proportions`` (no patient on two sides).

    Patients are visited in a seed-determined order (a hash, so adding a patient does not reshuffle
    the others) and each goes to the split furthest below its target share of slices. With at least
    as many patients as splits, every split gets at least one patient.
    """
    props = np.asarray(proportions, dtype=float)
    if props.shape != (len(SPLIT_NAMES),) or (props < 0).any() or props.sum() <= 0:
        raise SynthbenchError(f"split proportions must be three non-negative numbers, got {list(proportions)}")
    props = props / props.sum()
    active = [i for i in range(len(props)) if props[i] > 0]
    if len(counts) < len(active):
        raise SynthbenchError(
            f"need at least {len(active)} patients for a patient-level split into "
            f"{', '.join(SPLIT_NAMES[i] for i in active)}, got {len(counts)}"
        )
    order = sorted(counts, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    # Largest patients first keeps the greedy fill close to the targets.
    order.sort(key=lambda p: -counts[p])
    total = sum(counts.values())
    got = np.zeros(len(props))
    out: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    remaining = len(order)
    for p in order:
        empty = [i for i in active if not out[SPLIT_NAMES[i]]]
        if empty and remaining <= len(empty):
            i = empty[0]
        else:
            deficit = [(props[i] * total - got[i]) / max(props[i], 1e-9) for i in active]
            i = active[int(np.argmax(deficit))]
        out[SPLIT_NAMES[i]].append(p)
        got[i] += counts[p]
        remaining -= 1
    return out
