"""The data pipeline: source -> intensity check/window -> resize -> slice selection -> patient-level
split -> augmentation -> :func:`synthbench.data.prepared.write_prepared` (paper Sec. "Data and
preprocessing").

Sources: the embedded phantom (``"phantom"``), a MedSeg/Radiopaedia NIfTI folder
(:mod:`synthbench.data.medseg`), a generic folder of images, NIfTI volumes or DICOM series
with a config (:mod:`synthbench.data.folder`, :mod:`synthbench.data.dicom`, including the
built-in layout of the shared 256 px real slices). Fewer patients than splits are refused
before any volume is read (``slice_split`` overrides, with a warning); every declared class
must occur in the data; warnings are recorded in the manifest (``source.warnings``).
Same seed and options -> byte-identical prepared data (same content hash).

Cost: the paper's factors (x40 train, x140 test) make the augmented splits dominate: about
3.6 GB on disk at 128 px for the shared 256 px slices, growing with the square of the size.
:func:`prepare` states the expected size before it writes, refuses when the disk cannot hold
it, and shows progress. The output is locked while it is prepared (:mod:`synthbench.locking`)
and the temporary folders of a killed ``prepare`` are removed by the next one.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from synthbench.data import augment as aug
from synthbench.data import preprocess as pp
from synthbench.data.phantom import PatientSlices, iter_phantom, phantom_spec
from synthbench.data.prepared import AUGMENTED_OF, SplitArrays, array_bytes, write_prepared
from synthbench.data.spec import DatasetSpec
from synthbench.errors import SynthbenchError
from synthbench.io import free_bytes, human_bytes, leftover_pattern, preallocate, require_free_space
from synthbench.locking import lock_target

#: Below this many augmented pixels (samples x size^2) a split is augmented in-process: each spawned
#: process imports torch and torchvision (about 8 s of CPU), while augmenting costs about 1.5 us
#: per pixel (measured 2026-11-30: the demo's 764 samples at 64 px, 3.1 M pixels, took 6 s of wall
#: time in-process and 10.5 s with 2 processes). 8 M: ~2,000 samples at 64 px, 122 at 256 px.
PARALLEL_MIN_PIXELS = 8_000_000


def augment_processes(samples: int, options: PrepareOptions) -> int:
    """Processes that augment a split of ``samples`` augmented samples (1: in this process)."""
    workers = options.resolved_workers()
    return workers if workers > 1 and samples * options.size**2 >= PARALLEL_MIN_PIXELS else 1
#: Phantom defaults mimic the paper's data: 9 patients, 829 slices (about 92 per patient).
PHANTOM_PATIENTS = 9
PHANTOM_SLICES = 92
DEFAULT_SIZE = 512


class SliceSource(Protocol):
    """What a loader provides: a spec, a description for the manifest and patients in source units."""

    spec: DatasetSpec

    def describe(self) -> dict[str, Any]: ...

    def patient_count(self) -> int: ...

    def iter_patients(self) -> Iterator[PatientSlices]: ...


@dataclass
class PhantomSource:
    """The embedded phantom as a source (HU, paper classes)."""

    patients: int = PHANTOM_PATIENTS
    slices_per_patient: int = PHANTOM_SLICES
    size: int = 256
    seed: int = 0
    spec: DatasetSpec = field(default_factory=phantom_spec)

    def describe(self) -> dict[str, Any]:
        return {"kind": "phantom", "patients": self.patients, "slices_per_patient": self.slices_per_patient,
                "phantom_size": self.size, "phantom_seed": self.seed}

    def patient_count(self) -> int:
        return self.patients

    def iter_patients(self) -> Iterator[PatientSlices]:
        return iter_phantom(self.patients, self.slices_per_patient, self.size, self.seed)


@dataclass
class PrepareOptions:
    """Pipeline options (all recorded in the manifest). Defaults follow the paper.

    ``resize``: ``"pad"`` keeps a non-square slice's aspect ratio (padding in the background
    class), ``"stretch"`` stretches it. ``slice_split``: split slices instead of patients (only
    for data sets of fewer than 3 patients; recorded as a warning, since a patient then appears
    on both sides of the split).
    """

    size: int = DEFAULT_SIZE
    seed: int = 0
    train_factor: int = aug.PAPER_TRAIN_FACTOR
    test_factor: int = aug.PAPER_TEST_FACTOR
    keep_all_slices: bool = False
    min_lesion_pixels: int = 1
    split: tuple[float, float, float] = pp.PAPER_SPLIT
    augment: aug.AugmentOptions = field(default_factory=aug.AugmentOptions)
    #: Augmentation processes; 0 = one per CPU core. Never changes the output, only its speed.
    workers: int = 0
    resize: str = "pad"
    slice_split: bool = False

    def resolved_workers(self) -> int:
        import os

        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size, "seed": self.seed, "train_factor": self.train_factor,
            "test_factor": self.test_factor, "keep_all_slices": self.keep_all_slices,
            "min_lesion_pixels": self.min_lesion_pixels, "split": list(self.split),
            "augment": self.augment.to_dict(), "resize": self.resize, "slice_split": self.slice_split,
        }

    def validate(self) -> None:
        if self.size < 16:
            raise SynthbenchError(f"--size must be at least 16, got {self.size}")
        if self.train_factor < 0 or self.test_factor < 0:
            raise SynthbenchError("augmentation factors must be >= 0")
        if self.workers < 0:
            raise SynthbenchError(f"--workers must be >= 0 (0: one per core), got {self.workers}")
        if self.resize not in pp.RESIZE_MODES:
            raise SynthbenchError(f"--resize must be one of {', '.join(pp.RESIZE_MODES)}, got {self.resize!r}")


#: The ``PrepareOptions`` field holding each real split's expansion factor (paper Table I:
#: train x40; synthesis test and segmentation test both x140).
FACTOR_OF = {"train": "train_factor", "test": "test_factor", "seg_test": "test_factor"}


def augmented_counts(real_counts: dict[str, int], options: PrepareOptions) -> dict[str, int]:
    """Samples of every augmented split for the given real counts (paper: 300 / 73 / 73 ->
    12,000 / 10,220 / 10,220): what :func:`prepare` writes."""
    return {AUGMENTED_OF[name]: int(real_counts[name]) * int(getattr(options, FACTOR_OF[name])) for name in FACTOR_OF}


def _progress_iter(items: Iterable, total: int, label: str, show: bool) -> Iterator:
    if not show:
        yield from items
        return
    from synthbench.cli.console import progress

    with progress() as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            yield item
            bar.advance(task)


@dataclass
class _Real:
    image: list[np.ndarray] = field(default_factory=list)
    label: list[np.ndarray] = field(default_factory=list)
    patient: list[str] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    total_slices: int = 0
    #: Source volumes (VolumeGeometry dicts, ``first`` global, plus slices, view shape, resize).
    volumes: list[dict[str, Any]] = field(default_factory=list)
    resized: set[tuple[int, int]] = field(default_factory=set)


def _volume_records(p: PatientSlices, first: int, geometry: pp.ResizeGeometry) -> list[dict[str, Any]]:
    """Where each source volume of ``p`` lies among all slices, and how its slices were resized."""
    records = []
    starts = [v.first for v in p.volumes] + [len(p.image)]
    for v, stop in zip(p.volumes, starts[1:], strict=True):
        records.append({**v.to_dict(), "first": first + v.first, "slices": stop - v.first,
                        "view_shape": [stop - v.first, *p.image.shape[1:]], "resize": geometry.to_dict()})
    return records


def load_real(source: SliceSource, options: PrepareOptions, show_progress: bool = False) -> _Real:
    """Read every patient, check and window intensities, resize, select slices (paper preprocessing).

    Region ``"threshold"``: the lung class is derived from Hounsfield units before windowing
    (:func:`synthbench.data.preprocess.threshold_lung`).
    """
    spec = source.spec
    out_spec = spec.with_threshold_lung()
    derive_lung = out_spec is not spec
    background = next((c.id for c in spec.classes if c.role == "background"), None)
    real = _Real()
    for p in _progress_iter(source.iter_patients(), source.patient_count(), "reading + preprocessing", show_progress):
        if p.image.shape != p.label.shape:
            raise SynthbenchError(f"image {p.image.shape} and label {p.label.shape} shapes differ", p.names[0] if p.names else p.patient)
        pp.check_intensity(p.image, spec, p.names)
        if p.label.size and int(p.label.max()) >= spec.num_classes:
            bad = int(np.argmax(p.label.reshape(len(p.label), -1).max(axis=1) >= spec.num_classes))
            raise SynthbenchError(
                f"label {int(p.label[bad].max())} outside the {spec.num_classes} declared classes "
                f"({', '.join(spec.class_names)})", p.names[bad])
        label = pp.threshold_lung(p.image, p.label, spec, out_spec.num_classes - 1) if derive_lung else p.label
        keep = np.ones(len(label), bool) if options.keep_all_slices else pp.has_lesion(label, spec, options.min_lesion_pixels)
        first = real.total_slices
        real.total_slices += len(label)
        geometry = pp.resize_geometry(p.image.shape[1:], options.size, options.resize)
        real.volumes += _volume_records(p, first, geometry)
        if not keep.any():
            continue
        image, label = pp.resize(pp.to_unit(p.image[keep], spec), label[keep], options.size, options.resize, background)
        if p.image.shape[1] != p.image.shape[2]:
            real.resized.add(tuple(p.image.shape[1:]))
        real.image.append(image.astype(np.float16))
        real.label.append(label)
        idx = np.nonzero(keep)[0]
        real.patient += [p.patient] * len(idx)
        real.index += [first + int(i) for i in idx]
        real.names += [p.names[int(i)] for i in idx]
    if not real.label:
        what = "slices" if options.keep_all_slices else "slices with a lesion class (use --keep-all-slices to keep every slice)"
        raise SynthbenchError(f"empty selection: no {what} among {real.total_slices} slices")
    return real


def class_counts(labels: list[np.ndarray] | np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class over label arrays."""
    counts = np.zeros(num_classes, np.int64)
    for lab in labels:
        counts += np.bincount(np.asarray(lab).ravel(), minlength=num_classes)[:num_classes]
    return counts


def check_classes(spec: DatasetSpec, real: _Real, train_label: np.ndarray, options: PrepareOptions) -> list[str]:
    """Every declared class must occur in the data (else an error naming it); a class missing from
    the train split is a warning (returned, and recorded in the manifest)."""
    counts = class_counts(real.label, spec.num_classes)
    missing = [c.name for c in spec.classes if counts[c.id] == 0]
    if missing:
        where = "the data" if options.keep_all_slices else "the kept slices (slices with a lesion)"
        raise SynthbenchError(
            f"declared class{'es' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} never occur{'' if len(missing) > 1 else 's'} "
            f"in {where}: check the masks (threshold, file pairing) or remove the class from the description")
    train = class_counts([train_label], spec.num_classes)
    absent = [c.name for c in spec.classes if train[c.id] == 0]
    if absent:
        return [f"class{'es' if len(absent) > 1 else ''} {', '.join(map(repr, absent))} never occur{'' if len(absent) > 1 else 's'} "
                "in the train split: the methods are trained without it but tested on it"]
    return []


def _augment_slice(args: tuple) -> tuple[np.ndarray, np.ndarray]:
    """All ``factor`` augmented copies of one real slice (runs in a worker process or inline)."""
    image, label, seeds, size, augment_options = args
    import torch

    torch.set_num_threads(1)  # one process per core; no oversubscription
    transform = aug.build_transform(size, augment_options)
    pairs = [aug.augment_one(transform, image, label, seed) for seed in seeds]
    return np.stack([p[0] for p in pairs]).astype(np.float16), np.stack([p[1] for p in pairs])


def _augment_split(
    name: str, real: SplitArrays, factor: int, options: PrepareOptions, staging: Path, show_progress: bool
) -> SplitArrays:
    """Augment every slice ``factor`` times into memory-mapped staging arrays.

    Each sample's seed depends only on its identity (:func:`augment.sample_seed`), so the result
    is byte-identical whatever ``options.workers`` is; slices are spread over worker processes
    (spawned, so no OpenMP state is forked) when there are enough of them to pay the start-up.
    """
    n = len(real) * factor
    s = options.size
    image = np.lib.format.open_memmap(staging / f"{name}_image.npy", mode="w+", dtype=np.float16, shape=(n, s, s))
    label = np.lib.format.open_memmap(staging / f"{name}_label.npy", mode="w+", dtype=np.uint8, shape=(n, s, s))
    for array, file in ((image, f"{name}_image.npy"), (label, f"{name}_label.npy")):
        preallocate(staging / file, array.offset + array.nbytes)  # a full disk: ENOSPC now, not SIGBUS later
    jobs = [
        (real.image[i], real.label[i], [aug.sample_seed(options.seed, name, real.source_index[i], k) for k in range(factor)],
         s, options.augment)
        for i in range(len(real))
    ]
    workers = augment_processes(n, options)
    if workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers)
        results = pool.imap(_augment_slice, jobs, chunksize=1)
    else:
        pool, results = None, map(_augment_slice, jobs)
    try:
        with_progress = _progress_iter(results, len(jobs), f"augmenting {name}", show_progress)
        for i, (img, lab) in enumerate(with_progress):
            image[i * factor:(i + 1) * factor] = img
            label[i * factor:(i + 1) * factor] = lab
    finally:
        if pool is not None:
            pool.terminate()
    patient = [real.patient[i] for i in range(len(real)) for _ in range(factor)]
    source_index = [real.source_index[i] for i in range(len(real)) for _ in range(factor)]
    augmentation = [k + 1 for _ in range(len(real)) for k in range(factor)]
    return SplitArrays(image, label, patient, source_index, augmentation)


def remove_prepare_leftovers(out_dir: Path) -> list[Path]:
    """Staging and temporary folders a killed ``prepare`` of ``out_dir`` left next to it."""
    staging = re.compile(rf"^\.{re.escape(out_dir.name)}\.staging\.[A-Za-z0-9_]{{8}}$")
    partial = leftover_pattern(out_dir.name)
    removed = []
    if out_dir.parent.is_dir():
        for entry in out_dir.parent.iterdir():
            if entry.is_dir() and (staging.match(entry.name) or partial.match(entry.name)
                                   or entry.name == f".{out_dir.name}.old"):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def expected_bytes(counts: dict[str, int], size: int) -> int:
    """Disk space of the prepared data set (also the peak while writing it: the staged augmented
    splits are moved into place, not copied)."""
    return sum(array_bytes(n, size) for n in counts.values())


def prepare(
    source: SliceSource,
    out_dir: str | Path,
    options: PrepareOptions | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
    say: Callable[[str], None] | None = None,
) -> str:
    """Run the whole pipeline on ``source`` and write ``out_dir``; return the content hash.

    Real splits hold the selected slices (augmentation number 0); ``train_aug`` holds
    ``train_factor`` augmented copies of each training slice, ``test_aug`` and ``seg_test_aug``
    ``test_factor`` copies of each synthesis-test and segmentation-test slice (numbers 1..factor;
    counts: :func:`augmented_counts`). ``say`` receives progress lines (leftovers removed, the
    expected size before writing).
    """
    options = options or PrepareOptions()
    options.validate()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    if out_dir.exists() and not overwrite:
        raise SynthbenchError("output directory already exists (use --overwrite to replace it)", out_dir)
    warn: list[str] = []
    check_patient_count(source.patient_count(), options, warn)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with lock_target(out_dir, "the prepared data set's output"):
        if out_dir.exists() and not overwrite:  # prepared by another process meanwhile
            raise SynthbenchError("output directory already exists (use --overwrite to replace it)", out_dir)
        if (removed := remove_prepare_leftovers(out_dir)) and say is not None:
            say(f"removed {len(removed)} folder(s) left by an interrupted prepare: {', '.join(p.name for p in removed)}")
        return _prepare(source, out_dir, options, overwrite, show_progress, say, started, warn)


def _prepare(source, out_dir: Path, options: PrepareOptions, overwrite: bool, show_progress: bool, say, started,
             warn: list[str]) -> str:
    real = load_real(source, options, show_progress)
    spec = source.spec.with_threshold_lung()
    image = np.concatenate(real.image)
    label = np.concatenate(real.label)
    units = real.patient
    if options.slice_split:
        units = [f"{p}#{i}" for p, i in zip(real.patient, real.index, strict=True)]
    counts: dict[str, int] = {}
    for p in units:
        counts[p] = counts.get(p, 0) + 1
    assignment = pp.split_patients(counts, options.seed, options.split)
    unit_arr = np.asarray(units)
    splits: dict[str, SplitArrays] = {}
    for name in pp.SPLIT_NAMES:
        sel = np.nonzero(np.isin(unit_arr, assignment[name]))[0]
        splits[name] = SplitArrays(
            image[sel], label[sel], [real.patient[i] for i in sel], [real.index[i] for i in sel], [0] * len(sel)
        )
    warn += check_classes(spec, real, splits["train"].label, options)
    if real.resized:
        sizes = ", ".join(f"{w}x{h}" for h, w in sorted(real.resized))
        how = "aspect ratio kept, padded with the background class" if options.resize == "pad" else "stretched to a square"
        warn.append(f"non-square slices ({sizes} pixels) resized to {options.size}x{options.size} ({how})")
    for message in warn:
        warnings.warn(message, UserWarning, stacklevel=2)
    if options.train_factor > 0 or options.test_factor > 0:
        aug.build_transform(options.size, options.augment)  # a setting that cannot work is refused before any writing
    counts = {name: len(s) for name, s in splits.items()}
    counts.update(augmented_counts(counts, options))
    needed = expected_bytes(counts, options.size)
    if say is not None:
        say(f"{sum(counts.values()):,} slices at {options.size} px ({', '.join(f'{k} {v:,}' for k, v in counts.items())}): "
            f"{human_bytes(needed)} on disk; {human_bytes(free_bytes(out_dir.parent))} free in {out_dir.parent}")
    require_free_space(out_dir.parent, needed, "the prepared data set")
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging.", dir=out_dir.parent))
    try:
        for real_name, factor_field in FACTOR_OF.items():
            name, factor = AUGMENTED_OF[real_name], getattr(options, factor_field)
            if factor <= 0:  # factor 0: no augmented split (methods then train on the real one)
                continue
            if say is not None:
                say(f"augmenting {name}: {counts[real_name]:,} slices x {factor} "
                    f"({augment_processes(counts[real_name] * factor, options)} process(es))")
            splits[name] = _augment_split(name, splits[real_name], factor, options, staging, show_progress)
        if say is not None:
            say(f"writing {out_dir} (content hash, per-file sha256, fsync)")
        source_info = dict(source.describe())
        source_info["slices_total"] = real.total_slices
        source_info["slices_kept"] = len(real.patient)
        source_info["patients_total"] = source.patient_count()
        source_info["region"] = {"region": spec.region, "label": spec.region_label}
        source_info["warnings"] = warn
        if real.volumes:
            source_info["volumes"] = real.volumes
        return write_prepared(out_dir, spec, splits, source_info, options.to_dict(), overwrite=overwrite,
                              show_progress=show_progress, started=started)
    finally:
        for s in splits.values():
            if isinstance(s.image, np.memmap):
                s.image._mmap.close()  # type: ignore[attr-defined]
                s.label._mmap.close()  # type: ignore[attr-defined]
        shutil.rmtree(staging, ignore_errors=True)


def check_patient_count(n: int, options: PrepareOptions, warn: list[str]) -> None:
    """Fewer patients than splits: refuse before reading any volume, unless a slice split is asked for."""
    needed = sum(1 for v in options.split if v > 0)
    if options.slice_split:
        warn.append(f"slice-level split (--slice-split) of {n} patient{'s' if n != 1 else ''}: slices of one patient "
                    "are in both train and test, so test scores are optimistic and not comparable with patient-level splits")
        return
    if n < needed:
        raise SynthbenchError(
            f"the source has {n} patient{'s' if n != 1 else ''}; a patient-level split into train, test and seg_test needs "
            f"at least {needed} (add patients, or pass --slice-split to split slices, with a warning in the manifest)")


def prepare_phantom(
    out_dir: str | Path,
    size: int = 64,
    patients: int = PHANTOM_PATIENTS,
    slices_per_patient: int = PHANTOM_SLICES,
    seed: int = 0,
    train_factor: int = aug.PAPER_TRAIN_FACTOR,
    test_factor: int = aug.PAPER_TEST_FACTOR,
    keep_all_slices: bool = False,
    overwrite: bool = False,
    show_progress: bool = False,
) -> str:
    """Prepare a phantom data set (generated directly at ``size``); return its content hash."""
    source = PhantomSource(patients=patients, slices_per_patient=slices_per_patient, size=size, seed=seed)
    options = PrepareOptions(size=size, seed=seed, train_factor=train_factor, test_factor=test_factor,
                             keep_all_slices=keep_all_slices)
    return prepare(source, out_dir, options, overwrite=overwrite, show_progress=show_progress)


def resolve_source(
    source: str, size: int, seed: int, config: str | Path | None = None, effusion: str | None = None,
    **phantom_kwargs: Any,
) -> SliceSource:
    """``"phantom"``, a folder with a config (or ``config``), a MedSeg NIfTI folder, or a known layout.

    ``effusion``: the MedSeg pleural-effusion rule (:data:`synthbench.data.medseg.EFFUSION_RULES`).
    """
    if source == "phantom":
        return PhantomSource(size=size, seed=seed, **phantom_kwargs)
    from synthbench.data import folder, medseg

    path = Path(source)
    if not path.exists():
        raise SynthbenchError("source not found (expected 'phantom' or a data folder)", path)
    if config is not None:
        src = folder.FolderSource(path, folder.load_config(config))
    elif folder.find_config(path) is not None:
        src = folder.FolderSource(path, folder.load_config(folder.find_config(path)))
    elif medseg.detect(path):
        return medseg.MedSegSource(path, effusion=effusion or "background")
    elif (builtin := folder.detect_builtin(path)) is not None:
        src = folder.FolderSource(path, builtin)
    else:
        raise SynthbenchError(
            f"unknown data layout: not a MedSeg/Radiopaedia NIfTI folder ({medseg.IMAGE_DIR}/, {medseg.LUNG_DIR}/, "
            f"{medseg.INFECTION_DIR}/), not the covid19-ct-lung-infection-256 layout (images/, lung_masks/, "
            "infection_masks/), and no synthbench-data.json/.toml config (images, DICOM series or NIfTI with their "
            "masks; pass --config FILE)", path)
    if effusion is not None:
        raise SynthbenchError("--effusion applies to MedSeg/Radiopaedia folders only", path)
    return src


Callback = Callable[[int], None]
