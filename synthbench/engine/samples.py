"""Per-epoch sample grids: one row per fixed training sample, columns label (coloured), real, fake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthbench.data.spec import DatasetSpec
from synthbench.io import atomic_path


def colour_label(label: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """``uint/int [H, W]`` class ids -> ``uint8 [H, W, 3]`` with the spec's class colours."""
    palette = np.zeros((max(256, spec.num_classes), 3), dtype=np.uint8)
    for c in spec.classes:
        palette[c.id] = c.colour
    return palette[np.asarray(label, dtype=np.int64)]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``[-1, 1]`` -> ``0..255`` by ``round((x + 1) * 127.5)`` (docs/architecture.md)."""
    return np.clip(np.round((np.asarray(image, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def sample_grid(label: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, spec: DatasetSpec) -> np.ndarray:
    """``label [B,H,W]``, ``real/fake [B,1,H,W]`` -> ``uint8 [B*H, 3*W, 3]`` grid."""
    rows = []
    for i in range(label.shape[0]):
        lab = colour_label(label[i].cpu().numpy(), spec)
        r = np.repeat(to_uint8(real[i, 0].float().cpu().numpy())[..., None], 3, axis=2)
        f = np.repeat(to_uint8(fake[i, 0].float().cpu().numpy())[..., None], 3, axis=2)
        rows.append(np.concatenate([lab, r, f], axis=1))
    return np.concatenate(rows, axis=0)


def save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
