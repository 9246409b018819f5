"""Synthesize a split from a trained run, plus the paper's completion step (Sec. "Task").

``synthesize(run_dir, data_dir, out_dir, split="test", augment=0)`` feeds every label map of the
split (or ``augment`` augmented label maps per slice: the paper's test-time input, made with the
data pipeline's own transforms, :mod:`synthbench.data.augment`, the real slice transformed
jointly so that completion still has a real counterpart) to the run's generator and writes::

    OUT/synthesis.json          run, method, split, augment, count, style mode, data hash, size, spec
    OUT/label/NNNNN.png         label map (class ids)
    OUT/mask/NNNNN.png          lung region (0/255)
    OUT/real/NNNNN.png          real slice
    OUT/fake/NNNNN.png          raw synthetic slice
    OUT/complete/NNNNN.png      completion: synthetic lung region pasted into the real slice
    OUT/lung_real/NNNNN.png     lung-only real (composite.lung_only)
    OUT/lung_fake/NNNNN.png     lung-only synthetic
    OUT/nifti/<view>.nii.gz     when the data set came from NIfTI: each view above (label, mask,
                                real, fake, complete, lung_real, lung_fake) as one volume,
                                H x W x N in the synthesis order, intensities in [-1, 1]
                                (labels and mask as uint8), identity affine (slices are samples,
                                not a contiguous scan)

Images are 8-bit gray with ``round((x + 1) * 127.5)``. Completion and lung-only views come from
:mod:`synthbench.composite` (the one definition). ``style``: every method receives the real
slice as ``style`` in ``generate``; only style-based methods (attribute ``uses_style``) use it,
and ``synthesis.json`` records the mode. The directory is written atomically (temporary name,
renamed when complete). ``synthesis.json`` also records the cost of sampling: ``sampling`` (the
synthesizer's :meth:`~synthbench.Synthesizer.sampling`: sampler and network evaluations per
image), ``generate_seconds`` (wall time inside ``generate``, CUDA synchronised) and
``seconds_per_image``; and ``seed``, the torch seed set before the first batch (stochastic
samplers such as diffusion repeat exactly; the caller's RNG state is restored afterwards).
With ``augment`` the augmented samples use seeds
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
from synthbench.synthesizer import one_hot

FOLDERS = ("label", "mask", "real", "fake", "complete", "lung_real", "lung_fake")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``[-1, 1]`` -> ``0..255`` by ``round((x + 1) * 127.5)`` (docs/architecture.md)."""
    return np.clip(np.round((np.asarray(image, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def style_mode(synth) -> str:
    """'real' when the method uses the real slice as its style image, else 'none'."""
    return "real" if getattr(synth, "uses_style", False) else "none"


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
    seed: int = 0,
) -> dict[str, Any]:
    """Write the synthesis directory (see the module docstring); return the ``synthesis.json`` record."""
    from synthbench.engine import load_synthesizer

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise SynthbenchError("output directory already exists (choose another --out)", out_dir)
    if augment < 0 or batch_size < 1:
        raise SynthbenchError("--augment must be >= 0 and --batch-size >= 1")
    ds = PreparedDataset(data_dir)
    if synth is None:
        synth = load_synthesizer(run_dir, device=device)
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

    nifti = ds.manifest.get("source", {}).get("format") == "nifti"
    generate_seconds = 0.0
    rng = torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else [])
    with rng, atomic_directory(out_dir, overwrite=overwrite) as tmp:
        torch.manual_seed(seed)
        for folder in FOLDERS:
            (tmp / folder).mkdir()
        volumes = _staged_volumes(tmp / ".staging", n, ds.size) if nifti else {}
        with progress() as bar:
            task = bar.add_task(f"synthesizing {split}", total=n) if show_progress else None
            for start in range(0, n, batch_size):
                label = torch.from_numpy(np.asarray(labels[start:start + batch_size], dtype=np.int64)).to(dev)
                real = torch.from_numpy(images[start:start + batch_size]).unsqueeze(1).to(dev)
                lung = ds.lung_mask(label)
                t0 = time.perf_counter()
                fake = synth.generate(one_hot(label, ds.num_classes), style=real).float().clamp(-1, 1)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                generate_seconds += time.perf_counter() - t0
                views = {
                    "fake": fake, "real": real, "complete": complete(fake, real, lung),
                    "lung_real": lung_only(real, lung), "lung_fake": lung_only(fake, lung),
                }
                arrays = {key: tensor[:, 0].cpu().numpy() for key, tensor in views.items()}
                arrays["label"] = label.cpu().numpy().astype(np.uint8)
                arrays["mask"] = lung[:, 0].cpu().numpy().astype(np.uint8)
                for j in range(label.shape[0]):
                    name = f"{start + j:05d}.png"
                    _save(arrays["label"][j], tmp / "label" / name)
                    _save(arrays["mask"][j] * 255, tmp / "mask" / name)
                    for key in views:
                        _save(to_uint8(arrays[key][j]), tmp / key / name)
                for key, volume in volumes.items():
                    volume[start:start + label.shape[0]] = arrays[key]
                if task is not None:
                    bar.update(task, advance=label.shape[0])
        if nifti:
            _save_volumes(volumes, tmp / "nifti")
            shutil.rmtree(tmp / ".staging")
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
            "style_mode": style_mode(synth),
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


def _staged_volumes(folder: Path, n: int, size: int) -> dict[str, np.ndarray]:
    """Memory-mapped ``[N, H, W]`` arrays, one per view, filled batch by batch (no RAM growth)."""
    folder.mkdir()
    return {
        view: np.lib.format.open_memmap(folder / f"{view}.npy", mode="w+", shape=(n, size, size),
                                        dtype=np.uint8 if view in ("label", "mask") else np.float32)
        for view in FOLDERS
    }


def _save_volumes(volumes: dict[str, np.ndarray], folder: Path) -> None:
    """Each view as one H x W x N NIfTI volume (float32 images, uint8 labels and mask)."""
    import nibabel as nib

    folder.mkdir()
    for view, stack in volumes.items():
        stack.flush()
        nib.save(nib.Nifti1Image(np.transpose(stack, (1, 2, 0)), np.eye(4)), str(folder / f"{view}.nii.gz"))


@torch.no_grad()
def mean_l1_to_real(synth, data: PreparedDataset, split: str = "test", max_images: int | None = None,
                    batch_size: int = 8) -> float:
    """Mean ``|generate(onehot) - real|`` over a split, in ``[-1, 1]`` units (for "learns" tests)."""
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
        fake = synth.generate(one_hot(label, data.num_classes), style=real).float()
        total += float((fake - real).abs().sum())
        count += real.numel()
    return total / count
