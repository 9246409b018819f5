"""Preprocessing of the paper (Sec. "Data and preprocessing"): intensity check and HU window,
resize, slice selection and the deterministic patient-level split.

* HU sources: window ``spec.hu_window`` (paper [-600, 1500]) mapped linearly to ``[-1, 1]``.
* Scaled sources (e.g. 8-bit PNG already windowed): ``spec.value_range`` mapped to ``[-1, 1]``;
  never HU-windowed.
* Values that do not fit the declared kind are an error (0..255 declared HU, negative HU values
  declared scaled).
* Resize: images bilinear with antialiasing, label maps nearest (paper: 630 -> 512). A
  non-square slice keeps its aspect ratio by default: the longer side is resized to ``size`` and
  the shorter one padded (image at -1, the bottom of the window; label the background class);
  ``mode="stretch"`` stretches it to a square instead.
* Region ``"threshold"``: a lung class derived from Hounsfield units (:func:`threshold_lung`).
* Selection: keep slices that contain a lesion class (paper: 446 of 829 slices).
* Split: whole patients to ``train`` / ``test`` / ``seg_test`` in the paper's 300/73/73 proportions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


def check_intensity(image: np.ndarray, spec: DatasetSpec, where: str | Sequence[str]) -> None:
    """Raise if the values do not fit the declared intensity kind.

    ``where`` names the file, or is one name per slice of ``image [M,H,W]``: the error then names
    the first offending slice (not the first of its patient).
    """
    problem = _intensity_problem(image, spec)
    if problem is None:
        return
    if not isinstance(where, str):
        names = list(where)
        for k in range(len(names)):
            if _intensity_problem(image[k], spec):
                check_intensity(image[k], spec, names[k])
        where = names[0]
    raise SynthbenchError(problem, where)


def _intensity_problem(image: np.ndarray, spec: DatasetSpec) -> str | None:
    if not np.isfinite(image).all():
        return "image contains NaN or infinite values"
    lo, hi = float(image.min()), float(image.max())
    if spec.intensity == "hu":
        if lo > HU_AIR_THRESHOLD:
            return (f"declared Hounsfield units but the values span {lo:g}..{hi:g} with no air (nothing below "
                    f"{HU_AIR_THRESHOLD:g}); scaled data (e.g. 8-bit PNG) must be declared intensity 'scaled'")
        if lo < -4096 or hi > 32767:
            return f"values {lo:g}..{hi:g} are outside any Hounsfield range"
        return None
    vlo, vhi = spec.value_range
    if lo < vlo or hi > vhi:
        hint = ""
        if lo < 0 <= vlo:
            hint = " (negative values look like Hounsfield units: declare intensity 'hu')"
        elif hi > 255 and vhi <= 255:
            hint = " (a 16-bit image: declare value_range = [0, 65535] or the range the images use)"
        return f"declared scaled intensities in {vlo:g}..{vhi:g} but the values span {lo:g}..{hi:g}{hint}"
    return None


def to_unit(image: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """Source intensities -> float32 in ``[-1, 1]``: HU window or linear value range (paper HU window)."""
    lo, hi = spec.hu_window if spec.intensity == "hu" else spec.value_range
    if not hi > lo:
        raise SynthbenchError(f"data set {spec.name!r}: empty intensity window {lo:g}..{hi:g}")
    out = (np.asarray(image, np.float32) - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    return np.clip(out, -1.0, 1.0)


RESIZE_MODES = ("pad", "stretch")


@dataclass(frozen=True)
class ResizeGeometry:
    """Where a resized slice's pixels come from: output pixel ``(r, c)`` samples the source at
    row ``scale[0] * (r - offset[0]) + (scale[0] - 1) / 2`` and column likewise (pixel centres,
    ``align_corners=False``); pixels outside ``content`` are padding."""

    scale: tuple[float, float]
    offset: tuple[int, int]
    content: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "offset": list(self.offset), "content": list(self.content)}


def resize_geometry(shape: tuple[int, int], size: int, mode: str = "pad") -> ResizeGeometry:
    """Content size and padding offsets of an ``[H, W]`` slice resized to ``size x size``."""
    if mode not in RESIZE_MODES:
        raise SynthbenchError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    h, w = shape
    if mode == "stretch" or h == w:
        ch, cw = size, size
    else:
        f = size / max(h, w)
        ch, cw = max(1, int(round(h * f))), max(1, int(round(w * f)))
    off = ((size - ch) // 2, (size - cw) // 2)
    return ResizeGeometry((h / ch, w / cw), off, (ch, cw))


def resize(
    image: np.ndarray, label: np.ndarray, size: int, mode: str = "pad", pad_label: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``[N,H,W]`` image (antialiased bilinear) and label (nearest) to ``[N,size,size]``.

    ``mode="pad"`` keeps the aspect ratio and pads with image -1 and label ``pad_label`` (the
    background class; ``None`` when the data set has none, which makes padding an error);
    ``"stretch"`` stretches to a square. See :func:`resize_geometry` for the pixel mapping.
    """
    geometry = resize_geometry(image.shape[-2:], size, mode)
    ch, cw = geometry.content
    if image.shape[-2:] != (ch, cw):
        img = torch.from_numpy(np.ascontiguousarray(image, np.float32)).unsqueeze(1)
        lab = torch.from_numpy(np.ascontiguousarray(label)).unsqueeze(1).float()
        img = F.interpolate(img, size=(ch, cw), mode="bilinear", antialias=True, align_corners=False)
        lab = F.interpolate(lab, size=(ch, cw), mode="nearest-exact")
        image, label = img.squeeze(1).clamp_(-1, 1).numpy(), lab.squeeze(1).round().to(torch.uint8).numpy()
    if (ch, cw) == (size, size):
        return image.astype(np.float32, copy=False), label
    if pad_label is None:
        raise SynthbenchError(
            f"a {image.shape[-2]}x{image.shape[-1]} slice needs padding to {size}x{size}, but no class has the role "
            "'background' to pad with (use --resize stretch)")
    out_img = np.full((len(image), size, size), -1.0, np.float32)
    out_lab = np.full((len(label), size, size), pad_label, np.uint8)
    r0, c0 = geometry.offset
    out_img[:, r0:r0 + ch, c0:c0 + cw] = image
    out_lab[:, r0:r0 + ch, c0:c0 + cw] = label
    return out_img, out_lab


def threshold_lung(hu: np.ndarray, label: np.ndarray, spec: DatasetSpec, lung_id: int) -> np.ndarray:
    """Region ``"threshold"``: background pixels below ``spec.lung_threshold_hu`` inside the body
    become class ``lung_id``.

    Per slice: the body is the largest connected component of tissue (HU at or above the
    threshold) with its holes filled; air inside it (lungs, airways, and any bowel gas on the
    slice) is the candidate lung; components smaller than 0.05% of the slice are dropped (noise).
    Only background pixels change, so lesion classes keep their labels.
    """
    from scipy import ndimage

    background = [c.id for c in spec.classes if c.role == "background"]
    out = label.copy()
    min_pixels = max(4, hu.shape[-1] * hu.shape[-2] // 2000)
    for k in range(len(hu)):
        tissue = hu[k] >= spec.lung_threshold_hu
        parts, count = ndimage.label(tissue)
        if count == 0:
            continue
        sizes = ndimage.sum(tissue, parts, index=np.arange(1, count + 1))
        body = ndimage.binary_fill_holes(parts == int(np.argmax(sizes)) + 1)
        air = body & ~tissue
        parts, count = ndimage.label(air)
        if count:
            sizes = ndimage.sum(air, parts, index=np.arange(1, count + 1))
            air = np.isin(parts, np.nonzero(sizes >= min_pixels)[0] + 1)
        out[k][air & np.isin(label[k], background)] = lung_id
    return out


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
