"""Prepared data sets: preprocessed, split and augmented once, then memory-mapped by every method.

On-disk layout (format ``synthbench-prepared/1``)::

    DIR/manifest.json                  spec, size, source, options, split counts, content hash
    DIR/splits/<split>/image.npy       float16 [N, H, W], intensities in [-1, 1]
    DIR/splits/<split>/label.npy       uint8   [N, H, W], class ids
    DIR/splits/<split>/index.json      per sample: patient id, source slice, augmentation number

Split names: ``train`` (synthesis training), ``test`` (synthesis test), ``seg_test``
(segmentation test) hold the real slices; ``train_aug``, ``test_aug`` and ``seg_test_aug`` hold
their augmented expansions (paper Table I: 300 -> 12,000, 73 -> 10,220 and 73 -> 10,220; the
segmentation-test set is expanded by the synthesis-test factor). The content hash covers the
spec and every array byte, so two methods trained on the same hash saw byte-identical data.

The directory is written under a temporary name and renamed when complete: a killed
``data prepare`` leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthbench.data.spec import DatasetSpec
from synthbench.errors import SynthbenchError
from synthbench.io import atomic_directory
from synthbench.synthesizer import Batch

FORMAT = "synthbench-prepared/1"
REAL_SPLITS = ("train", "test", "seg_test")
AUGMENTED_SPLITS = ("train_aug", "test_aug", "seg_test_aug")
#: The augmented expansion of each real split.
AUGMENTED_OF = dict(zip(REAL_SPLITS, AUGMENTED_SPLITS, strict=True))


def _hash_array(digest: Any, array: np.ndarray, chunk: int = 256) -> None:
    """Feed ``array.tobytes()`` to ``digest`` in blocks of rows (same hash, no full in-memory copy)."""
    array = np.ascontiguousarray(array)
    for start in range(0, max(len(array), 1), chunk):
        digest.update(np.ascontiguousarray(array[start : start + chunk]).view(np.uint8).reshape(-1).data)


@dataclass
class SplitArrays:
    """One split in memory or memory-mapped. ``image`` float16/32 [N,H,W]; ``label`` uint8 [N,H,W]."""

    image: np.ndarray
    label: np.ndarray
    patient: list[str]
    source_index: list[int]
    augmentation: list[int]

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def validate(self, name: str, num_classes: int) -> None:
        n = len(self)
        if self.image.shape != self.label.shape or self.image.ndim != 3:
            raise SynthbenchError(f"split {name!r}: image {self.image.shape} and label {self.label.shape} differ")
        for field_name in ("patient", "source_index", "augmentation"):
            if len(getattr(self, field_name)) != n:
                raise SynthbenchError(f"split {name!r}: {field_name} has {len(getattr(self, field_name))} entries, expected {n}")
        if n and int(self.label.max()) >= num_classes:
            raise SynthbenchError(f"split {name!r}: label {int(self.label.max())} outside the {num_classes} declared classes")


def write_prepared(
    out_dir: str | Path,
    spec: DatasetSpec,
    splits: dict[str, SplitArrays],
    source: dict[str, Any],
    options: dict[str, Any],
    overwrite: bool = False,
) -> str:
    """Write a prepared data set atomically; return its content hash."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise SynthbenchError("output directory already exists (use --overwrite to replace it)", out_dir)
    sizes = {s.label.shape[1:] for s in splits.values() if len(s)}
    if len(sizes) > 1:
        raise SynthbenchError(f"splits have different slice sizes: {sorted(sizes)}")
    digest = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    split_meta: dict[str, Any] = {}
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        for name, arrays in splits.items():
            arrays.validate(name, spec.num_classes)
            folder = tmp / "splits" / name
            folder.mkdir(parents=True)
            image = np.ascontiguousarray(arrays.image, dtype=np.float16)
            label = np.ascontiguousarray(arrays.label, dtype=np.uint8)
            np.save(folder / "image.npy", image)
            np.save(folder / "label.npy", label)
            index = {
                "patient": [str(p) for p in arrays.patient],
                "source_index": [int(i) for i in arrays.source_index],
                "augmentation": [int(a) for a in arrays.augmentation],
            }
            (folder / "index.json").write_text(json.dumps(index))
            digest.update(name.encode())
            _hash_array(digest, image)
            _hash_array(digest, label)
            digest.update(json.dumps(index, sort_keys=True).encode())
            split_meta[name] = {"count": len(arrays), "patients": sorted(set(index["patient"]))}
        content_hash = digest.hexdigest()
        size = next(iter(sizes))[0] if sizes else 0
        manifest = {
            "format": FORMAT,
            "spec": spec.to_dict(),
            "size": int(size),
            "source": source,
            "options": options,
            "splits": split_meta,
            # Order in which the splits entered the hash ("splits" itself is written key-sorted).
            "split_order": list(split_meta),
            "content_hash": content_hash,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return content_hash


class PreparedDataset:
    """Read access to a prepared data set (arrays are memory-mapped, never decoded per step)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            raise SynthbenchError("not a prepared data set (no manifest.json; run 'synthbench data prepare')", self.root)
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise SynthbenchError(f"corrupt manifest: {exc}", manifest_path) from exc
        if self.manifest.get("format") != FORMAT:
            raise SynthbenchError(f"unsupported format {self.manifest.get('format')!r}, expected {FORMAT!r}", manifest_path)
        self.spec = DatasetSpec.from_dict(self.manifest["spec"])
        self._cache: dict[str, SplitArrays] = {}

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def split_names(self) -> list[str]:
        return list(self.manifest["splits"])

    def has_split(self, name: str) -> bool:
        return name in self.manifest["splits"]

    def split(self, name: str) -> SplitArrays:
        if name not in self._cache:
            if not self.has_split(name):
                raise SynthbenchError(f"no split {name!r} (available: {', '.join(self.split_names)})", self.root)
            folder = self.root / "splits" / name
            try:
                image = np.load(folder / "image.npy", mmap_mode="r")
                label = np.load(folder / "label.npy", mmap_mode="r")
                index = json.loads((folder / "index.json").read_text())
            except (OSError, ValueError) as exc:
                raise SynthbenchError(f"cannot read split {name!r}: {exc}", folder) from exc
            self._cache[name] = SplitArrays(image, label, index["patient"], index["source_index"], index["augmentation"])
        return self._cache[name]

    def torch_dataset(self, name: str) -> SliceDataset:
        return SliceDataset(self.split(name))

    def lung_mask(self, label: torch.Tensor) -> torch.Tensor:
        """``int64 [B, H, W]`` labels -> ``bool [B, 1, H, W]`` lung region (spec's lung+lesion classes)."""
        lut = torch.zeros(max(256, self.num_classes), dtype=torch.bool, device=label.device)
        lut[list(self.spec.lung_region_ids)] = True  # a table lookup: ~2x faster than torch.isin
        return lut[label.long()].unsqueeze(1)

    def collate(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
        """DataLoader ``collate_fn``: a list of (image [1,H,W], label [H,W]) -> :class:`Batch`."""
        image = torch.stack([i for i, _ in items])
        label = torch.stack([lab for _, lab in items])
        return Batch(image=image, label=label, num_classes=self.num_classes, lung=self.lung_mask(label))

    def verify(self) -> bool:
        """Recompute the content hash from the files and compare with the manifest."""
        digest = hashlib.sha256(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        for name in self.manifest.get("split_order", self.manifest["splits"]):
            arrays = self.split(name)
            digest.update(name.encode())
            _hash_array(digest, arrays.image)
            _hash_array(digest, arrays.label)
            index = {"patient": arrays.patient, "source_index": arrays.source_index, "augmentation": arrays.augmentation}
            digest.update(json.dumps(index, sort_keys=True).encode())
        return digest.hexdigest() == self.content_hash


class SliceDataset(torch.utils.data.Dataset):
    """Map-style dataset over one split: item ``i`` is ``(image float32 [1,H,W], label int64 [H,W])``."""

    def __init__(self, arrays: SplitArrays):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.asarray(self.arrays.image[i], dtype=np.float32)).unsqueeze(0)
        label = torch.from_numpy(np.asarray(self.arrays.label[i], dtype=np.int64))
        return image, label
