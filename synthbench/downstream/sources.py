"""Synthetic training images for the downstream experiment: synthesis folders and run folders.

A synthesis folder is what ``synthbench synthesize`` writes (layout in docs/architecture.md):
``synthesis.json``, ``label/NNNNN.png`` (class ids) and ``complete/NNNNN.png`` (the synthetic
lung region pasted into the real slice, the paper's "complete" image, Sec. "Task"). The U-Net
trains on the complete images with their label maps. A run folder is accepted when it contains
exactly one synthesis folder (or several, of which exactly one synthesized ``test_aug``, the
paper's augmented synthesis-test label maps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthbench.errors import SynthbenchError

SYNTHESIS_FILE = "synthesis.json"
IMAGE_FOLDER = "complete"
LABEL_FOLDER = "label"


@dataclass
class SyntheticSource:
    """One method's synthesis folder: ``ids`` are the sample stems present in both folders."""

    method: str
    path: Path
    ids: list[str]
    record: dict[str, Any] = field(default_factory=dict)

    def load(self, ids: list[str], size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """Images float32 ``[N, H, W]`` in [-1, 1] (PNG ``v / 127.5 - 1``) and labels uint8 ``[N, H, W]``."""
        images = np.empty((len(ids), size, size), dtype=np.float32)
        labels = np.empty((len(ids), size, size), dtype=np.uint8)
        for i, sid in enumerate(ids):
            img = _read_png(self.path / IMAGE_FOLDER / f"{sid}.png", size)
            lab = _read_png(self.path / LABEL_FOLDER / f"{sid}.png", size)
            if int(lab.max()) >= num_classes:
                raise SynthbenchError(f"label {int(lab.max())} outside the data set's {num_classes} classes", self.path / LABEL_FOLDER / f"{sid}.png")
            images[i] = img.astype(np.float32) / 127.5 - 1.0
            labels[i] = lab
        return images, labels


def _read_png(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise SynthbenchError(f"cannot read image: {exc}", path) from exc
    if arr.ndim == 3:  # tolerate gray stored as RGB(A): all channels equal
        arr = arr[..., 0]
    if arr.shape != (size, size):
        raise SynthbenchError(f"image is {arr.shape[1]}x{arr.shape[0]}, the data set has {size}x{size} slices", path)
    return arr


def _candidates(root: Path) -> list[Path]:
    if (root / SYNTHESIS_FILE).is_file():
        return [root]
    found = sorted(p.parent for p in root.glob(f"*/{SYNTHESIS_FILE}"))
    found += sorted(p.parent for p in root.glob(f"*/*/{SYNTHESIS_FILE}"))
    return found


def resolve_synthesis_dir(path: str | Path) -> Path:
    """A synthesis folder, or the unique synthesis folder inside a training-run folder."""
    root = Path(path)
    if not root.is_dir():
        raise SynthbenchError("no such run or synthesis folder", root)
    found = _candidates(root)
    if not found:
        raise SynthbenchError(f"no {SYNTHESIS_FILE} here or in a subfolder (run 'synthbench synthesize' first)", root)
    if len(found) > 1:
        on_test = [p for p in found if _read_record(p).get("split") == "test_aug"]
        if len(on_test) == 1:
            return on_test[0]
        names = ", ".join(str(p.relative_to(root)) for p in found)
        raise SynthbenchError(f"several synthesis folders ({names}); pass one of them directly", root)
    return found[0]


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / SYNTHESIS_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SynthbenchError(f"cannot read synthesis record: {exc}", path) from exc
    if not isinstance(record, dict):
        raise SynthbenchError("synthesis record is not a JSON object", path)
    return record


def method_name(folder: Path, record: dict[str, Any]) -> str:
    """The synthesizer recorded by the synthesis writer: ``method`` (``method:variant`` for a
    variant, the label ``synthbench compare`` uses), else the folder name."""
    method = record.get("method")
    variant = record.get("variant")
    if isinstance(method, str) and method:
        return f"{method}:{variant}" if isinstance(variant, str) and variant and ":" not in method else method
    return folder.name


def open_synthesis(path: str | Path, method: str | None = None, data_hash: str | None = None) -> SyntheticSource:
    """Open a synthesis (or run) folder; check the layout and, if recorded, the data set's hash."""
    folder = resolve_synthesis_dir(path)
    record = _read_record(folder)
    recorded = record.get("data_hash")  # written by synthbench.synthesis
    if data_hash is not None and recorded and recorded != data_hash:
        raise SynthbenchError(
            f"synthesized from another prepared data set (hash {recorded[:12]}..., this one {data_hash[:12]}...)",
            folder / SYNTHESIS_FILE,
        )
    for sub in (IMAGE_FOLDER, LABEL_FOLDER):
        if not (folder / sub).is_dir():
            raise SynthbenchError(f"synthesis folder has no '{sub}/' folder", folder)
    images = {p.stem for p in (folder / IMAGE_FOLDER).glob("*.png")}
    labels = {p.stem for p in (folder / LABEL_FOLDER).glob("*.png")}
    ids = sorted(images & labels)
    if not ids:
        raise SynthbenchError(f"no sample has both '{IMAGE_FOLDER}/' and '{LABEL_FOLDER}/' PNGs", folder)
    return SyntheticSource(method=method or method_name(folder, record), path=folder, ids=ids, record=record)
