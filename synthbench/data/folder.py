"""Generic folder loader: image files, DICOM series and mask files described by a small config.

Config (JSON or TOML; a file ``synthbench-data.json`` / ``synthbench-data.toml`` in the source
folder is found automatically, or pass ``--config``). Unknown keys are an error::

    name = "my-data"
    intensity = "scaled"            # "hu" (Hounsfield units, HU-windowed) or "scaled" (value_range -> [-1, 1])
    value_range = [0, 255]          # for "scaled" ([0, 65535] for 16-bit images)
    hu_window = [-600, 1500]        # for "hu" (paper's window)
    images = "images"               # folder of 2-D slices (PNG, JPEG, BMP, TIFF), 3-D NIfTI volumes,
                                    # or DICOM series (one folder per patient, or a DICOMDIR)
    format = "dicom"                # optional: "dicom" (found automatically), "image" or "nifti"
    limit = 0                       # optional: use only the first N image files / patients (natural order)
    classes = [["background", "background"], ["lung", "lung"], ["infection", "lesion"]]
    region = "lung"                 # completion / region-only metrics: "lung" (needs a class with role
                                    # 'lung'), "lesion", "whole" or "threshold" (lung from HU < lung_threshold_hu)
    lung_threshold_hu = -320        # for region "threshold"

    # either one label-map file per image (same file name; per patient folder name for DICOM),
    # its values mapped to class ids:
    labels = "labels"
    label_values = {"0" = 0, "1" = 1, "2" = 2}   # default: value = class id
    # or binary masks painted in order (pixel > threshold -> class), optionally only inside classes:
    [[masks]]
    folder = "lung_masks"; class = "lung"             # threshold = 0: any non-zero pixel (0/1, 0/255, 1-bit)
    [[masks]]
    folder = "infection_masks"; class = "infection"; within = ["lung"]

    [patients]                      # how slices are grouped into patients (the split unit)
    mode = "blocks"; count = 20     # contiguous blocks of file numbers, equal sizes
    # mode = "block_size"; size = 80 | mode = "regex"; pattern = "^(\\d+)_" | mode = "per_file" (NIfTI, DICOM)
    # mode = "starts"; starts = [0, 159, 279]   # the file numbers (first number in the name) where a patient begins

Images and masks are matched by file stem (for DICOM: a NIfTI mask per patient folder, in the
series' voxel grid). Pixels: gray images as stored (8/16-bit, float TIFF); palette (P-mode)
images through their palette; RGB images only where the three channels are equal (JPEG: within
2 levels, its lossy chroma), else an error. Label and mask files keep their palette indices.
Slices of one patient may differ in size: they are resized one by one before they are grouped.
NIfTI volumes and DICOM series are read in the radiological view (:mod:`synthbench.data.volume`).
The built-in layout ``covid19-ct-lung-infection-256`` (``images/``, ``lung_masks/``,
``infection_masks/``, 8-bit PNG, not HU) is detected automatically: 0 background, 1 lung,
2 infection inside the lung mask; patients as runs of file numbers (:data:`COVID19_256_STARTS`).
"""

from __future__ import annotations

import bisect
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthbench.data import dicom
from synthbench.data.phantom import PatientSlices
from synthbench.data.spec import DatasetSpec, make_classes
from synthbench.data.volume import (
    VolumeGeometry,
    is_nifti,
    load_nifti,
    nifti_stem,
    same_grid,
    view_of,
)
from synthbench.errors import SynthbenchError

CONFIG_NAMES = ("synthbench-data.json", "synthbench-data.toml")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz")
JPEG_SUFFIXES = (".jpg", ".jpeg")
#: Files an image folder may hold besides images (notes, configs, checksums, OS clutter).
IGNORED_SUFFIXES = (".txt", ".md", ".json", ".toml", ".csv", ".tsv", ".yaml", ".yml", ".md5", ".sha256", ".ini", ".db")
CONFIG_KEYS = ("name", "intensity", "value_range", "hu_window", "images", "format", "limit", "classes", "region",
               "lung_threshold_hu", "labels", "label_values", "masks", "patients")
MASK_KEYS = ("folder", "class", "threshold", "within")
PATIENT_KEYS = {"per_file": ("mode",), "blocks": ("mode", "count"), "block_size": ("mode", "size"),
                "regex": ("mode", "pattern"), "starts": ("mode", "starts")}
FORMATS = ("image", "nifti", "dicom")
#: Largest channel difference of an RGB JPEG still read as gray (lossy chroma of a gray picture).
JPEG_GRAY_TOLERANCE = 2

#: Where a patient begins among the shared real slices (file numbers). The set keeps, volume after
#: volume, the slices with infection of the middle 60% of each of the 20 CT volumes (the
#: resliced repository's notebook), so patients are contiguous runs of unequal length (11 to 181
#: slices); 20 equal blocks cut 8 of them across the train/test splits. These starts are the
#: jumps between consecutive files (mean absolute difference above 25/255 at 64 px with the lung
#: mask changing by more than 5%, against a median of 3.4 within a run) that were confirmed by
#: eye as a new volume: lung apex followed by liver level, or another scanner field of view.
#: Unclear jumps (files 1474-1477, 1486, 1587) are not split: a run may hold two or three short
#: patients, but no patient is cut in two. 16 runs.
COVID19_256_STARTS = [0, 159, 279, 397, 510, 626, 696, 789, 970, 1081, 1247, 1258, 1376, 1442, 1510, 1565]

#: Built-in config of the shared real slices (README of covid19-ct-lung-infection-256).
COVID19_256 = {
    "name": "covid19-ct-lung-infection-256",
    "intensity": "scaled",
    "value_range": [0, 255],
    "images": "images",
    "classes": [["background", "background"], ["lung", "lung"], ["infection", "lesion"]],
    "masks": [
        {"folder": "lung_masks", "class": "lung", "threshold": 127},
        {"folder": "infection_masks", "class": "infection", "threshold": 127, "within": ["lung"]},
    ],
    "patients": {"mode": "starts", "starts": COVID19_256_STARTS},
}


@dataclass
class FolderConfig:
    """Parsed folder config (see module docstring)."""

    spec: DatasetSpec
    images: str
    labels: str | None = None
    label_values: dict[int, int] | None = None
    masks: list[dict[str, Any]] = field(default_factory=list)
    patients: dict[str, Any] = field(default_factory=lambda: {"mode": "per_file"})
    limit: int = 0
    origin: str = "built-in"
    raw: dict[str, Any] = field(default_factory=dict)
    format: str | None = None


def _natural(name: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)


def _unknown_keys(d: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in {where} "
                         f"(known keys: {', '.join(known)})")


def _label_coding(names: list[str], label_values: dict[int, int] | None, labels: str | None) -> dict[str, Any]:
    """How label files code the classes: class id -> the (smallest) file value, for writing labels back."""
    if labels is None:
        return {"label_coding_note": "binary mask folders: labels are written as class ids"}
    mapping = label_values or {i: i for i in range(len(names))}
    coding = [min((v for v, c in mapping.items() if c == cid), default=cid) for cid in range(len(names))]
    return {"label_coding": coding, "label_coding_note": f"values of the files in {labels}/"}


def parse_config(d: dict[str, Any], origin: str = "built-in") -> FolderConfig:
    """Validate a config dictionary; errors name ``origin`` (the config file)."""
    try:
        _unknown_keys(d, CONFIG_KEYS, "the data config")
        classes = make_classes([(str(n), r) for n, r in d["classes"]])
        names = [c.name for c in classes]
        labels = d.get("labels")
        label_values = {int(k): int(v) for k, v in d["label_values"].items()} if "label_values" in d else None
        spec = DatasetSpec(
            name=str(d.get("name", "folder")),
            classes=classes,
            intensity=d.get("intensity", "hu"),
            hu_window=tuple(float(v) for v in d.get("hu_window", (-600.0, 1500.0))),
            value_range=tuple(float(v) for v in d.get("value_range", (0.0, 255.0))),
            extra={"loader": "folder", **_label_coding(names, label_values, labels)},
            region=d.get("region"),
            lung_threshold_hu=float(d.get("lung_threshold_hu", -320.0)),
        )
        masks = [dict(m) for m in d.get("masks", [])]
        for m in masks:
            _unknown_keys(m, MASK_KEYS, "a masks entry")
            for key in ("folder", "class"):
                if key not in m:
                    raise KeyError(f"masks entry needs {key!r}")
            if m["class"] not in names:
                raise ValueError(f"mask class {m['class']!r} is not a declared class ({', '.join(names)})")
            for w in m.get("within", []):
                if w not in names:
                    raise ValueError(f"'within' class {w!r} is not a declared class")
        if (labels is None) == (not masks):
            raise ValueError("give either 'labels' (a label-map folder) or 'masks' (binary mask folders)")
        if label_values and max(label_values.values()) >= spec.num_classes:
            raise ValueError("label_values maps to a class id outside the declared classes")
        patients = dict(d.get("patients", {"mode": "per_file"}))
        mode = patients.get("mode")
        if mode not in PATIENT_KEYS:
            raise ValueError(f"patients.mode must be blocks, block_size, regex, starts or per_file, got {mode!r}")
        _unknown_keys(patients, PATIENT_KEYS[mode], f"[patients] (mode {mode!r})")
        if mode == "starts":
            starts = patients.get("starts")
            if not isinstance(starts, list) or not starts or any(not isinstance(v, int) or v < 0 for v in starts):
                raise ValueError(f"patients.starts must be a non-empty list of file numbers >= 0, got {starts!r}")
            patients["starts"] = sorted(set(starts))
        fmt = d.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return FolderConfig(spec, str(d["images"]), labels, label_values, masks, patients, int(d.get("limit", 0) or 0),
                            origin, dict(d), fmt)
    except (SynthbenchError, KeyError, TypeError, ValueError) as exc:
        raise SynthbenchError(f"invalid data config: {exc}", None if origin == "built-in" else origin) from exc


def load_config(path: str | Path) -> FolderConfig:
    """Read a JSON or TOML folder config."""
    path = Path(path)
    if not path.is_file():
        raise SynthbenchError("config file not found", path)
    try:
        if path.suffix == ".toml":
            import tomllib

            d = tomllib.loads(path.read_text())
        else:
            d = json.loads(path.read_text())
    except Exception as exc:
        raise SynthbenchError(f"cannot parse config: {exc}", path) from exc
    if not isinstance(d, dict):
        raise SynthbenchError("config must be a JSON object / TOML table", path)
    return parse_config(d, str(path))


def find_config(root: Path) -> Path | None:
    for name in CONFIG_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def detect_builtin(root: Path) -> FolderConfig | None:
    """The shared real-slices layout (images/, lung_masks/, infection_masks/ with PNGs)."""
    if all((root / f).is_dir() for f in ("images", "lung_masks", "infection_masks")) and any(
        p.suffix == ".png" for p in (root / "images").iterdir()
    ):
        return parse_config(COVID19_256)
    return None


def _stem(p: Path) -> str:
    return nifti_stem(p) if is_nifti(p) else p.stem


def _suffix(p: Path) -> str:
    return ".nii.gz" if p.name.lower().endswith(".nii.gz") else p.suffix.lower()


def _gray(rgb: np.ndarray, path: Path, what: str) -> np.ndarray:
    """An RGB(A) array whose channels are equal (JPEG: nearly) -> one channel, else an error."""
    channels = rgb[..., :3].astype(np.int16)
    diff = int(np.abs(channels - channels[..., :1]).max()) if channels.size else 0
    tolerance = JPEG_GRAY_TOLERANCE if _suffix(path) in JPEG_SUFFIXES and what == "image" else 0
    if diff > tolerance:
        expected = "a gray image; convert it to gray first" if what == "image" else "class values (gray or palette PNG)"
        raise SynthbenchError(f"colour {what} (RGB channels differ by up to {diff}): expected {expected}", path)
    return channels.mean(axis=-1) if tolerance else channels[..., 0]


def _read(path: Path, what: str = "image") -> np.ndarray:
    """``float32 [Z, H, W]``: a 2-D file gives Z = 1; a NIfTI volume gives its axial slices.

    ``what="image"``: palette images go through their palette, RGB only where gray (module
    docstring). ``"label"`` / ``"mask"``: palette indices are kept (they are the class values).
    """
    if not path.is_file():
        raise SynthbenchError("missing file", path)
    if is_nifti(path):
        return view_of(load_nifti(path), path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode == "P" and what == "image":
                arr = _gray(np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB")), path, what)
            elif mode in ("RGB", "RGBA", "RGBX", "YCbCr", "CMYK"):
                arr = _gray(np.asarray(im.convert("RGB")), path, what)
            elif mode in ("LA", "La", "PA"):
                arr = np.asarray(im)[..., 0]
            else:  # L, P (labels: indices), 1, I, I;16*, F
                arr = np.asarray(im)
            arr = np.asarray(arr, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SynthbenchError(f"cannot read image ({exc})", path) from exc
    if arr.ndim != 2:
        raise SynthbenchError(f"expected a 2-D gray image, got shape {arr.shape} (mode {mode})", path)
    return arr[None]


def _list_images(folder: Path) -> list[Path]:
    """Supported image files of ``folder``; any other file type is an error counting them."""
    files, other = [], Counter()
    for p in folder.iterdir():
        if not p.is_file() or p.name.startswith("."):
            continue
        suffix = _suffix(p)
        if suffix in IMAGE_SUFFIXES:
            files.append(p)
        elif suffix not in IGNORED_SUFFIXES:
            other[suffix or "(no extension)"] += 1
    if other:
        found = ", ".join(f"{n} {s} file{'s' if n > 1 else ''}" for s, n in sorted(other.items()))
        hint = " (DICOM: one folder per patient, see format = 'dicom')" if ".dcm" in other or "(no extension)" in other else ""
        raise SynthbenchError(
            f"unsupported image type: {found}{' besides ' + str(len(files)) + ' supported' if files else ''} "
            f"(supported: {', '.join(IMAGE_SUFFIXES)}){hint}", folder)
    if not files:
        raise SynthbenchError(f"no image files (supported: {', '.join(IMAGE_SUFFIXES)})", folder)
    return sorted(files, key=lambda p: _natural(p.name))


@dataclass
class FolderSource:
    """A folder of image and mask files (or of DICOM series) as a pipeline source."""

    root: Path
    config: FolderConfig

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.spec = self.config.spec
        folder = self.root / self.config.images
        if not folder.is_dir():
            raise SynthbenchError("missing image folder", folder)
        fmt = self.config.format
        if fmt is None and dicom.looks_like_dicom(folder):
            fmt = "dicom"
        self.format = fmt
        self._mask_seen = [{"max": 0.0, "set": False} for _ in self.config.masks]
        if fmt == "dicom":
            if self.config.patients.get("mode", "per_file") != "per_file":
                raise SynthbenchError("DICOM sources have one patient per folder: use patients.mode = 'per_file'", self.config.origin)
            patients = dicom.find_patients(folder)
            if self.config.limit > 0:
                patients = patients[: self.config.limit]
            self.dicom_patients = patients
            self.files = []
            self.groups = [(p.name, []) for p in patients]
            return
        files = _list_images(folder)
        if self.config.limit > 0:
            files = files[: self.config.limit]
        self.files = files
        self.format = "nifti" if all(is_nifti(f) for f in files) else "image"
        self.groups = self._group(files)

    def _group(self, files: list[Path]) -> list[tuple[str, list[Path]]]:
        mode = self.config.patients.get("mode", "per_file")
        n = len(files)
        if mode == "per_file":
            return [(_stem(f), [f]) for f in files]
        if mode in ("blocks", "block_size"):
            if mode == "blocks":
                count = int(self.config.patients.get("count", 1))
                count = max(1, min(count, n))
                bounds = np.linspace(0, n, count + 1).round().astype(int)
            else:
                size = max(1, int(self.config.patients.get("size", 1)))
                bounds = np.r_[np.arange(0, n, size), n]
            width = len(str(len(bounds) - 1))
            return [(f"block-{i:0{width}d}", files[a:b]) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=False)) if b > a]
        if mode == "starts":
            return _runs_from_starts(files, self.config.patients["starts"])
        pattern = re.compile(str(self.config.patients.get("pattern", "(.*)")))
        groups: dict[str, list[Path]] = {}
        for f in files:
            m = pattern.search(f.name)
            if not m:
                raise SynthbenchError(f"file name does not match patients.pattern {pattern.pattern!r}", f)
            groups.setdefault(m.group(1) if m.groups() else m.group(0), []).append(f)
        return list(groups.items())

    def describe(self) -> dict[str, Any]:
        files = len(self.files) if self.format != "dicom" else len(self.dicom_patients)
        return {"kind": "folder", "path": str(self.root), "config": self.config.origin,
                "layout": self.config.raw, "files": files, "format": self.format}

    def patient_count(self) -> int:
        return len(self.groups)

    def _partner(self, folder: str, stem: str, name: str, of: str = "image") -> Path:
        d = self.root / folder
        exact = d / name
        if exact.is_file():
            return exact
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if _stem(p) == stem and p.name.lower().endswith(IMAGE_SUFFIXES):
                    return p
        raise SynthbenchError(f"missing file: no mask for {of} {name if of == 'image' else stem}", d / name)

    def _read_partner(self, folder: str, image: Path | str, grid: Any, what: str) -> tuple[np.ndarray, Path]:
        """A label/mask file of an image file (by stem) or of a DICOM patient (``image`` its name)."""
        if isinstance(image, Path):
            path = self._partner(folder, _stem(image), image.name)
        else:
            path = self._partner(folder, image, f"{image}.nii.gz", of="patient")
        if grid is not None:
            if not is_nifti(path):
                raise SynthbenchError("a volume's mask must be a NIfTI file in the volume's voxel grid", path)
            img = load_nifti(path)
            if not same_grid(img, grid):
                raise SynthbenchError(
                    f"mask voxel grid (shape {tuple(img.shape[:3])}, origin {np.round(img.affine[:3, 3], 2).tolist()}) differs "
                    f"from its volume's (shape {tuple(grid.shape[:3])}, origin {np.round(grid.affine[:3, 3], 2).tolist()})", path)
            return view_of(img, path), path
        return _read(path, what), path

    def _label(self, image: Path | str, shape: tuple[int, ...], grid: Any = None) -> np.ndarray:
        spec = self.spec
        name = image.name if isinstance(image, Path) else image
        if self.config.labels is not None:
            raw, lp = self._read_partner(self.config.labels, image, grid, "label")
            if raw.shape != shape:
                raise SynthbenchError(f"label shape {raw.shape[1:]} x{raw.shape[0]} differs from image {name} {shape[1:]} x{shape[0]}", lp)
            values = np.rint(raw).astype(np.int64)
            mapping = self.config.label_values or {i: i for i in range(spec.num_classes)}
            bad = ~np.isin(values, list(mapping))
            if bad.any():
                raise SynthbenchError(
                    f"label value {int(values[bad][0])} outside the declared classes (mapped values: {sorted(mapping)})", lp)
            lut = np.zeros(max(mapping) + 1, np.uint8)
            for k, v in mapping.items():
                lut[k] = v
            return lut[values]
        label = np.zeros(shape, np.uint8)
        names = spec.class_names
        for m, seen in zip(self.config.masks, self._mask_seen, strict=True):
            raw, mp = self._read_partner(m["folder"], image, grid, "mask")
            if raw.shape != shape:
                raise SynthbenchError(f"mask shape {raw.shape[1:]} differs from image {name} shape {shape[1:]}", mp)
            on = raw > float(m.get("threshold", 0))
            seen["max"] = max(seen["max"], float(raw.max()) if raw.size else 0.0)
            seen["set"] = seen["set"] or bool(on.any())
            if m.get("within"):
                on &= np.isin(label, [names.index(w) for w in m["within"]])
            label[on] = names.index(m["class"])
        return label

    def _check_masks(self) -> None:
        """A mask folder whose pixels never exceed its threshold (0/1 masks, threshold 127) is an error."""
        for m, seen in zip(self.config.masks, self._mask_seen, strict=True):
            threshold = float(m.get("threshold", 0))
            if not seen["set"] and seen["max"] > 0:
                raise SynthbenchError(
                    f"masks in {m['folder']}/ never exceed their threshold {threshold:g} (largest value {seen['max']:g}), "
                    f"so class {m['class']!r} would be empty: lower the threshold (0 = any non-zero pixel)",
                    self.config.origin if self.config.origin != "built-in" else self.root / m["folder"])

    def iter_patients(self) -> Iterator[PatientSlices]:
        if self.format == "dicom":
            yield from self._iter_dicom()
        else:
            for pid, files in self.groups:
                yield from self._iter_files(pid, files)
        self._check_masks()

    def _iter_files(self, pid: str, files: list[Path]) -> Iterator[PatientSlices]:
        """A patient's files in pieces of equal slice size (resized one piece at a time, then grouped)."""
        piece: list[tuple[np.ndarray, np.ndarray, list[str], VolumeGeometry | None]] = []
        for f in files:
            grid = load_nifti(f) if is_nifti(f) else None
            img = view_of(grid, f) if grid is not None else _read(f, "image")
            lab = self._label(f, img.shape, grid)
            rel = str(f.relative_to(self.root))
            names = [rel] if grid is None else [f"{rel}#z{k:03d}" for k in range(len(img))]
            geometry = VolumeGeometry.of(rel, grid) if grid is not None else None
            if piece and piece[-1][0].shape[1:] != img.shape[1:]:
                yield _piece(pid, piece)
                piece = []
            piece.append((img, lab, names, geometry))
        if piece:
            yield _piece(pid, piece)

    def _iter_dicom(self) -> Iterator[PatientSlices]:
        for patient in self.dicom_patients:
            grid, info = dicom.read_series(patient)
            img = view_of(grid, info["first_file"])
            lab = self._label(patient.name, img.shape, grid)
            names = [f"{patient.name}#z{k:03d}" for k in range(len(img))]
            yield PatientSlices(patient.name, img, lab, names, [VolumeGeometry.of(patient.name, grid)])


def _runs_from_starts(files: list[Path], starts: list[int]) -> list[tuple[str, list[Path]]]:
    """Files grouped into patients by the file numbers where each patient begins (sorted ``starts``)."""
    runs: dict[str, list[Path]] = {}
    for f in files:
        found = re.search(r"\d+", f.name)
        if found is None:
            raise SynthbenchError("patients.mode 'starts' needs a number in every file name", f)
        first = bisect.bisect_right(starts, int(found.group())) - 1
        runs.setdefault(f"from-{starts[first]}" if first >= 0 else "before-first-start", []).append(f)
    return list(runs.items())


def _piece(pid: str, piece: list[tuple[np.ndarray, np.ndarray, list[str], VolumeGeometry | None]]) -> PatientSlices:
    volumes, first = [], 0
    for img, _, _, geometry in piece:
        if geometry is not None:
            volumes.append(VolumeGeometry(geometry.name, geometry.affine, geometry.shape, first))
        first += len(img)
    return PatientSlices(pid, np.concatenate([p[0] for p in piece]), np.concatenate([p[1] for p in piece]),
                         [n for p in piece for n in p[2]], volumes)
