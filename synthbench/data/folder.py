"""Generic folder loader: image files and mask files (PNG or NIfTI) described by a small config.

Config (JSON or TOML; a file ``synthbench-data.json`` / ``synthbench-data.toml`` in the source
folder is found automatically, or pass ``--config``)::

    name = "my-data"
    intensity = "scaled"            # "hu" (Hounsfield units, HU-windowed) or "scaled" (value_range -> [-1, 1])
    value_range = [0, 255]          # for "scaled"
    hu_window = [-600, 1500]        # for "hu" (paper's window)
    images = "images"               # folder of image files: 2-D PNG/TIFF slices or 3-D NIfTI volumes
    limit = 0                       # optional: use only the first N image files (natural order)
    classes = [["background", "background"], ["lung", "lung"], ["infection", "lesion"]]

    # either one label-map file per image (same file name), its values mapped to class ids:
    labels = "labels"
    label_values = {"0" = 0, "1" = 1, "2" = 2}   # default: value = class id
    # or binary masks painted in order (pixel > threshold -> class), optionally only inside classes:
    [[masks]]
    folder = "lung_masks"; class = "lung"; threshold = 127
    [[masks]]
    folder = "infection_masks"; class = "infection"; threshold = 127; within = ["lung"]

    [patients]                      # how slices are grouped into patients (the split unit)
    mode = "blocks"; count = 20     # contiguous blocks of file numbers, equal sizes
    # mode = "block_size"; size = 80 | mode = "regex"; pattern = "^(\\d+)_" | mode = "per_file" (NIfTI)

Images and masks are matched by file stem. NIfTI volumes are read in the radiological view (see
:func:`synthbench.data.medseg.read_nifti_slices`). The built-in layout ``covid19-ct-lung-infection-256``
(``images/``, ``lung_masks/``, ``infection_masks/``, 8-bit PNG, not HU) is detected automatically:
0 background, 1 lung, 2 infection inside the lung mask; 20 patients in contiguous blocks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthbench.data.medseg import is_nifti, nifti_stem, read_nifti_slices
from synthbench.data.phantom import PatientSlices
from synthbench.data.spec import DatasetSpec, make_classes
from synthbench.errors import SynthbenchError

CONFIG_NAMES = ("synthbench-data.json", "synthbench-data.toml")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz")

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
    "patients": {"mode": "blocks", "count": 20},
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


def _natural(name: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)


def parse_config(d: dict[str, Any], origin: str = "built-in") -> FolderConfig:
    """Validate a config dictionary; errors name ``origin`` (the config file)."""
    try:
        classes = make_classes([(str(n), r) for n, r in d["classes"]])
        spec = DatasetSpec(
            name=str(d.get("name", "folder")),
            classes=classes,
            intensity=d.get("intensity", "hu"),
            hu_window=tuple(float(v) for v in d.get("hu_window", (-600.0, 1500.0))),
            value_range=tuple(float(v) for v in d.get("value_range", (0.0, 255.0))),
            extra={"loader": "folder"},
        )
        names = spec.class_names
        masks = [dict(m) for m in d.get("masks", [])]
        for m in masks:
            for key in ("folder", "class"):
                if key not in m:
                    raise KeyError(f"masks entry needs {key!r}")
            if m["class"] not in names:
                raise ValueError(f"mask class {m['class']!r} is not a declared class ({', '.join(names)})")
            for w in m.get("within", []):
                if w not in names:
                    raise ValueError(f"'within' class {w!r} is not a declared class")
        labels = d.get("labels")
        if (labels is None) == (not masks):
            raise ValueError("give either 'labels' (a label-map folder) or 'masks' (binary mask folders)")
        label_values = {int(k): int(v) for k, v in d["label_values"].items()} if "label_values" in d else None
        if label_values and max(label_values.values()) >= spec.num_classes:
            raise ValueError("label_values maps to a class id outside the declared classes")
        patients = dict(d.get("patients", {"mode": "per_file"}))
        if patients.get("mode") not in ("blocks", "block_size", "regex", "per_file"):
            raise ValueError(f"patients.mode must be blocks, block_size, regex or per_file, got {patients.get('mode')!r}")
        return FolderConfig(spec, str(d["images"]), labels, label_values, masks, patients, int(d.get("limit", 0) or 0), origin, dict(d))
    except SynthbenchError as exc:
        raise SynthbenchError(f"invalid data config: {exc}", None if origin == "built-in" else origin) from exc
    except (KeyError, TypeError, ValueError) as exc:
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


def _read(path: Path) -> np.ndarray:
    """``float32 [Z, H, W]``: a 2-D image file gives Z = 1; a NIfTI volume gives its axial slices."""
    if not path.is_file():
        raise SynthbenchError("missing file", path)
    if is_nifti(path):
        return read_nifti_slices(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "I", "I;16", "F", "1", "P"):
                im = im.convert("L")
            arr = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SynthbenchError(f"cannot read image ({exc})", path) from exc
    if arr.ndim != 2:
        raise SynthbenchError(f"expected a 2-D gray image, got shape {arr.shape}", path)
    return arr[None]


@dataclass
class FolderSource:
    """A folder of image and mask files as a pipeline source."""

    root: Path
    config: FolderConfig

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.spec = self.config.spec
        folder = self.root / self.config.images
        if not folder.is_dir():
            raise SynthbenchError("missing image folder", folder)
        files = sorted((p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)),
                       key=lambda p: _natural(p.name))
        if self.config.limit > 0:
            files = files[: self.config.limit]
        if not files:
            raise SynthbenchError("no image files (PNG, TIFF or NIfTI)", folder)
        self.files = files
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
        pattern = re.compile(str(self.config.patients.get("pattern", "(.*)")))
        groups: dict[str, list[Path]] = {}
        for f in files:
            m = pattern.search(f.name)
            if not m:
                raise SynthbenchError(f"file name does not match patients.pattern {pattern.pattern!r}", f)
            groups.setdefault(m.group(1) if m.groups() else m.group(0), []).append(f)
        return list(groups.items())

    def describe(self) -> dict[str, Any]:
        nifti = all(f.name.endswith((".nii", ".nii.gz")) for f in self.files)
        return {"kind": "folder", "path": str(self.root), "config": self.config.origin,
                "layout": self.config.raw, "files": len(self.files), "format": "nifti" if nifti else "image"}

    def patient_count(self) -> int:
        return len(self.groups)

    def _partner(self, folder: str, image: Path) -> Path:
        d = self.root / folder
        stem = _stem(image)
        exact = d / image.name
        if exact.is_file():
            return exact
        if d.is_dir():
            for p in d.iterdir():
                if _stem(p) == stem and p.name.lower().endswith(IMAGE_SUFFIXES):
                    return p
        raise SynthbenchError(f"missing file: no mask for image {image.name}", d / image.name)

    def _label(self, image_path: Path, shape: tuple[int, ...]) -> np.ndarray:
        spec = self.spec
        if self.config.labels is not None:
            lp = self._partner(self.config.labels, image_path)
            raw = _read(lp)
            if raw.shape != shape:
                raise SynthbenchError(f"label shape {raw.shape[1:]} x{raw.shape[0]} differs from image {image_path.name} {shape[1:]} x{shape[0]}", lp)
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
        for m in self.config.masks:
            mp = self._partner(m["folder"], image_path)
            raw = _read(mp)
            if raw.shape != shape:
                raise SynthbenchError(f"mask shape {raw.shape[1:]} differs from image {image_path.name} shape {shape[1:]}", mp)
            on = raw > float(m.get("threshold", 0))
            if m.get("within"):
                on &= np.isin(label, [names.index(w) for w in m["within"]])
            label[on] = names.index(m["class"])
        return label

    def iter_patients(self) -> Iterator[PatientSlices]:
        for pid, files in self.groups:
            images, labels, names = [], [], []
            for f in files:
                img = _read(f)
                lab = self._label(f, img.shape)
                images.append(img)
                labels.append(lab)
                rel = str(f.relative_to(self.root))
                names += [rel] if len(img) == 1 else [f"{rel}#z{k:03d}" for k in range(len(img))]
            shapes = {a.shape[1:] for a in images}
            if len(shapes) > 1:
                raise SynthbenchError(f"patient {pid}: slices have different sizes {sorted(shapes)}", files[0])
            yield PatientSlices(pid, np.concatenate(images), np.concatenate(labels), names)
