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

The directory is written under a temporary name, every file fsynced, and renamed when
complete: a killed ``data prepare`` leaves nothing half-written (its temporary folders are
removed by the next ``data prepare`` of the same target). Arrays are written in blocks of rows,
so memory stays bounded whatever the data set's size.

Integrity: ``manifest.json`` also records, per file, its size, its sha256 and a cheap
fingerprint (sha256 of a few sampled blocks). :meth:`PreparedDataset.check_files` compares
sizes and fingerprints (milliseconds; every ``train`` does it) and
:meth:`PreparedDataset.verify_files` the full hashes (``synthbench data verify``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthbench.data.spec import DatasetSpec
from synthbench.errors import SynthbenchError
from synthbench.io import atomic_directory, sha256_file
from synthbench.synthesizer import Batch

FORMAT = "synthbench-prepared/1"
REAL_SPLITS = ("train", "test", "seg_test")
AUGMENTED_SPLITS = ("train_aug", "test_aug", "seg_test_aug")
#: The augmented expansion of each real split.
AUGMENTED_OF = dict(zip(REAL_SPLITS, AUGMENTED_SPLITS, strict=True))


#: Rows of an array written (and hashed) at once.
WRITE_ROWS = 256
#: The cheap fingerprint reads this many blocks of this size (head, tail and evenly spaced ones).
FINGERPRINT_BLOCKS = 10
FINGERPRINT_BLOCK = 64 * 1024


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


def array_bytes(count: int, size: int) -> int:
    """Bytes one split of ``count`` slices of ``size`` x ``size`` takes on disk (float16 + uint8)."""
    return count * size * size * (np.dtype(np.float16).itemsize + np.dtype(np.uint8).itemsize)


def _write_array(path: Path, array: np.ndarray, dtype: Any, content: Any, advance) -> None:
    """``np.save`` of ``array`` as ``dtype``, WRITE_ROWS rows at a time (bounded memory; a full
    disk is an ``OSError``, never a SIGBUS); the rows also feed the ``content`` hash.

    A memory-mapped ``.npy`` that already is exactly that file (the staged augmented splits of
    :func:`synthbench.data.prepare.prepare`) is moved into place instead of copied: the disk
    never holds the augmented data twice.
    """
    if _is_whole_npy(array, dtype, path):
        for start in range(0, len(array), WRITE_ROWS):
            rows = np.ascontiguousarray(array[start:start + WRITE_ROWS])
            content.update(rows.view(np.uint8).reshape(-1).data)
            advance(rows.nbytes)
        array.flush()
        os.replace(array.filename, path)
        return
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": array.shape})
    with open(path, "wb") as fh:
        fh.write(header.getvalue())
        for start in range(0, len(array), WRITE_ROWS):
            rows = np.ascontiguousarray(array[start:start + WRITE_ROWS], dtype=dtype)
            data = rows.view(np.uint8).reshape(-1).data
            fh.write(data)
            content.update(data)
            advance(rows.nbytes)


def _is_whole_npy(array: np.ndarray, dtype: Any, target: Path) -> bool:
    """``array`` maps a whole C-ordered ``.npy`` file of ``dtype`` on ``target``'s file system."""
    source = getattr(array, "filename", None)
    if not isinstance(array, np.memmap) or source is None or array.dtype != np.dtype(dtype):
        return False
    source = Path(source)
    if not (array.flags.c_contiguous and source.suffix == ".npy" and source.is_file()):
        return False
    if source.stat().st_size != array.offset + array.nbytes or source.stat().st_dev != target.parent.stat().st_dev:
        return False
    with open(source, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, file_dtype = read(fh)
        data_offset = fh.tell()
    return tuple(shape) == array.shape and not fortran and file_dtype == array.dtype and data_offset == array.offset


def file_fingerprint(path: str | Path) -> str:
    """sha256 of the size and FINGERPRINT_BLOCKS sampled blocks: cheap, catches a changed,
    truncated or swapped file (a change outside the sampled blocks needs the full hash)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    last = max(size - FINGERPRINT_BLOCK, 0)
    offsets = sorted({round(i * last / (FINGERPRINT_BLOCKS - 1)) for i in range(FINGERPRINT_BLOCKS)})
    with open(path, "rb") as fh:
        for offset in offsets:
            fh.seek(offset)
            digest.update(fh.read(FINGERPRINT_BLOCK))
    return digest.hexdigest()


def _file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path), "fingerprint": file_fingerprint(path)}


def write_prepared(
    out_dir: str | Path,
    spec: DatasetSpec,
    splits: dict[str, SplitArrays],
    source: dict[str, Any],
    options: dict[str, Any],
    overwrite: bool = False,
    show_progress: bool = False,
    started: float | None = None,
) -> str:
    """Write a prepared data set atomically (fsynced); return its content hash.

    ``started``: ``time.perf_counter()`` when the preparation began; the manifest then records
    ``prepare_seconds`` (reports show it as the data set's cost).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise SynthbenchError("output directory already exists (use --overwrite to replace it)", out_dir)
    sizes = {s.label.shape[1:] for s in splits.values() if len(s)}
    if len(sizes) > 1:
        raise SynthbenchError(f"splits have different slice sizes: {sorted(sizes)}")
    for name, arrays in splits.items():
        arrays.validate(name, spec.num_classes)
    digest = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    split_meta: dict[str, Any] = {}
    files: dict[str, Any] = {}
    total = sum(a.image.size * 2 + a.label.size for a in splits.values())
    with _ByteProgress(show_progress, f"writing {out_dir.name}", total) as advance, \
            atomic_directory(out_dir, overwrite=overwrite, durable=True) as tmp:
        for name, arrays in splits.items():
            folder = tmp / "splits" / name
            folder.mkdir(parents=True)
            digest.update(name.encode())
            _write_array(folder / "image.npy", arrays.image, np.float16, digest, advance)
            _write_array(folder / "label.npy", arrays.label, np.uint8, digest, advance)
            index = {
                "patient": [str(p) for p in arrays.patient],
                "source_index": [int(i) for i in arrays.source_index],
                "augmentation": [int(a) for a in arrays.augmentation],
            }
            (folder / "index.json").write_text(json.dumps(index))
            digest.update(json.dumps(index, sort_keys=True).encode())
            split_meta[name] = {"count": len(arrays), "patients": sorted(set(index["patient"]))}
            for file in ("image.npy", "label.npy", "index.json"):
                files[f"splits/{name}/{file}"] = _file_record(folder / file)
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
            "files": files,
        }
        if started is not None:
            manifest["prepare_seconds"] = round(time.perf_counter() - started, 3)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return content_hash


class _ByteProgress:
    """A byte-counting progress bar (or nothing); yields its ``advance(n)``."""

    def __init__(self, show: bool, label: str, total: int):
        self.show, self.label, self.total = show, label, total

    def __enter__(self):
        if not self.show:
            return lambda n: None
        from synthbench.cli.console import progress

        self.bar = progress()
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.show:
            self.bar.__exit__(*exc)


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
        """``int64 [B, H, W]`` labels -> ``bool [B, 1, H, W]`` completion region (``spec.region_ids``:
        lung + lesions, lesions only or every class, as the data set declares its region)."""
        lut = torch.zeros(max(256, self.num_classes), dtype=torch.bool, device=label.device)
        lut[list(self.spec.lung_region_ids)] = True  # a table lookup: ~2x faster than torch.isin
        return lut[label.long()].unsqueeze(1)

    def collate(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
        """DataLoader ``collate_fn``: a list of (image [1,H,W], label [H,W]) -> :class:`Batch`."""
        image = torch.stack([i for i, _ in items])
        label = torch.stack([lab for _, lab in items])
        return Batch(image=image, label=label, num_classes=self.num_classes, lung=self.lung_mask(label))

    def check_files(self) -> bool:
        """Cheap check (sizes and sampled-block fingerprints) that no file changed since it was
        prepared; a :class:`SynthbenchError` names the first file that did. False when the data
        set was prepared before these records existed (nothing to compare: :meth:`verify_files`
        recomputes its content hash)."""
        files = self.manifest.get("files")
        for rel, record in (files or {}).items():
            path = self.root / rel
            if not path.is_file():
                raise SynthbenchError("missing from the prepared data set (prepare it again)", path)
            size = path.stat().st_size
            if size != record["bytes"]:
                raise SynthbenchError(f"changed since it was prepared: {size:,} bytes, the manifest records "
                                      f"{record['bytes']:,} (prepare the data set again)", path)
            if file_fingerprint(path) != record["fingerprint"]:
                raise SynthbenchError("changed since it was prepared: its content differs from the manifest's "
                                      "fingerprint (prepare the data set again)", path)
        return bool(files)

    def verify_files(self, show_progress: bool = False) -> str:
        """Full check: every file's sha256 against the manifest (or, for a data set prepared
        before files were recorded, the content hash recomputed); a :class:`SynthbenchError`
        names the first file that differs. Returns what was checked, for a message."""
        files = self.manifest.get("files")
        if not files:
            if not self.verify():
                raise SynthbenchError("content hash differs from the manifest's: a file changed since it was "
                                      "prepared (prepare the data set again)", self.root / "manifest.json")
            return "content hash recomputed from every array (no per-file records: prepared by an older version)"
        self.check_files()
        total = sum(r["bytes"] for r in files.values())
        with _ByteProgress(show_progress, f"verifying {self.root.name}", total) as advance:
            for rel, record in files.items():
                if sha256_file(self.root / rel) != record["sha256"]:
                    raise SynthbenchError("changed since it was prepared: its sha256 differs from the manifest's "
                                          "(prepare the data set again)", self.root / rel)
                advance(record["bytes"])
        return f"{len(files)} files, {total:,} bytes: every sha256 matches the manifest"

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
