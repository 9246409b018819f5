"""Embedded procedural chest-CT phantom: slices in Hounsfield units with label maps.

Stands in for the paper's MedSeg/Radiopaedia volumes (paper Sec. "Data and preprocessing") where
no real data is at hand: N patients x M axial slices, deterministic by seed, any size. Classes are
:data:`synthbench.data.spec.PAPER_CLASSES` (background, lung, ground_glass, consolidation).

Anatomy (radiological view: patient's right on image left, anterior up): body outline with
subcutaneous fat and muscle, ribs, sternum, vertebra with spinal canal, mediastinum with trachea,
aorta and heart, two lungs with a branching vessel tree, ground-glass patches (about -700..-300
HU) and consolidation (about -100..+50 HU) inside the lungs, correlated scanner noise. Geometry is
in normalised coordinates ``[-1, 1]``; one patient's slices come from one 3-D model sampled at
increasing ``z`` so neighbouring slices change smoothly. Everything is vectorised numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from synthbench.data.spec import PAPER_CLASSES, DatasetSpec
from synthbench.data.volume import VolumeGeometry
from synthbench.errors import SynthbenchError

AIR, FAT, MUSCLE, BLOOD, LUNG = -1000.0, -100.0, 45.0, 40.0, -860.0
BG, LUNG_ID, GGO_ID, CONS_ID = 0, 1, 2, 3


def phantom_spec() -> DatasetSpec:
    """The phantom's data-set description: paper classes, Hounsfield units, window [-600, 1500]."""
    return DatasetSpec(name="phantom", classes=PAPER_CLASSES, intensity="hu")


@dataclass
class PatientSlices:
    """Slices of one patient in source units: ``image`` float32 [M,H,W], ``label`` uint8 [M,H,W].

    ``volumes``: the source volumes these slices are (``first`` counted within this object), so
    synthesized slices can be written back into their volume; empty for 2-D sources. A source
    may yield one patient in several consecutive pieces (e.g. slices of different sizes).
    """

    patient: str
    image: np.ndarray
    label: np.ndarray
    names: list[str]
    volumes: list[VolumeGeometry] = field(default_factory=list)


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean unit-std smooth random field: ``cells x cells`` noise upsampled (cubic) to ``size``."""
    low = rng.standard_normal((cells, cells)).astype(np.float32)
    field = ndimage.zoom(low, size / cells, order=3, mode="reflect", grid_mode=True)[:size, :size]
    field -= field.mean()
    return field / (field.std() + 1e-6)


def _ell(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to an ellipse (normalised radius - 1, times the mean semi-axis)."""
    return (np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2) - 1.0) * (0.5 * (a + b))


def _soft(d: np.ndarray, px: float) -> np.ndarray:
    """Partial-volume edge: 1 inside (d < 0), 0 outside, linear over one pixel."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


class _Patient:
    """One patient's 3-D model; :meth:`slice` samples it at ``z`` in [0, 1] (apex -> base)."""

    def __init__(self, seed: int, index: int, size: int):
        rng = np.random.default_rng([seed, index, 7])
        self.rng_seed = (seed, index)
        self.size = size
        self.px = 2.0 / size
        c = (np.arange(size, dtype=np.float32) + 0.5) * self.px - 1.0
        self.x = c[None, :]
        self.y = c[:, None]
        u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
        self.body_a, self.body_b = u(0.82, 0.92), u(0.56, 0.66)
        self.fat = u(0.04, 0.1)
        self.muscle = u(0.035, 0.06)
        self.cav_scale = u(0.95, 1.03)
        self.heart_shift = u(-0.03, 0.05)
        self.z0, self.z1 = u(0.15, 0.3), u(0.7, 0.9)
        self.rib_phase = u(0, 2 * np.pi)
        self.contrast = u(0, 1) < 0.5
        # Smooth fields: boundary wobble, lung texture, lesion edges (two per quantity -> smooth z).
        self.wobble = [_smooth_field(rng, size, 6) for _ in range(2)]
        self.texture = [_smooth_field(rng, size, 40) for _ in range(2)]
        self.lesion_noise = [_smooth_field(rng, size, 12) for _ in range(2)]
        self.haze = [_smooth_field(rng, size, 24) for _ in range(2)]
        self.z_freq = u(1.0, 2.0)
        self._build_vessels(rng)
        self._build_lesions(rng)

    # ------------------------------------------------------------------ model parts
    def _build_vessels(self, rng: np.random.Generator) -> None:
        """Branching vessel tree per lung (2-D projection of a 3-D tree; each segment visible over a z range)."""
        segs = []  # x0, y0, x1, y1, radius, z centre, z half-width
        for side in (-1.0, 1.0):
            stack = [(side * 0.14, float(rng.uniform(-0.08, 0.04)), side * np.pi / 2 + a, 0.13, 0.02, 0) for a in (-0.6, 0.0, 0.7)]
            while stack:
                x0, y0, ang, length, rad, depth = stack.pop()
                ang_j = ang + rng.normal(0, 0.25)
                x1, y1 = x0 + np.sin(ang_j) * length, y0 + np.cos(ang_j) * length
                zc = float(rng.uniform(0.0, 1.0))
                segs.append((x0, y0, x1, y1, rad, zc, float(rng.uniform(0.06, 0.16)) * (1.6 - 0.15 * depth)))
                if depth < 4:
                    spread = rng.uniform(0.3, 0.6)
                    for s in (-1, 1):
                        stack.append((x1, y1, ang_j + s * spread, length * rng.uniform(0.7, 0.85), rad * 0.75, depth + 1))
            # Vessels running along z: dots in cross-section, denser and larger near the hilum.
            n = 120
            dx = side * (0.1 + 0.6 * rng.uniform(0, 1, n) ** 0.8)
            dy = rng.uniform(-0.42, 0.42, n)
            rads = 0.004 + 0.012 * rng.uniform(0, 1, n) * (1 - np.abs(dx))
            for i in range(n):
                segs.append((dx[i], dy[i], dx[i], dy[i], float(rads[i]), float(rng.uniform(0, 1)), float(rng.uniform(0.05, 0.2))))
        seg = np.asarray(segs, dtype=np.float32)
        self.vessel_params = seg
        # Precompute, per segment, the pixels within its largest radius and their distance.
        self.vessel_pix: list[tuple[np.ndarray, np.ndarray]] = []
        size = self.size
        for x0, y0, x1, y1, rad, _, _ in seg:
            r = rad + 2 * self.px
            lo_x, hi_x = min(x0, x1) - r, max(x0, x1) + r
            lo_y, hi_y = min(y0, y1) - r, max(y0, y1) + r
            ix0, ix1 = max(int((lo_x + 1) / self.px), 0), min(int((hi_x + 1) / self.px) + 1, size)
            iy0, iy1 = max(int((lo_y + 1) / self.px), 0), min(int((hi_y + 1) / self.px) + 1, size)
            if ix0 >= ix1 or iy0 >= iy1:
                self.vessel_pix.append((np.zeros(0, np.int64), np.zeros(0, np.float32)))
                continue
            xs, ys = self.x[0, ix0:ix1][None, :], self.y[iy0:iy1, 0][:, None]
            vx, vy = x1 - x0, y1 - y0
            t = np.clip(((xs - x0) * vx + (ys - y0) * vy) / max(vx * vx + vy * vy, 1e-12), 0, 1)
            d = np.hypot(xs - x0 - t * vx, ys - y0 - t * vy)
            keep = d < r
            iy, ix = np.nonzero(keep)
            self.vessel_pix.append(((iy + iy0) * size + (ix + ix0), d[keep].astype(np.float32)))

    def _build_lesions(self, rng: np.random.Generator) -> None:
        """3-D lesion blobs: ground-glass patches, some with a consolidated core; mostly peripheral/posterior."""
        n = int(rng.integers(3, 8))
        side = rng.choice([-1.0, 1.0], n)
        self.lesions = np.stack(
            [
                side * rng.uniform(0.3, 0.62, n),  # x
                rng.uniform(-0.25, 0.35, n),  # y (posterior-weighted)
                rng.uniform(0.0, 1.0, n),  # z centre
                rng.uniform(0.25, 0.6, n),  # z half-extent
                rng.uniform(0.08, 0.2, n),  # radius
                np.where(rng.uniform(0, 1, n) < 0.55, rng.uniform(0.3, 0.6, n), 0.0),  # consolidation core fraction
                rng.uniform(-0.62, -0.35, n) * 1000.0,  # GGO density HU
            ],
            axis=1,
        ).astype(np.float32)

    def _local(self, cx: float, cy: float, r: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        """Index window around ``(cx, cy)`` of half-size ``r`` and its local coordinate grids."""
        r0, r1 = self._window(cy, r + 2 * self.px)
        c0, c1 = self._window(cx, r + 2 * self.px)
        return (slice(r0, r1), slice(c0, c1)), self.x[:, c0:c1], self.y[r0:r1]

    def _window(self, centre: float, radius: float) -> tuple[int, int]:
        """Pixel index range covering ``centre +- radius`` (normalised coordinates), clipped to the image."""
        lo = int(np.floor((centre - radius + 1.0) / self.px))
        hi = int(np.ceil((centre + radius + 1.0) / self.px)) + 1
        return max(lo, 0), min(hi, self.size)

    def _mix(self, pair: list[np.ndarray], z: float) -> np.ndarray:
        a = 2 * np.pi * self.z_freq * z
        return np.cos(a) * pair[0] + np.sin(a) * pair[1]

    def _ellipse(self, cx: float, cy: float, a: float, b: float) -> np.ndarray:
        """Signed-ish distance to an ellipse (normalised radius - 1, scaled by the mean semi-axis)."""
        return (np.sqrt(((self.x - cx) / a) ** 2 + ((self.y - cy) / b) ** 2) - 1.0) * (0.5 * (a + b))

    # ------------------------------------------------------------------ one slice
    def slice(self, z: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x, y, px = self.x, self.y, self.px
        zz = self.z0 + (self.z1 - self.z0) * z  # position along the chest, 0 apex .. 1 base
        wob = self._mix(self.wobble, zz) * 0.012
        grow = 0.9 + 0.12 * np.sin(np.pi * min(zz * 1.15, 1.0))  # chest widest mid-way
        ba, bb = self.body_a * grow, self.body_b * grow
        body_d = self._ellipse(0.0, 0.04, ba, bb) + wob
        # Flatten the back (patient lies on the table).
        body_d = np.maximum(body_d, y - (0.04 + bb * 0.93))
        hu = np.full((self.size, self.size), AIR, np.float32)
        body = _soft(body_d, px)
        fat_in = _soft(body_d + self.fat, px)
        mus_in = _soft(body_d + self.fat + self.muscle * (1 + 0.8 * np.clip(y, 0, 1)), px)
        hu = hu + body * (FAT - AIR)
        hu = hu + fat_in * (MUSCLE - FAT)
        # Inner fat between muscle and ribcage.
        hu = hu + mus_in * (-60.0 - MUSCLE)
        # Thoracic cavity and ribs.
        ca = (ba - self.fat - self.muscle - 0.04) * self.cav_scale
        cb = (bb - self.fat - self.muscle - 0.05) * self.cav_scale
        cav_d = self._ellipse(0.0, 0.02, ca, cb) + wob
        cavity = _soft(cav_d, px)
        hu = hu * (1 - cavity) + cavity * MUSCLE
        # Ribs: oval cross-sections just outside the cavity, drifting smoothly with z.
        n_ribs = 7
        for side in (-1.0, 1.0):
            for k in range(n_ribs):
                th = 0.35 + k * (2.5 / n_ribs) + 0.18 * np.sin(self.rib_phase + 3.0 * zz + k)
                rx = side * np.sin(th) * (ca + 0.035)
                ry = -np.cos(th) * (cb + 0.035) + 0.02
                if ry < -(cb * 0.75) and abs(rx) < 0.2:
                    continue  # costal cartilage region near the sternum
                ra, rb = 0.045, 0.022
                # Orient the oval along the chest wall; evaluate only in a window around the rib.
                cs, sn = np.cos(th), np.sin(th) * side
                r0, r1 = self._window(ry, ra + 2 * px)
                c0, c1 = self._window(rx, ra + 2 * px)
                if r0 >= r1 or c0 >= c1:
                    continue
                dx, dy = x[:, c0:c1] - rx, y[r0:r1] - ry
                u1 = dx * cs + dy * sn
                u2 = -dx * sn + dy * cs
                rd = (np.sqrt((u1 / ra) ** 2 + (u2 / rb) ** 2) - 1) * 0.03
                outer = _soft(rd, px)
                inner = _soft(rd + 0.006, px)
                win = hu[r0:r1, c0:c1]
                hu[r0:r1, c0:c1] = win + outer * (700.0 - win) + inner * (220.0 - 700.0)
        # Sternum (small structures are evaluated in a window around them only).
        st_y = 0.04 - bb + self.fat + 0.06
        sl, xl, yl = self._local(0.0, st_y, 0.08)
        w = hu[sl]
        hu[sl] = w + _soft(_ell(xl, yl, 0.0, st_y, 0.07, 0.03), px) * (650.0 - w) + _soft(_ell(xl, yl, 0.0, st_y, 0.055, 0.018), px) * (200.0 - 650.0)
        # Spine: paraspinal muscles, vertebral body, posterior arch with spinous process, canal.
        vy = 0.04 + cb * 0.82
        para = _soft(self._ellipse(0.0, vy + 0.15, 0.22, 0.12), px) * body
        hu = hu + para * (MUSCLE - hu)
        sl, xl, yl = self._local(0.0, vy + 0.1, 0.24)
        w = hu[sl]
        w = w + _soft(_ell(xl, yl, 0.0, vy, 0.09, 0.08), px) * (650.0 - w) + _soft(_ell(xl, yl, 0.0, vy, 0.078, 0.068), px) * (230.0 - 650.0)
        arch = _soft(_ell(xl, yl, 0.0, vy + 0.14, 0.065, 0.055), px)
        canal = _soft(_ell(xl, yl, 0.0, vy + 0.14, 0.04, 0.035), px)
        proc = _soft(np.maximum(np.abs(xl) - 0.018, np.abs(yl - (vy + 0.24)) - 0.06), px)
        w = w + np.maximum(arch, proc) * (600.0 - w)
        hu[sl] = w + canal * (25.0 - w)
        # Mediastinum: soft tissue between the lungs, heart larger towards the base.
        heart_r = 0.1 + 0.2 * np.clip((zz - 0.35) / 0.5, 0, 1)
        med_w = 0.1 + 0.05 * zz
        st_y = 0.04 - bb + self.fat + 0.06
        med_d = self._ellipse(0.02, (st_y + vy) / 2, med_w, (vy - st_y) / 2 + 0.02)
        heart_d = self._ellipse(0.1 + self.heart_shift, -0.05, heart_r * 1.2, heart_r) + wob * 0.5
        med_region = np.minimum(med_d, heart_d)
        med = _soft(med_region, px) * cavity
        hu = hu + med * (-40.0 - hu)  # mediastinal fat
        heart = _soft(heart_d, px) * cavity
        blood = 150.0 if self.contrast else BLOOD
        hu = hu + heart * (blood - 10.0 - hu)
        myo = _soft(heart_d + 0.02, px) * cavity
        hu = hu + myo * (blood - hu)
        sl, xl, yl = self._local(0.09, vy - 0.12, 0.06)
        hu[sl] = hu[sl] + _soft(_ell(xl, yl, 0.09, vy - 0.12, 0.05, 0.05), px) * (blood + 10.0 - hu[sl])
        if zz < 0.55:  # ascending aorta and trachea in upper slices
            sl, xl, yl = self._local(-0.02, -0.12, 0.07)
            asc = _soft(_ell(xl, yl, -0.02, -0.12, 0.06, 0.06), px) * (1 - heart[sl])
            hu[sl] = hu[sl] + asc * (blood + 10.0 - hu[sl])
            tr_r = 0.045 if zz < 0.4 else 0.0
            if tr_r:
                sl, xl, yl = self._local(-0.01, vy - 0.2, tr_r + 0.02)
                w = hu[sl]
                w = w + _soft(_ell(xl, yl, -0.01, vy - 0.2, tr_r + 0.008, tr_r + 0.008), px) * (60.0 - w)
                hu[sl] = w + _soft(_ell(xl, yl, -0.01, vy - 0.2, tr_r, tr_r), px) * (AIR - w)
        else:  # main bronchi below the carina
            for s in (-1.0, 1.0):
                sl, xl, yl = self._local(s * 0.09, vy - 0.22, 0.03)
                hu[sl] = hu[sl] + _soft(_ell(xl, yl, s * 0.09, vy - 0.22, 0.022, 0.022), px) * (AIR - hu[sl])
        # Lungs: cavity minus mediastinum, spine and paraspinal region, shrunk at the apex.
        lung_d = np.maximum(cav_d + 0.012, -med_region + 0.015)
        lung_d = np.maximum(lung_d, -(self._ellipse(0.0, vy + 0.05, 0.13, 0.16)))
        apex = 0.75 + 0.25 * np.clip(zz * 2, 0, 1)
        lung_d = np.maximum(lung_d, np.abs(x) / apex - (ca - 0.01))
        lung = _soft(lung_d, px)
        lung_mask = lung > 0.5
        tex = self._mix(self.texture, zz)
        parenchyma = LUNG + 25.0 * tex
        hu = hu * (1 - lung) + lung * parenchyma
        # Lesions (in the lungs only).
        lnoise = self._mix(self.lesion_noise, zz)
        haze = self._mix(self.haze, zz)
        ggo_score = np.full(hu.shape, np.inf, np.float32)
        cons_score = np.full(hu.shape, np.inf, np.float32)
        ggo_hu = np.zeros(hu.shape, np.float32)
        for lx, ly, lz, lh, lr, core, dens in self.lesions:
            t = (zz - lz) / lh
            if abs(t) >= 1:
                continue
            r = lr * np.sqrt(1 - t * t)
            d = np.sqrt((x - lx) ** 2 + (y - ly) ** 2) / r + 0.35 * lnoise
            closer = d < ggo_score
            ggo_hu = np.where(closer, dens, ggo_hu)
            ggo_score = np.minimum(ggo_score, d)
            if core > 0:
                cons_score = np.minimum(cons_score, d / core + 0.25 * haze)
        ggo = (ggo_score < 1) & lung_mask
        cons = (cons_score < 1) & lung_mask
        # Hazy GGO: intensity ramps in from the edge and varies with texture.
        ggo_w = np.clip((1 - ggo_score) * 4, 0, 1) * lung
        ggo_val = ggo_hu + 60.0 * haze + 30.0 * tex
        hu = hu + ggo_w * np.maximum(ggo_val - hu, 0)
        cons_w = np.clip((1 - cons_score) * 5, 0, 1) * lung
        hu = hu + cons_w * (-25.0 + 35.0 * haze - hu)
        # Vessels (drawn over lung and lesions, labels unchanged: annotations keep vessels as lung).
        flat = hu.reshape(-1)
        lung_flat = lung.reshape(-1)
        p = self.vessel_params
        vis = np.clip(1 - np.abs(zz - p[:, 5]) / p[:, 6], 0, 1)
        for i in np.nonzero(vis > 0.05)[0]:
            idx, dist = self.vessel_pix[i]
            if idx.size == 0:
                continue
            r = p[i, 4] * np.sqrt(vis[i])
            w = np.clip(0.5 + (r - dist) / px, 0, 1) * lung_flat[idx]
            flat[idx] = flat[idx] + w * np.maximum(BLOOD + 10.0 - flat[idx], 0)
        # Scanner noise: white noise slightly correlated by a 3x3 box (mimics reconstruction kernel).
        noise = rng.standard_normal(hu.shape).astype(np.float32)
        noise = ndimage.uniform_filter(noise, 3, mode="reflect") * 3.0
        hu = hu + noise * 14.0 * (0.4 + 0.6 * body) + noise * 4.0
        label = np.zeros(hu.shape, np.uint8)
        label[lung_mask] = LUNG_ID
        label[ggo] = GGO_ID
        label[cons] = CONS_ID
        return np.clip(hu, -1024.0, 3071.0).astype(np.float32), label


def generate_patient(seed: int, index: int, slices: int, size: int) -> PatientSlices:
    """All slices of patient ``index`` (deterministic in ``seed`` and ``index`` alone)."""
    if slices < 1 or size < 16:
        raise SynthbenchError(f"phantom needs at least 1 slice and size >= 16, got {slices} slices at {size}px")
    model = _Patient(seed, index, size)
    zs = np.linspace(0.0, 1.0, slices) if slices > 1 else np.array([0.5])
    image = np.empty((slices, size, size), np.float32)
    label = np.empty((slices, size, size), np.uint8)
    for j, z in enumerate(zs):
        rng = np.random.default_rng([seed, index, j, 11])
        image[j], label[j] = model.slice(float(z), rng)
    return PatientSlices(f"phantom-{index:03d}", image, label, [f"phantom-{index:03d}/z{j:03d}" for j in range(slices)])


def iter_phantom(
    patients: int,
    slices_per_patient: int,
    size: int,
    seed: int = 0,
    on_patient: Callable[[int], None] | None = None,
) -> Iterator[PatientSlices]:
    """Yield ``patients`` patients of ``slices_per_patient`` slices each (HU, paper classes)."""
    if patients < 1:
        raise SynthbenchError(f"phantom needs at least one patient, got {patients}")
    for i in range(patients):
        yield generate_patient(seed, i, slices_per_patient, size)
        if on_patient:
            on_patient(i)
