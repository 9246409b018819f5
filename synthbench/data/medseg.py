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
slice is returned in the radiological view: patient's right on the image left, anterior up
(:mod:`synthbench.data.volume`). ``data prepare SOURCE --effusion RULE`` chooses the rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthbench.data.phantom import PatientSlices
from synthbench.data.spec import PAPER_CLASSES, DatasetSpec, make_classes
from synthbench.data.volume import (  # noqa: F401 (is_nifti, nifti_stem: re-exported)
    NIFTI_SUFFIXES,
    VolumeGeometry,
    is_nifti,
    load_nifti,
    nifti_stem,
    read_nifti_slices,
    view_of,
)
from synthbench.errors import SynthbenchError

IMAGE_DIR, LUNG_DIR, INFECTION_DIR = "rp_im", "rp_lung_msk", "rp_msk"
EFFUSION_RULES = ("background", "lung", "class")
#: Class id -> value of the infection mask (rp_msk coding), for writing labels back as the source had them.
INFECTION_CODING = {"ground_glass": 1, "consolidation": 2, "pleural_effusion": 3}


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
    coding = [INFECTION_CODING.get(c.name, 0) for c in classes]
    return DatasetSpec(name="medseg-radiopaedia", classes=classes, intensity="hu", region="lung",
                       extra={"effusion": effusion, "label_coding": coding,
                              "label_coding_note": "rp_msk coding: 1 ground-glass, 2 consolidation, 3 effusion; "
                                                   "lung is the separate lung mask"})


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
        return {"kind": "medseg", "format": "nifti", "path": str(self.root), "volume_names": [v[0] for v in self.volumes],
                "effusion": self.effusion}

    def patient_count(self) -> int:
        return len(self.volumes)

    def iter_patients(self) -> Iterator[PatientSlices]:
        for stem, im, lung, inf in self.volumes:
            img = load_nifti(im)
            image = view_of(img, im)
            lung_v = read_nifti_slices(lung)
            inf_v = read_nifti_slices(inf)
            for other, p in ((lung_v, lung), (inf_v, inf)):
                if other.shape != image.shape:
                    raise SynthbenchError(f"mask shape {other.shape[::-1]} differs from image {im.name} shape {image.shape[::-1]}", p)
            label = medseg_label(lung_v, inf_v, self.effusion, str(inf))
            rel = im.relative_to(self.root)
            yield PatientSlices(stem, image, label, [f"{rel}#z{k:03d}" for k in range(len(image))],
                                [VolumeGeometry.of(stem, img)])


def _natural(p: Path) -> tuple:
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))
