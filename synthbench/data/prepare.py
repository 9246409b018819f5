"""The data pipeline: source -> intensity check/window -> resize -> slice selection -> patient-level
split -> augmentation -> :func:`synthbench.data.prepared.write_prepared` (paper Sec. "Data and
preprocessing").

Sources: the embedded phantom (``"phantom"``), a MedSeg/Radiopaedia NIfTI folder
(:mod:`synthbench.data.medseg`), a generic image/mask folder with a config
(:mod:`synthbench.data.folder`, including the built-in layout of the shared 256 px real slices).
Same seed and options -> byte-identical prepared data (same content hash).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from synthbench.data import augment as aug
from synthbench.data import preprocess as pp
from synthbench.data.phantom import PatientSlices, iter_phantom, phantom_spec
from synthbench.data.prepared import AUGMENTED_OF, SplitArrays, write_prepared
from synthbench.data.spec import DatasetSpec
from synthbench.errors import SynthbenchError

#: Below this many augmented samples a split is augmented in-process (spawning costs seconds).
PARALLEL_MIN_SAMPLES = 256
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
    """Pipeline options (all recorded in the manifest). Defaults follow the paper."""

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

    def resolved_workers(self) -> int:
        import os

        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size, "seed": self.seed, "train_factor": self.train_factor,
            "test_factor": self.test_factor, "keep_all_slices": self.keep_all_slices,
            "min_lesion_pixels": self.min_lesion_pixels, "split": list(self.split),
            "augment": self.augment.to_dict(),
        }

    def validate(self) -> None:
        if self.size < 16:
            raise SynthbenchError(f"--size must be at least 16, got {self.size}")
        if self.train_factor < 0 or self.test_factor < 0:
            raise SynthbenchError("augmentation factors must be >= 0")
        if self.workers < 0:
            raise SynthbenchError(f"--workers must be >= 0 (0: one per core), got {self.workers}")


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


def load_real(source: SliceSource, options: PrepareOptions, show_progress: bool = False) -> _Real:
    """Read every patient, check and window intensities, resize, select slices (paper preprocessing)."""
    spec = source.spec
    real = _Real()
    for p in _progress_iter(source.iter_patients(), source.patient_count(), "reading + preprocessing", show_progress):
        if p.image.shape != p.label.shape:
            raise SynthbenchError(f"image {p.image.shape} and label {p.label.shape} shapes differ", p.names[0] if p.names else p.patient)
        pp.check_intensity(p.image, spec, p.names[0] if len(p.names) == 1 else f"{p.patient} ({p.names[0]} ...)")
        if p.label.size and int(p.label.max()) >= spec.num_classes:
            bad = int(np.argmax(p.label.reshape(len(p.label), -1).max(axis=1) >= spec.num_classes))
            raise SynthbenchError(
                f"label {int(p.label[bad].max())} outside the {spec.num_classes} declared classes "
                f"({', '.join(spec.class_names)})", p.names[bad])
        keep = np.ones(len(p.label), bool) if options.keep_all_slices else pp.has_lesion(p.label, spec, options.min_lesion_pixels)
        first = real.total_slices
        real.total_slices += len(p.label)
        if not keep.any():
            continue
        image, label = pp.resize(pp.to_unit(p.image[keep], spec), p.label[keep], options.size)
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
    jobs = [
        (real.image[i], real.label[i], [aug.sample_seed(options.seed, name, real.source_index[i], k) for k in range(factor)],
         s, options.augment)
        for i in range(len(real))
    ]
    workers = options.resolved_workers()
    if workers > 1 and n >= PARALLEL_MIN_SAMPLES:
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


def prepare(
    source: SliceSource,
    out_dir: str | Path,
    options: PrepareOptions | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
) -> str:
    """Run the whole pipeline on ``source`` and write ``out_dir``; return the content hash.

    Real splits hold the selected slices (augmentation number 0); ``train_aug`` holds
    ``train_factor`` augmented copies of each training slice, ``test_aug`` and ``seg_test_aug``
    ``test_factor`` copies of each synthesis-test and segmentation-test slice (numbers 1..factor;
    counts: :func:`augmented_counts`).
    """
    options = options or PrepareOptions()
    options.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise SynthbenchError("output directory already exists (use --overwrite to replace it)", out_dir)
    real = load_real(source, options, show_progress)
    image = np.concatenate(real.image)
    label = np.concatenate(real.label)
    counts: dict[str, int] = {}
    for p in real.patient:
        counts[p] = counts.get(p, 0) + 1
    assignment = pp.split_patients(counts, options.seed, options.split)
    patient_arr = np.asarray(real.patient)
    splits: dict[str, SplitArrays] = {}
    for name in pp.SPLIT_NAMES:
        sel = np.nonzero(np.isin(patient_arr, assignment[name]))[0]
        splits[name] = SplitArrays(
            image[sel], label[sel], [real.patient[i] for i in sel], [real.index[i] for i in sel], [0] * len(sel)
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging.", dir=out_dir.parent))
    try:
        for real_name, factor_field in FACTOR_OF.items():
            name = AUGMENTED_OF[real_name]
            splits[name] = _augment_split(name, splits[real_name], getattr(options, factor_field), options, staging,
                                          show_progress)
        source_info = dict(source.describe())
        source_info["slices_total"] = real.total_slices
        source_info["slices_kept"] = len(real.patient)
        source_info["patients_total"] = source.patient_count()
        return write_prepared(out_dir, source.spec, splits, source_info, options.to_dict(), overwrite=overwrite)
    finally:
        for s in splits.values():
            if isinstance(s.image, np.memmap):
                s.image._mmap.close()  # type: ignore[attr-defined]
                s.label._mmap.close()  # type: ignore[attr-defined]
        shutil.rmtree(staging, ignore_errors=True)


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
    source: str, size: int, seed: int, config: str | Path | None = None, **phantom_kwargs: Any
) -> SliceSource:
    """``"phantom"``, a folder with a config (or ``config``), a MedSeg NIfTI folder, or a known layout."""
    if source == "phantom":
        return PhantomSource(size=size, seed=seed, **phantom_kwargs)
    from synthbench.data import folder, medseg

    path = Path(source)
    if not path.exists():
        raise SynthbenchError("source not found (expected 'phantom' or a data folder)", path)
    if config is not None:
        return folder.FolderSource(path, folder.load_config(config))
    found = folder.find_config(path)
    if found is not None:
        return folder.FolderSource(path, folder.load_config(found))
    if medseg.detect(path):
        return medseg.MedSegSource(path)
    builtin = folder.detect_builtin(path)
    if builtin is not None:
        return folder.FolderSource(path, builtin)
    raise SynthbenchError(
        "unknown data layout: not a MedSeg NIfTI folder, no synthbench-data.json/.toml config and no "
        "known layout (pass --config FILE)", path)


Callback = Callable[[int], None]
