"""Synthesize a split from a trained run, plus the paper's completion step (Sec. "Task").

``synthesize(run_dir, data_dir, out_dir, split="test", augment=0)`` feeds every label map of the
split (or ``augment`` augmented label maps per slice: the paper's test-time input, made with the
data pipeline's own transforms, :mod:`synthbench.data.augment`, the real slice transformed
jointly so that completion still has a real counterpart) to the run's generator and writes::

    OUT/synthesis.json          run, method, split, augment, count, style mode, data hash, size, spec,
                                region (which pixels completion pastes), nifti (what was written)
    OUT/label/NNNNN.png         label map (class ids)
    OUT/mask/NNNNN.png          completion region (0/255): the data set's region (spec.region)
    OUT/real/NNNNN.png          real slice
    OUT/fake/NNNNN.png          raw synthetic slice
    OUT/complete/NNNNN.png      completion: synthetic region pasted into the real slice
    OUT/<R>_real/NNNNN.png      region-only real (composite.lung_only); R = "lung" or "lesion",
    OUT/<R>_fake/NNNNN.png      region-only synthetic  named by the region the data set declares
    OUT/nifti/<view>/<volume>.nii.gz
                                when the data came from 3-D volumes (NIfTI, DICOM) and augment = 0:
                                each view above as one volume per source volume, a CT again:
                                intensities in HU (the inverse of the window; values outside the
                                window were clipped, the header description says so), the source
                                file's axis order, orientation and affine (voxel size scaled by
                                the prepare resize), each synthesized slice at its source z;
                                slices that were not synthesized hold ``fill_value`` (1000 below
                                the window, never a synthesized value); labels in the source's
                                coding where it has one (``spec.extra.label_coding``), the mask 0/1

With region "whole" (no lung or lesion region) completion pastes the whole slice: there is no
mask and no region-only view, and evaluation reports complete images only.

Images are 8-bit gray with ``round((x + 1) * 127.5)``. Completion and lung-only views come from
:mod:`synthbench.composite` (the one definition).

Test time is the same for every method unless asked otherwise: ``generate`` sees only the label
map. ``style="real"`` (``--style real``) is the opt-in reconstruction mode of style-based methods
(``uses_style``: SEAN, SPADE's VAE variant): the real target slice is passed as ``style``, so
the method sees the answer; the record says so (``uses_real_image``) and reports mark it.
Without it SEAN uses its per-class mean style codes of the training set. ``test_mode`` picks
among a method's :attr:`~synthbench.Synthesizer.test_modes` (pix2pix: the official test.py
behaviour, dropout on and batch statistics, by default; ``mode=eval`` for eval mode). Torch's
RNG is seeded with ``seed`` for the whole synthesis (dropout, noise injection, diffusion
sampling), so a synthesis repeats exactly; the caller's RNG state is restored afterwards.
``synthesis.json`` records ``style``, ``style_mode``, ``uses_real_image``, ``test_mode``,
``test_time`` (in words) and ``seed``, and the cost of sampling: ``sampling`` (the synthesizer's
:meth:`~synthbench.Synthesizer.sampling`: sampler and network evaluations per image),
``generate_seconds`` (wall time inside ``generate``, CUDA synchronised) and
``seconds_per_image``. The directory is written atomically (temporary name, renamed when
complete). With ``augment`` the augmented samples use seeds
``sample_seed(prepare seed, "<split>_aug", source slice, k)``, so for ``k`` up to the prepared
expansion factor they equal the prepared ``<split>_aug`` samples byte for byte.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from synthbench.composite import complete, lung_only
from synthbench.data.prepared import PreparedDataset
from synthbench.errors import SynthbenchError
from synthbench.io import atomic_directory, atomic_write_json
from synthbench.output_check import check_generated
from synthbench.synthesizer import one_hot

FOLDERS = ("label", "mask", "real", "fake", "complete", "lung_real", "lung_fake")
#: Below the window by this much: the value of volume slices that were not synthesized.
FILL_BELOW_WINDOW = 1000.0


def view_folders(spec) -> tuple[str, ...]:
    """The synthesis folders of a data set's region (module docstring)."""
    key = spec.region_key
    if key is None:
        return ("label", "real", "fake", "complete")
    return ("label", "mask", "real", "fake", "complete", f"{key}_real", f"{key}_fake")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``[-1, 1]`` -> ``0..255`` by ``round((x + 1) * 127.5)`` (docs/architecture.md)."""
    return np.clip(np.round((np.asarray(image, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


#: ``style`` values: no style image (default), or the real target slice (reconstruction; opt-in).
STYLES = ("none", "real")


def style_mode(synth, style: str = "none") -> str:
    """What a method's style input was: 'none' (no style input), 'real' (the real target slice),
    or the method's own fallback without one (SEAN: 'mean' codes)."""
    if not getattr(synth, "uses_style", False):
        return "none"
    return "real" if style == "real" else getattr(synth, "styleless_mode", "none")


def test_time_text(synth, style: str = "none") -> str:
    """The test-time setting of a synthesis, in words (reports show it for every method)."""
    text = synth.describe_test_mode()
    mode = style_mode(synth, style)
    if mode == "real":
        return f"{text}; style: the real target slice (reconstruction, sees the answer)"
    if mode != "none":
        return f"{text}; style: {mode}"
    return text


def _source_arrays(ds: PreparedDataset, split: str, augment: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Images/labels to synthesize from: the split itself, or ``augment`` augmented copies per slice."""
    arrays = ds.split(split)
    if augment <= 0:
        entries = [{"patient": arrays.patient[i], "source_index": arrays.source_index[i], "augmentation": arrays.augmentation[i]}
                   for i in range(len(arrays))]
        return np.asarray(arrays.image, dtype=np.float32), np.asarray(arrays.label), entries
    from synthbench.data import augment as aug

    opts = ds.manifest.get("options", {}) or {}
    aug_opts = aug.AugmentOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in (opts.get("augment") or {}).items()})
    seed = int(opts.get("seed", 0))
    transform = aug.build_transform(ds.size, aug_opts)
    images, labels, entries = [], [], []
    for i in range(len(arrays)):
        for k in range(augment):
            s = aug.sample_seed(seed, f"{split}_aug", arrays.source_index[i], k)
            img, lab = aug.augment_one(transform, arrays.image[i], arrays.label[i], s)
            images.append(img)
            labels.append(lab)
            entries.append({"patient": arrays.patient[i], "source_index": arrays.source_index[i], "augmentation": k + 1})
    return np.stack(images).astype(np.float32), np.stack(labels), entries


def _save(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG")


def synthesize(
    run_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    split: str = "test",
    augment: int = 0,
    batch_size: int = 8,
    device: str = "cpu",
    overwrite: bool = False,
    show_progress: bool = True,
    synth=None,
    style: str = "none",
    test_mode: dict[str, str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the synthesis directory (see the module docstring); return the ``synthesis.json`` record."""
    from synthbench.engine import load_synthesizer

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise SynthbenchError("output directory already exists (choose another --out)", out_dir)
    if augment < 0 or batch_size < 1:
        raise SynthbenchError("--augment must be >= 0 and --batch-size >= 1")
    if style not in STYLES:
        raise SynthbenchError(f"--style must be one of {', '.join(STYLES)}, got {style!r}")
    ds = PreparedDataset(data_dir)
    if synth is None:
        synth = load_synthesizer(run_dir, device=device)
    if style == "real" and not getattr(synth, "uses_style", False):
        raise SynthbenchError(f"--style real: {synth.name} takes no style image")
    synth.set_test_mode(**(test_mode or {}))
    if synth.num_classes != ds.num_classes or synth.image_size != ds.size:
        raise SynthbenchError(
            f"run was trained for {synth.num_classes} classes at {synth.image_size}px, data set has "
            f"{ds.num_classes} classes at {ds.size}px", data_dir)
    images, labels, entries = _source_arrays(ds, split, augment)
    n = len(entries)
    if n == 0:
        raise SynthbenchError(f"split {split!r} is empty", data_dir)
    dev = torch.device(device)
    from synthbench.cli.console import progress

    folders = view_folders(ds.spec)
    key = ds.spec.region_key
    # volume geometry records (a data set prepared before they were recorded has none)
    source_volumes = [v for v in ds.manifest.get("source", {}).get("volumes") or [] if isinstance(v, dict) and "affine" in v]
    nifti = bool(source_volumes) and augment == 0
    generate_seconds = 0.0
    rng_devices = [dev] if dev.type == "cuda" else []
    with atomic_directory(out_dir, overwrite=overwrite) as tmp, torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        for folder in folders:
            (tmp / folder).mkdir()
        volumes = _staged_volumes(tmp / ".staging", n, ds.size, folders) if nifti else {}
        with progress() as bar:
            task = bar.add_task(f"synthesizing {split}", total=n) if show_progress else None
            for start in range(0, n, batch_size):
                label = torch.from_numpy(np.asarray(labels[start:start + batch_size], dtype=np.int64)).to(dev)
                real = torch.from_numpy(images[start:start + batch_size]).unsqueeze(1).to(dev)
                lung = ds.lung_mask(label)
                t0 = time.perf_counter()
                fake = synth.generate(one_hot(label, ds.num_classes), style=real if style == "real" else None)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                generate_seconds += time.perf_counter() - t0
                check_generated(fake, synth.name, label.shape[0], ds.size, f"on synthesis batch {start // batch_size + 1}")
                views = {"fake": fake, "real": real, "complete": complete(fake, real, lung)}
                if key is not None:
                    views[f"{key}_real"] = lung_only(real, lung)
                    views[f"{key}_fake"] = lung_only(fake, lung)
                arrays = {name: tensor[:, 0].cpu().numpy() for name, tensor in views.items()}
                arrays["label"] = label.cpu().numpy().astype(np.uint8)
                arrays["mask"] = lung[:, 0].cpu().numpy().astype(np.uint8)
                for j in range(label.shape[0]):
                    name = f"{start + j:05d}.png"
                    _save(arrays["label"][j], tmp / "label" / name)
                    if key is not None:
                        _save(arrays["mask"][j] * 255, tmp / "mask" / name)
                    for view in views:
                        _save(to_uint8(arrays[view][j]), tmp / view / name)
                for view, volume in volumes.items():
                    volume[start:start + label.shape[0]] = arrays[view]
                if task is not None:
                    bar.update(task, advance=label.shape[0])
        if nifti:
            nifti_record = _save_volumes(volumes, tmp / "nifti", ds, entries, source_volumes)
            shutil.rmtree(tmp / ".staging")
        else:
            nifti_record = {"written": False, "reason": (
                "augmented samples are not slices of a source volume" if source_volumes
                else "the data set did not come from 3-D volumes (or was prepared before their geometry was recorded)")}
        record = {
            "run": str(Path(run_dir).resolve()) if run_dir is not None else None,
            "method": synth.name,
            "variant": getattr(synth, "variant", None),
            "weights": str(getattr(synth, "weights_path", "")) or None,
            "split": split,
            "augment": augment,
            "augment_source": "synthbench.data.augment (prepare seed, '<split>_aug' seeds)" if augment else None,
            "count": n,
            "nifti": nifti,
            "nifti_volumes": nifti_record,
            "region": {"region": ds.spec.region, "key": key, "label": ds.spec.region_label},
            "style": style,
            "style_mode": style_mode(synth, style),
            "uses_real_image": style_mode(synth, style) == "real",
            "test_mode": dict(synth.test_mode),
            "test_time": test_time_text(synth, style),
            "seed": seed,
            "sampling": synth.sampling(),
            "generate_seconds": generate_seconds,
            "seconds_per_image": generate_seconds / n,
            "data_dir": str(Path(data_dir).resolve()),
            "data_hash": ds.content_hash,
            "size": ds.size,
            "spec": ds.spec.to_dict(),
            "samples": entries,
        }
        atomic_write_json(tmp / "synthesis.json", record)
    return record


def _staged_volumes(folder: Path, n: int, size: int, views: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Memory-mapped ``[N, H, W]`` arrays, one per view, filled batch by batch (no RAM growth)."""
    folder.mkdir()
    return {
        view: np.lib.format.open_memmap(folder / f"{view}.npy", mode="w+", shape=(n, size, size),
                                        dtype=np.uint8 if view in ("label", "mask") else np.float32)
        for view in views
    }


def _save_volumes(volumes: dict[str, np.ndarray], folder: Path, ds: PreparedDataset,
                  entries: list[dict[str, Any]], source_volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """Each view as one NIfTI volume per source volume (module docstring); returns the record."""
    import nibabel as nib

    from synthbench.data.volume import VolumeGeometry, nifti_stem, view_to_image

    spec = ds.spec
    lo, hi = spec.hu_window if spec.intensity == "hu" else spec.value_range
    unit = "HU" if spec.intensity == "hu" else "source units"
    fill = float(lo) - FILL_BELOW_WINDOW
    coding = spec.extra.get("label_coding")
    lut = np.asarray(coding if coding is not None else range(spec.num_classes), dtype=np.int16)
    label_dtype = np.uint8 if lut.min() >= 0 and lut.max() < 256 else np.int16
    source_index = np.asarray([e["source_index"] for e in entries], dtype=np.int64)
    written = []
    for view in volumes.values():
        view.flush()
    for record in source_volumes:
        first, count = int(record["first"]), int(record["slices"])
        samples = np.nonzero((source_index >= first) & (source_index < first + count))[0]
        if samples.size == 0:
            continue
        geometry = VolumeGeometry.from_dict(record)
        z = source_index[samples] - first
        name = nifti_stem(Path(geometry.name)) or f"volume{len(written)}"
        for view, stack in volumes.items():
            if view in ("label", "mask"):
                data = np.zeros((count, ds.size, ds.size), label_dtype)
                data[z] = lut[stack[samples]] if view == "label" else stack[samples]
                what = "label coding in synthesis.json" if view == "label" else "completion region 0/1"
                description = f"synthbench {view}: {what}"
            else:
                data = np.full((count, ds.size, ds.size), fill, np.float32)
                data[z] = lo + (np.asarray(stack[samples], np.float32) + 1.0) * 0.5 * (hi - lo)
                description = f"synthbench {view} {unit} window {lo:g}..{hi:g} clipped; {fill:g}=not synthesized"
            img = view_to_image(data, geometry, record.get("resize"), description)
            (folder / view).mkdir(parents=True, exist_ok=True)
            nib.save(img, str(folder / view / f"{name}.nii.gz"))
        written.append({"volume": name, "source": geometry.name, "slices": sorted(int(v) for v in z)})
    return {
        "written": True, "layout": "nifti/<view>/<volume>.nii.gz", "volumes": written,
        "intensity": unit, "window": [float(lo), float(hi)], "clipped": "values outside the window were clipped",
        "fill_value": fill, "label_coding": list(lut.tolist()),
        "label_coding_note": spec.extra.get("label_coding_note", "class ids"),
    }


@torch.no_grad()
def mean_l1_to_real(synth, data: PreparedDataset, split: str = "test", max_images: int | None = None,
                    batch_size: int = 8, style: str = "none") -> float:
    """Mean ``|generate(onehot) - real|`` over a split, in ``[-1, 1]`` units (for "learns" tests);
    the method's default test time, or with ``style="real"`` the real slice as style image."""
    arrays = data.split(split)
    n = len(arrays) if max_images is None else min(len(arrays), max_images)
    if n == 0:
        raise SynthbenchError(f"split {split!r} is empty", data.root)
    device = next(iter(synth.nets.parameters())).device
    total, count = 0.0, 0
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        real = torch.from_numpy(np.asarray(arrays.image[start:stop], dtype=np.float32)).unsqueeze(1).to(device)
        label = torch.from_numpy(np.asarray(arrays.label[start:stop], dtype=np.int64)).to(device)
        fake = synth.generate(one_hot(label, data.num_classes), style=real if style == "real" else None).float()
        total += float((fake - real).abs().sum())
        count += real.numel()
    return total / count
