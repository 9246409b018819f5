"""Loader for the MedSeg / Radiopaedia NIfTI layout the paper used (Sec. "Data and preprocessing").

Layout (MedSeg "COVID-19 CT segmentation dataset", Radiopaedia part)::

    SOURCE/rp_im/<id>.nii[.gz]        CT volume, 630 x 630 x Z, Hounsfield units
    SOURCE/rp_lung_msk/<id>.nii[.gz]  lung mask (any value > 0 is lung)
    SOURCE/rp_msk/<id>.nii[.gz]       infection mask: 1 ground-glass, 2 consolidation, 3 pleural effusion

One volume is one patient. Label rule (configurable through ``effusion``): background 0, lung 1
where the lung mask is set, ground_glass 2 and consolidation 3 where the infection mask says so
(they take precedence over lung). Pleural effusion (3) is fluid in the pleural space, not lung
parenchyma, so by default it becomes **background** (``effusion="background"``); ``"lung"`` folds
it into the lung class instead, ``"class"`` keeps it as a fourth, non-lung class 'pleural_effusion'.

Orientation: volumes are reoriented to RAS+ (``nibabel.as_closest_canonical``) and each axial
slice is returned in the radiological view: patient's right on the image left, anterior up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthbench.data.phantom import PatientSlices
from synthbench.data.spec import PAPER_CLASSES, DatasetSpec, make_classes
from synthbench.errors import SynthbenchError

IMAGE_DIR, LUNG_DIR, INFECTION_DIR = "rp_im", "rp_lung_msk", "rp_msk"
EFFUSION_RULES = ("background", "lung", "class")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_nifti_slices(path: str | Path) -> np.ndarray:
    """Read a 3-D NIfTI volume as ``float32 [Z, H, W]`` axial slices in the radiological view.

    Reoriented to RAS+ first, so a volume stored with flipped axes (and the matching affine) gives
    the same slices: row 0 is anterior, column 0 is the patient's right, ``z`` runs inferior ->
    superior. A corrupt or non-3-D file raises :class:`SynthbenchError` naming it.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise SynthbenchError("missing file", path)
    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
        raise SynthbenchError(f"cannot read NIfTI volume ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'corrupt'})", path) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SynthbenchError(f"expected a 3-D volume, got shape {data.shape}", path)
    # RAS: axis 0 increases towards the patient's right, axis 1 towards anterior. Radiological view:
    # image column 0 = patient's right (largest x), image row 0 = anterior (largest y).
    return np.ascontiguousarray(np.transpose(data[::-1, ::-1, :], (2, 1, 0)))


def detect(path: Path) -> bool:
    """True when ``path`` holds the MedSeg/Radiopaedia layout."""
    return (path / IMAGE_DIR).is_dir() and (path / INFECTION_DIR).is_dir() and any(
        is_nifti(p) for p in (path / IMAGE_DIR).iterdir()
    )


def medseg_spec(effusion: str = "background") -> DatasetSpec:
    if effusion not in EFFUSION_RULES:
        raise SynthbenchError(f"effusion rule must be one of {', '.join(EFFUSION_RULES)}, got {effusion!r}")
    if effusion == "class":
        classes = make_classes([("background", "background"), ("lung", "lung"), ("ground_glass", "lesion"),
                                ("consolidation", "lesion"), ("pleural_effusion", "other")])
    else:
        classes = PAPER_CLASSES
    return DatasetSpec(name="medseg-radiopaedia", classes=classes, intensity="hu", extra={"effusion": effusion})


def medseg_label(lung: np.ndarray, infection: np.ndarray, effusion: str, where: str) -> np.ndarray:
    """Lung and infection masks -> class ids under the documented rule (see module docstring)."""
    inf = np.rint(infection).astype(np.int64)
    bad = ~np.isin(inf, (0, 1, 2, 3))
    if bad.any():
        raise SynthbenchError(f"infection mask holds value {int(inf[bad][0])}; expected 0, 1 (ground-glass), 2 (consolidation), 3 (effusion)", where)
    label = np.zeros(inf.shape, np.uint8)
    label[lung > 0] = 1
    label[inf == 1] = 2
    label[inf == 2] = 3
    eff = inf == 3
    label[eff] = {"background": 0, "lung": 1, "class": 4}[effusion]
    return label


@dataclass
class MedSegSource:
    """The MedSeg/Radiopaedia NIfTI folder as a pipeline source (one volume = one patient)."""

    root: Path
    effusion: str = "background"
    spec: DatasetSpec = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.spec = medseg_spec(self.effusion)
        images = sorted((p for p in (self.root / IMAGE_DIR).iterdir() if is_nifti(p)), key=_natural) if (self.root / IMAGE_DIR).is_dir() else []
        if not images:
            raise SynthbenchError(f"no NIfTI volumes in {IMAGE_DIR}/", self.root)
        self.volumes = [(nifti_stem(p), p, self._partner(LUNG_DIR, p), self._partner(INFECTION_DIR, p)) for p in images]

    def _partner(self, folder: str, image: Path) -> Path:
        stem = nifti_stem(image)
        for suffix in NIFTI_SUFFIXES:
            cand = self.root / folder / f"{stem}{suffix}"
            if cand.is_file():
                return cand
        raise SynthbenchError(f"missing file: no {folder}/{stem}.nii[.gz] for volume {image.name}", self.root / folder)

    def describe(self) -> dict[str, Any]:
        return {"kind": "medseg", "format": "nifti", "path": str(self.root), "volumes": [v[0] for v in self.volumes],
                "effusion": self.effusion}

    def patient_count(self) -> int:
        return len(self.volumes)

    def iter_patients(self) -> Iterator[PatientSlices]:
        for stem, im, lung, inf in self.volumes:
            image = read_nifti_slices(im)
            lung_v = read_nifti_slices(lung)
            inf_v = read_nifti_slices(inf)
            for other, p in ((lung_v, lung), (inf_v, inf)):
                if other.shape != image.shape:
                    raise SynthbenchError(f"mask shape {other.shape[::-1]} differs from image {im.name} shape {image.shape[::-1]}", p)
            label = medseg_label(lung_v, inf_v, self.effusion, str(inf))
            rel = im.relative_to(self.root)
            yield PatientSlices(stem, image, label, [f"{rel}#z{k:03d}" for k in range(len(image))])


def _natural(p: Path) -> tuple:
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))
