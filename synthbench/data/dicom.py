"""DICOM CT series as a source: what hospitals export (read with pydicom).

Layout (the ``images`` folder of a folder config with ``format = "dicom"``; see
:mod:`synthbench.data.folder`)::

    IMAGES/<patient>/...            one folder per patient holding one axial CT series (any
                                    file names, any depth; non-DICOM files and localizers skipped)
    IMAGES/DICOMDIR                 or a DICOM media directory: patients by PatientID

A series is sorted by slice position along the slice normal (``ImagePositionPatient`` projected
on ``ImageOrientationPatient``'s row x column direction), not by file name or InstanceNumber;
pixels become Hounsfield units through ``RescaleSlope`` and ``RescaleIntercept`` of each slice.
The volume gets the affine these tags define (DICOM's LPS patient axes turned into NIfTI's RAS),
so it is then handled exactly like a NIfTI volume (:mod:`synthbench.data.volume`): radiological
view, masks given as NIfTI files in the same voxel grid, NIfTI output on the same anatomy.

Refused with a one-line error naming the file: a folder with several CT series (keep one per
patient folder), a non-CT modality, colour pixels, mixed orientations or sizes, two slices at
one position, uneven slice spacing, pixel data that cannot be decoded (compressed transfer
syntaxes need pydicom's optional decoders, e.g. ``pip install pylibjpeg pylibjpeg-libjpeg``).
Masks as DICOM-SEG or RTSTRUCT are not read: convert them to NIfTI first (e.g. with
dcmqi's ``segimage2itkimage`` or ``rt-utils``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthbench.errors import SynthbenchError

DICOMDIR = "DICOMDIR"
#: Relative tolerance of the slice spacing (uneven spacing cannot be one affine).
SPACING_TOLERANCE = 0.01


@dataclass
class DicomPatient:
    """One patient's candidate files: a folder's files, or a DICOMDIR's records."""

    name: str
    files: list[Path]
    where: Path


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:  # a declared dependency; only a broken install lacks it
        raise SynthbenchError("reading DICOM needs pydicom (pip install pydicom)") from exc
    return pydicom


def _is_dicom_file(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def looks_like_dicom(folder: Path) -> bool:
    """A DICOMDIR, or patient subfolders whose first file is a DICOM file (a cheap check)."""
    if (folder / DICOMDIR).is_file():
        return True
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(sub.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                return _is_dicom_file(f)
    return False


def find_patients(folder: Path) -> list[DicomPatient]:
    """Patients of a DICOM folder (module docstring); reads no pixel data."""
    if (folder / DICOMDIR).is_file():
        return _from_dicomdir(folder / DICOMDIR)
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        raise SynthbenchError("no patient folders: a DICOM source holds one folder of DICOM files per patient, or a DICOMDIR", folder)
    return [DicomPatient(d.name, sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith(".")), d) for d in subs]


def _from_dicomdir(path: Path) -> list[DicomPatient]:
    pydicom = _pydicom()
    from pydicom.fileset import FileSet

    try:
        fs = FileSet(pydicom.dcmread(str(path)))
    except Exception as exc:
        raise SynthbenchError(f"cannot read DICOMDIR ({type(exc).__name__}: {exc})", path) from exc
    patients: dict[str, list[Path]] = {}
    for inst in fs:
        pid = str(getattr(inst, "PatientID", "") or "unknown")
        patients.setdefault(pid, []).append(Path(inst.path))
    if not patients:
        raise SynthbenchError("DICOMDIR lists no images", path)
    safe = {pid: "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in pid) for pid in patients}
    return [DicomPatient(safe[pid], sorted(files), path) for pid, files in sorted(patients.items())]


def _series_headers(patient: DicomPatient) -> list[tuple[Path, Any]]:
    """Headers of the one axial image series of a patient (module docstring)."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    series: dict[str, list[tuple[Path, Any]]] = {}
    for f in patient.files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue  # not a DICOM file (thumbnails, notes) or unreadable header
        if "ImagePositionPatient" not in ds or "Rows" not in ds:
            continue  # no image geometry: a structured report, a DICOMDIR, a presentation state
        if "LOCALIZER" in [str(v).upper() for v in (ds.get("ImageType") or [])]:
            continue
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    if not series:
        raise SynthbenchError("no DICOM image series with slice positions (ImagePositionPatient) found", patient.where)
    if len(series) > 1:
        described = "; ".join(
            f"series {items[0][1].get('SeriesNumber', '?')} '{items[0][1].get('SeriesDescription', '')}' "
            f"({len(items)} files, e.g. {items[0][0].name})" for items in series.values())
        raise SynthbenchError(f"{len(series)} image series for one patient ({described}); keep one series per patient folder", patient.where)
    return next(iter(series.values()))


def read_series(patient: DicomPatient) -> tuple[Any, dict[str, Any]]:
    """One patient's series -> a NIfTI image in Hounsfield units (RAS affine) and a description."""
    import nibabel as nib

    headers = _series_headers(patient)
    first_file, first = headers[0]
    modality = str(first.get("Modality", ""))
    if modality and modality != "CT":
        raise SynthbenchError(f"modality {modality}: synthbench reads CT series (Hounsfield units)", first_file)
    iop = np.asarray([float(v) for v in first.ImageOrientationPatient], np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    shape = (int(first.Rows), int(first.Columns))
    spacing = np.asarray([float(v) for v in first.get("PixelSpacing", (1.0, 1.0))], np.float64)
    for f, ds in headers:
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise SynthbenchError("colour pixels (SamplesPerPixel > 1): expected a gray CT slice", f)
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], iop, atol=1e-4):
            raise SynthbenchError(f"slice orientation differs from {first_file.name}: mixed orientations in one series", f)
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise SynthbenchError(f"slice is {ds.Columns}x{ds.Rows} but {first_file.name} is {shape[1]}x{shape[0]}", f)
        if not np.allclose([float(v) for v in ds.get("PixelSpacing", (1.0, 1.0))], spacing, rtol=1e-4):
            raise SynthbenchError(f"pixel spacing differs from {first_file.name}", f)
    positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, ds in headers], np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    headers = [headers[i] for i in order]
    along, positions = along[order], positions[order]
    if len(headers) > 1:
        steps = np.diff(along)
        dup = int(np.argmin(steps))
        if steps[dup] < 1e-3:
            raise SynthbenchError(f"two slices at one position (also {headers[dup][0].name})", headers[dup + 1][0])
        bad = np.nonzero(np.abs(steps - np.median(steps)) > SPACING_TOLERANCE * np.median(steps))[0]
        if bad.size:
            k = int(bad[0])
            raise SynthbenchError(
                f"uneven slice spacing: {steps[k]:.3g} mm before this slice, {np.median(steps):.3g} mm elsewhere "
                "(missing slices?)", headers[k + 1][0])
        step = (positions[-1] - positions[0]) / (len(headers) - 1)
    else:
        step = normal * float(first.get("SliceThickness", 1.0) or 1.0)
    volume = np.empty((shape[1], shape[0], len(headers)), np.float32)
    pydicom = _pydicom()
    for k, (f, _) in enumerate(headers):
        ds = None
        try:
            ds = pydicom.dcmread(str(f))
            pixels = ds.pixel_array
        except Exception as exc:  # missing decoder, truncated file
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            raise SynthbenchError(f"cannot decode pixel data ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                                  f"{f'; transfer syntax {syntax.name}' if syntax is not None else ''})", f) from exc
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        volume[:, :, k] = (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).T
    # Voxel (i = column, j = row, k = slice) -> LPS position; NIfTI wants RAS (negate x and y).
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    info = {"series": str(first.get("SeriesInstanceUID", "")), "description": str(first.get("SeriesDescription", "")),
            "slices": len(headers), "first_file": str(headers[0][0])}
    return nib.Nifti1Image(volume, affine), info
