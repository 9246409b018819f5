"""Summaries and preview grids of a prepared data set (paper Table I counts, Fig.-style overlays).

Overlay colours come from the data-set description (paper figures: lung red, ground-glass blue,
consolidation green).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synthbench.data.prepared import AUGMENTED_OF, REAL_SPLITS, PreparedDataset
from synthbench.errors import SynthbenchError
from synthbench.io import atomic_path


def summarize(ds: PreparedDataset) -> dict[str, Any]:
    """Counts per split before/after augmentation (paper Table I), patients, class pixel fractions."""
    spec = ds.spec
    splits: dict[str, Any] = {}
    for name in ds.split_names:
        arr = ds.split(name)
        counts = np.zeros(spec.num_classes, np.int64)
        for start in range(0, len(arr), 256):
            counts += np.bincount(np.asarray(arr.label[start : start + 256]).ravel(), minlength=spec.num_classes)[: spec.num_classes]
        total = max(int(counts.sum()), 1)
        splits[name] = {
            "count": len(arr),
            "patients": sorted(set(arr.patient)),
            "class_fraction": {c.name: float(counts[c.id] / total) for c in spec.classes},
        }
    table = []
    for real, augmented in AUGMENTED_OF.items():
        if real in splits:
            table.append({"split": real, "before": splits[real]["count"], "after": splits.get(augmented, {}).get("count", 0)})
    return {
        "path": str(ds.root),
        "name": spec.name,
        "classes": spec.class_names,
        "region": spec.region_label,
        "warnings": list(ds.manifest.get("source", {}).get("warnings", [])),
        "intensity": spec.intensity,
        "size": ds.size,
        "content_hash": ds.content_hash,
        "source": ds.manifest.get("source", {}),
        "options": ds.manifest.get("options", {}),
        "table_i": table,
        "splits": splits,
    }


def overlay(image: np.ndarray, label: np.ndarray, colours: list[tuple[int, int, int]], alpha: float = 0.45) -> np.ndarray:
    """``[H,W]`` image in [-1,1] and label -> ``uint8 [H,W,3]`` with coloured classes (class 0 left clear)."""
    gray = np.clip(np.rint((np.asarray(image, np.float32) + 1.0) * 127.5), 0, 255)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    lut = np.asarray(colours, np.float32)
    lab = np.asarray(label)
    mask = lab > 0
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * lut[lab[mask]]
    return rgb.astype(np.uint8)


def preview_grid(ds: PreparedDataset, split: str, n: int, out: str | Path, seed: int = 0) -> Path:
    """Write a PNG grid: for ``n`` slices of ``split``, the image above its label overlay."""
    from PIL import Image

    arr = ds.split(split)
    if len(arr) == 0:
        raise SynthbenchError(f"split {split!r} is empty", ds.root)
    if n < 1:
        raise SynthbenchError(f"--n must be at least 1, got {n}")
    n = min(n, len(arr))
    idx = np.sort(np.random.default_rng(seed).choice(len(arr), n, replace=False)) if n < len(arr) else np.arange(n)
    colours = [c.colour for c in ds.spec.classes]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    s, pad = ds.size, 2
    canvas = np.full((rows * (2 * s + pad) + pad, cols * (s + pad) + pad, 3), 255, np.uint8)
    for k, i in enumerate(idx):
        r, c = divmod(k, cols)
        y0, x0 = pad + r * (2 * s + pad), pad + c * (s + pad)
        img = np.asarray(arr.image[i], np.float32)
        canvas[y0 : y0 + s, x0 : x0 + s] = overlay(img, np.zeros_like(arr.label[i]), colours)
        canvas[y0 + s : y0 + 2 * s, x0 : x0 + s] = overlay(img, arr.label[i], colours)
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise SynthbenchError("preview output must be a .png file", out)
    with atomic_path(out, suffix=".png") as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    return out


__all__ = ["summarize", "overlay", "preview_grid", "REAL_SPLITS"]
