"""3-D volumes (NIfTI files, DICOM series) <-> axial slices in the radiological view, both ways.

Reading: a volume is reoriented to RAS+ (``nibabel.as_closest_canonical``) and each axial slice
is returned in the radiological view: row 0 anterior, column 0 the patient's right, ``z``
running inferior -> superior. A volume stored with flipped axes (and the matching affine) gives
the same slices.

Writing back (``synthbench synthesize``): :func:`view_to_image` undoes the view, the in-plane
resize of ``data prepare`` (:class:`synthbench.data.preprocess.ResizeGeometry`) and the
reorientation, so a synthesized volume has the source file's axis order, orientation and
affine (voxel size scaled by the resize) and lies on the source anatomy in world coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthbench.errors import SynthbenchError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a stack of view slices came from: the source volume's name, affine and 3-D shape
    (in its stored axis order), and the first slice's index among all slices of the source."""

    name: str
    affine: tuple[tuple[float, ...], ...]
    shape: tuple[int, int, int]
    first: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "affine": [list(r) for r in self.affine], "shape": list(self.shape),
                "first": self.first}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VolumeGeometry:
        return cls(str(d["name"]), tuple(tuple(float(v) for v in r) for r in d["affine"]),
                   tuple(int(v) for v in d["shape"]), int(d.get("first", 0)))

    @classmethod
    def of(cls, name: str, img: Any) -> VolumeGeometry:
        affine = np.asarray(img.affine, dtype=np.float64)
        return cls(name, tuple(tuple(float(v) for v in r) for r in affine), tuple(int(v) for v in img.shape[:3]))


def view_of(img: Any, where: str | Path) -> np.ndarray:
    """A nibabel image -> ``float32 [Z, H, W]`` axial slices in the radiological view."""
    import nibabel as nib

    try:
        data = np.asarray(nib.as_closest_canonical(img).get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
        raise SynthbenchError(f"cannot read NIfTI volume ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'corrupt'})", where) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SynthbenchError(f"expected a 3-D volume, got shape {data.shape}", where)
    # RAS: axis 0 increases towards the patient's right, axis 1 towards anterior. Radiological view:
    # image column 0 = patient's right (largest x), image row 0 = anterior (largest y).
    return np.ascontiguousarray(np.transpose(data[::-1, ::-1, :], (2, 1, 0)))


def load_nifti(path: str | Path) -> Any:
    """``nibabel.load`` with a one-line error naming the file."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise SynthbenchError("missing file", path)
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise SynthbenchError(f"cannot read NIfTI volume ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'corrupt'})", path) from exc
    if len(img.shape) not in (3, 4) or (len(img.shape) == 4 and img.shape[3] != 1):
        raise SynthbenchError(f"expected a 3-D volume, got shape {img.shape}", path)
    return img


def read_nifti_slices(path: str | Path) -> np.ndarray:
    """Read a 3-D NIfTI volume as ``float32 [Z, H, W]`` axial slices in the radiological view."""
    return view_of(load_nifti(path), path)


def same_grid(a: Any, b: Any) -> bool:
    """True when two images share shape and voxel grid (affines equal to 1% of a voxel)."""
    if tuple(a.shape[:3]) != tuple(b.shape[:3]):
        return False
    tol = 0.01 * float(np.min(np.linalg.norm(np.asarray(a.affine)[:3, :3], axis=0)))
    return bool(np.allclose(np.asarray(a.affine), np.asarray(b.affine), atol=tol, rtol=0))


def view_to_image(view: np.ndarray, geometry: VolumeGeometry, resize: dict[str, Any] | None,
                  description: str = "") -> Any:
    """``[Z, H', W']`` view slices (after the prepare resize) -> a NIfTI image in the source's
    axis order and orientation, its affine the source's with the resize applied in-plane.

    ``resize`` is :meth:`ResizeGeometry.to_dict` (``None``: no resize). The index map: canonical
    voxel ``(x', y')`` of the output samples canonical voxel ``x = s_c x' + t_x`` (and likewise
    ``y``) of the source, the inverse of the view flip and of the pixel-centre resize.
    """
    import nibabel as nib
    from nibabel import orientations as ornt

    affine0 = np.asarray(geometry.affine, dtype=np.float64)
    stored = ornt.io_orientation(affine0)
    canonical_affine = affine0 @ ornt.inv_ornt_aff(stored, geometry.shape)
    canonical_shape = [0, 0, 0]
    for axis, (target, _) in enumerate(stored):
        canonical_shape[int(target)] = geometry.shape[axis]
    x_n, y_n = canonical_shape[0], canonical_shape[1]
    z_n, h, w = view.shape
    if z_n != canonical_shape[2]:
        raise SynthbenchError(f"{z_n} slices for volume {geometry.name} of {canonical_shape[2]} slices")
    s_r, s_c = (1.0, 1.0)
    o_r, o_c = (0, 0)
    if resize is not None:
        s_r, s_c = (float(v) for v in resize["scale"])
        o_r, o_c = (int(v) for v in resize["offset"])
    t_x = (x_n - 1) - s_c * (w - 1 - o_c) - (s_c - 1) / 2
    t_y = (y_n - 1) - s_r * (h - 1 - o_r) - (s_r - 1) / 2
    index_map = np.array([[s_c, 0, 0, t_x], [0, s_r, 0, t_y], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    data = np.ascontiguousarray(np.transpose(view, (2, 1, 0))[::-1, ::-1, :])
    img = nib.Nifti1Image(data, canonical_affine @ index_map)
    img = img.as_reoriented(ornt.ornt_transform(ornt.axcodes2ornt(("R", "A", "S")), stored))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    if description:
        img.header["descrip"] = description.encode("ascii", "replace")[:79]
    return img
