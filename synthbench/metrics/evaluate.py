"""Evaluate folders of PNG images with every metric, on complete and lung-only images.

Paper Sec. "Evaluation" (Table II): FID, PSNR, SSIM, RMSE on *complete* images (synthetic lung
pasted into the real slice) and on *lung-only* images, mean +- 95% CI over 10 folds of the test
set. The two settings are built with :mod:`synthbench.composite`, the single definition:

* ``complete``: ``real`` vs ``composite.complete(fake, real, mask)``; without a mask the fake
  images are used as given (they must already be complete images). ``complete()`` is
  idempotent, so an already-completed fake folder gives the same result.
* ``lung`` (or ``lesion``, named by ``region``: the region the mask marks):
  ``composite.lung_only(real, mask)`` vs ``composite.lung_only(fake, mask)`` (needs a mask
  folder); paired metrics average over the region's pixels only (:mod:`.paired`).

Images are 8-bit gray PNGs (``[-1, 1] <-> 0..255``), matched by file name and taken in natural
file-name order (``2.png`` before ``10.png``; folds are contiguous in that order); mask PNGs mark
the lung region with non-zero pixels. Images stream through in batches: only one feature vector
per image and side (FID/KID/FRD) and one float per image (paired metrics) are kept.

Edge cases, one rule for every metric (docs/metrics.md): an image whose lung mask is empty has
nothing synthesized; it is left out of every metric of every setting, counted in the ``excluded``
column and warned about. Identical pairs are scored like any other pair (PSNR at its 8-bit
ceiling), counted in the ``identical`` column and warned about.

Result rows (tidy :class:`pandas.DataFrame`, :data:`COLUMNS`): ``value +- ci95`` is the headline
with its 95% interval, and ``interval`` says which: ``"folds"`` (paired metrics, the paper's
numbers): the mean of the fold values and the Student-t half-width over them
(:func:`synthbench.stats.mean_ci`); ``"jackknife"`` (FID, KID, FRD): the value on *all* images
and the delete-one-fold jackknife half-width (:func:`synthbench.stats.jackknife_ci`).
``all_images`` is the metric over the whole set, ``fold_values`` the per-fold values (for paired
tests), ``n`` the images scored, ``status`` "ok" or why the metric has no value (e.g. an
optional dependency that is not installed). ``df.attrs`` holds ``conventions`` (per setting,
per metric), ``warnings`` and ``source``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from synthbench import composite
from synthbench.errors import SynthbenchError
from synthbench.io import atomic_path, atomic_write_json
from synthbench.metrics.builtin import DEFAULT_METRICS
from synthbench.metrics.distribution import InceptionMetric
from synthbench.stats import folds as make_folds
from synthbench.stats import jackknife_ci, mean_ci, natural_key

#: Region-only settings, named by the region the mask marks (the data set's ``spec.region_key``).
REGION_SETTINGS = ("lung", "lesion")
SETTINGS = ("complete", *REGION_SETTINGS)
COLUMNS = [
    "setting", "metric", "value", "ci95", "interval", "all_images", "n", "folds", "fold_values",
    "higher_is_better", "excluded", "identical", "status",
]
#: ``interval`` values: how ``value +- ci95`` was formed (module docstring).
INTERVALS = {
    "folds": "mean over folds \u00b1 t(0.975, k-1) s / \u221ak",
    "jackknife": "all images \u00b1 t(0.975, k-1) \u00b7 delete-one-fold jackknife SE",
}


# --------------------------------------------------------------------------- folders
@dataclass
class FolderPair:
    """Matched PNG files of a real and a synthetic folder (and optionally a mask folder)."""

    real_dir: Path
    fake_dir: Path
    mask_dir: Path | None
    names: list[str]
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.names)


def _pngs(directory: Path, what: str) -> dict[str, Path]:
    if not directory.is_dir():
        raise SynthbenchError(f"{what} folder does not exist", directory)
    files = {p.name: p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".png"}
    if not files:
        raise SynthbenchError(f"{what} folder holds no PNG images", directory)
    return files


def _compare_names(ref: dict[str, Path], other: dict[str, Path], ref_dir: Path, other_dir: Path, what: str) -> None:
    if ref.keys() == other.keys():
        return
    missing = sorted(ref.keys() - other.keys())
    extra = sorted(other.keys() - ref.keys())
    parts = [f"{len(other)} images vs {len(ref)} in {ref_dir}"]
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if extra:
        parts.append(f"not in the real folder: {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}")
    raise SynthbenchError(f"{what} images do not match the real images by name ({'; '.join(parts)})", other_dir)


def _image_info(path: Path) -> tuple[str, tuple[int, int]]:
    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except (OSError, SyntaxError) as exc:
        raise SynthbenchError(f"cannot read image ({exc})", path) from exc


def match_folders(real_dir: str | Path, fake_dir: str | Path, mask_dir: str | Path | None = None) -> FolderPair:
    """Match PNGs by file name; check counts, names, one size and 8-bit gray mode (errors name the file)."""
    real_dir, fake_dir = Path(real_dir), Path(fake_dir)
    real = _pngs(real_dir, "real")
    fake = _pngs(fake_dir, "synthetic")
    _compare_names(real, fake, real_dir, fake_dir, "synthetic")
    mask = None
    if mask_dir is not None:
        mask_dir = Path(mask_dir)
        mask = _pngs(mask_dir, "mask")
        _compare_names(real, mask, real_dir, mask_dir, "mask")
    names = sorted(real, key=natural_key)
    ref_mode, size = _image_info(real[names[0]])
    for name in names:
        for what, table in (("real", real), ("synthetic", fake), ("mask", mask)):
            if table is None:
                continue
            mode, sz = _image_info(table[name])
            if sz != size:
                raise SynthbenchError(
                    f"{what} image is {sz[0]}x{sz[1]} but {real[names[0]].name} (real) is {size[0]}x{size[1]}", table[name]
                )
            if mode != "L":
                raise SynthbenchError(f"{what} image has mode {mode}; expected 8-bit grayscale PNG (mode L)", table[name])
    return FolderPair(real_dir, fake_dir, mask_dir, names, size)


def _load(paths: Iterable[Path]) -> np.ndarray:
    arrays = []
    for p in paths:
        try:
            with Image.open(p) as im:
                arrays.append(np.asarray(im, dtype=np.uint8))
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt PNG data
            raise SynthbenchError(f"cannot read image ({exc})", p) from exc
    return np.stack(arrays)[:, None]


def empty_masks(pair: FolderPair, batch_size: int = 256) -> list[str]:
    """Names whose lung mask has no lung pixel (nothing synthesized there)."""
    if pair.mask_dir is None:
        return []
    empty: list[str] = []
    for start in range(0, len(pair), batch_size):
        names = pair.names[start : start + batch_size]
        masks = _load(pair.mask_dir / n for n in names)
        empty += [n for n, m in zip(names, masks, strict=True) if not m.any()]
    return empty


def to_image(u8: np.ndarray) -> torch.Tensor:
    """8-bit PNG values -> float32 in [-1, 1] (inverse of ``round((x + 1) * 127.5)``)."""
    return torch.from_numpy(u8.astype(np.float32) / 127.5 - 1.0)


def iter_batches(pair: FolderPair, batch_size: int):
    """Yield ``(real, fake, mask_or_None)`` tensors, ``[B, 1, H, W]``, in name order."""
    for start in range(0, len(pair), batch_size):
        names = pair.names[start : start + batch_size]
        real = to_image(_load(pair.real_dir / n for n in names))
        fake = to_image(_load(pair.fake_dir / n for n in names))
        mask = torch.from_numpy(_load(pair.mask_dir / n for n in names) > 0) if pair.mask_dir else None
        yield real, fake, mask


def setting_images(setting: str, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor | None):
    """The (real, synthetic) pair a metric sees in ``setting`` (module docstring)."""
    if setting == "complete":
        return real, (composite.complete(fake, real, mask) if mask is not None else fake)
    if setting in REGION_SETTINGS:
        return composite.lung_only(real, mask), composite.lung_only(fake, mask)
    raise SynthbenchError(f"unknown setting {setting!r}; use one of {', '.join(SETTINGS)}")


# --------------------------------------------------------------------------- evaluation
def _build_metrics(names: Sequence[str], device: str, options: dict[str, dict[str, Any]]):
    """``(metrics, unavailable)``: instances of the usable metrics, and ``{name: (cls, reason)}``
    for metrics whose optional dependency is missing (recorded, never computed)."""
    from synthbench.plugins import get_registry

    registry = get_registry()
    built, unavailable = [], {}
    for n in names:
        cls = registry.metric(n)
        reason = getattr(cls, "unavailable_reason", lambda: None)()
        if reason:
            unavailable[n] = (cls, reason)
        else:
            built.append(cls(device=device, **options.get(n, {})))
    return built, unavailable


def _row(setting: str, key: str, metric, value: float, half: float, interval: str, all_images: float,
         n: int, folds: int, fold_values: list[float], excluded: int, identical: int, status: str = "ok") -> dict:
    return {
        "setting": setting, "metric": key, "value": value, "ci95": half, "interval": interval,
        "all_images": all_images, "n": n, "folds": folds, "fold_values": fold_values,
        "higher_is_better": bool(metric.higher_is_better), "excluded": excluded, "identical": identical,
        "status": status,
    }


def _metric_rows(setting: str, m, fold_idx: list[np.ndarray], n: int, excluded: int, identical: int) -> list[dict]:
    """The rows of one metric in one setting: headline, interval, per-fold values (module doc)."""
    overall = m.compute()
    per_fold = m.compute_folds(fold_idx)
    interval = getattr(m, "interval", "folds")
    leave_out = None
    if interval == "jackknife" and len(fold_idx) > 1:
        everything = np.arange(n)
        leave_out = m.compute_folds([np.setdiff1d(everything, idx) for idx in fold_idx])
    rows = []
    for key, value in overall.items():
        fold_values = [float(d[key]) for d in per_fold if key in d]
        finite = [v for v in fold_values if np.isfinite(v)]
        if interval == "jackknife":
            loo = [float(d[key]) for d in leave_out if key in d] if leave_out else []
            head = float(value)
            half = jackknife_ci(loo) if len(loo) == len(fold_idx) and loo else float("nan")
            kind = "jackknife" if loo else "none"
        else:
            head, half = mean_ci(finite) if finite else (float("nan"), float("nan"))
            kind = "folds" if fold_values else "none"
        rows.append(_row(setting, key, m, head, half, kind, float(value), n, len(fold_idx), fold_values,
                         excluded, identical))
    return rows


def evaluate_folders(
    real_dir: str | Path,
    fake_dir: str | Path,
    mask_dir: str | Path | None = None,
    metrics: Sequence[str] | None = None,
    device: str = "cpu",
    folds: int = 10,
    batch_size: int = 32,
    *,
    fold_seed: int | None = None,
    settings: Sequence[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    show_progress: bool = True,
    region: str = "lung",
    feature_cache: str | Path | None = None,
) -> pd.DataFrame:
    """Every metric on complete (and, with a mask, lung-only) images; tidy rows (module docstring).

    ``folds`` folds of the scored images (:func:`synthbench.stats.folds`, contiguous in natural
    file-name order, or shuffled with ``fold_seed``). ``options`` maps a metric name to its
    options (e.g. ``{"fid": {"weights": PATH}, "kid": {"subsets": 100}}``). ``feature_cache``: a
    folder that keeps the real images' Inception features on disk across processes
    (:class:`synthbench.metrics.inception.InceptionFeatures`); None keeps them in memory only.
    """
    names = list(metrics or DEFAULT_METRICS)
    if not names:
        raise SynthbenchError("no metrics requested")
    if batch_size < 1:
        raise SynthbenchError(f"batch size must be >= 1, got {batch_size}")
    pair = match_folders(real_dir, fake_dir, mask_dir)
    if region not in REGION_SETTINGS:
        raise SynthbenchError(f"region must be one of {', '.join(REGION_SETTINGS)}, got {region!r}")
    chosen = list(settings or (("complete", region) if pair.mask_dir else ("complete",)))
    if set(chosen) & set(REGION_SETTINGS) and pair.mask_dir is None:
        raise SynthbenchError(f"{region}-only metrics need a mask folder (--mask)")
    empty = empty_masks(pair)
    if len(empty) == len(pair):
        raise SynthbenchError(f"every {region} mask is empty ({len(pair)} images): nothing was synthesized to evaluate",
                              pair.mask_dir)
    left_out = set(empty)
    scored = FolderPair(pair.real_dir, pair.fake_dir, pair.mask_dir, [n for n in pair.names if n not in left_out],
                        pair.size)
    try:
        fold_idx = make_folds(len(scored), folds, seed=fold_seed)
    except SynthbenchError as exc:
        raise SynthbenchError(f"{exc} ({len(scored)} images scored"
                              f"{f', {len(empty)} with an empty {region} mask left out' if empty else ''}); "
                              "use fewer folds (--folds)") from exc
    options = options or {}
    per_setting, unavailable = {}, {}
    for s in chosen:
        per_setting[s], unavailable = _build_metrics(names, device, options)
    smallest = min(len(f) for f in fold_idx)
    if smallest < 2 and any(m.kind == "distribution" for m in per_setting[chosen[0]]):
        raise SynthbenchError(f"{len(fold_idx)} folds of {len(scored)} images leave {smallest} image in a fold; "
                              f"distribution metrics (FID, KID, FRD) need at least 2 per fold: use at most "
                              f"{len(scored) // 2} folds (--folds)")
    extractor = None
    for ms in per_setting.values():
        for m in ms:
            if isinstance(m, InceptionMetric):
                if extractor is None:
                    extractor = m.extractor  # resolves the weights now: a missing file fails early
                m.use_extractor(extractor)
    identical = dict.fromkeys(chosen, 0)

    from synthbench.cli.console import progress

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if empty:
            warnings.warn(
                f"{len(empty)} of {len(pair)} images have an empty {region} mask (nothing synthesized): left out of "
                f"every metric ({', '.join(empty[:3])}{' ...' if len(empty) > 3 else ''})",
                UserWarning, stacklevel=2,
            )
        for n, (_cls, reason) in unavailable.items():
            warnings.warn(f"metric {n} not computed: {reason}", UserWarning, stacklevel=2)
        with progress(transient=True) as bar:
            task = bar.add_task("evaluating", total=len(scored), visible=show_progress)
            for real, fake, mask in iter_batches(scored, batch_size):
                for setting, ms in per_setting.items():
                    r, f = setting_images(setting, real, fake, mask)
                    region_mask = mask if setting in REGION_SETTINGS else None
                    same = (r == f) if region_mask is None else (r == f) | ~region_mask
                    identical[setting] += int(same.flatten(1).all(dim=1).sum())
                    if extractor is not None and any(isinstance(m, InceptionMetric) for m in ms):
                        fr = extractor(r, cache=True, cache_dir=feature_cache)  # every method has the same reals
                        ff = extractor(f)
                    for m in ms:
                        if isinstance(m, InceptionMetric):
                            m.update_features(fr, ff)
                        else:
                            m.update(r, f, region_mask)
                bar.advance(task, len(real))
        for setting in chosen:
            if identical[setting]:
                warnings.warn(
                    f"{identical[setting]} of {len(scored)} pairs are identical in the {setting} setting "
                    "(scored: RMSE 0, SSIM 1, PSNR at its 8-bit ceiling)", UserWarning, stacklevel=2,
                )
        rows, conventions = [], {}
        for setting, ms in per_setting.items():
            conventions[setting] = {}
            for m in ms:
                rows += _metric_rows(setting, m, fold_idx, len(scored), len(empty), identical[setting])
                conventions[setting][m.name] = m.convention() | {"summary": m.summary}
            for n, (cls, reason) in unavailable.items():
                rows.append(_row(setting, n, cls, float("nan"), float("nan"), "none", float("nan"), len(scored),
                                 len(fold_idx), [], len(empty), identical[setting], status=reason))
                conventions[setting][n] = {"summary": cls.summary, "status": reason}
    # What the user should read: synthbench's own warnings (UserWarning), not library deprecations.
    messages = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))
    for msg in messages:
        warnings.warn(msg, UserWarning, stacklevel=2)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["conventions"] = conventions
    df.attrs["warnings"] = messages
    df.attrs["source"] = {
        "real": str(pair.real_dir),
        "fake": str(pair.fake_dir),
        "mask": str(pair.mask_dir) if pair.mask_dir else None,
        "images": len(scored),
        "excluded_empty_mask": empty,
        "identical_pairs": identical,
        "size": list(pair.size),
        "folds": len(fold_idx),
        "fold_rule": ("contiguous in natural file-name order" if fold_seed is None else f"shuffled, seed {fold_seed}"),
        "intervals": INTERVALS,
        "settings": chosen,
        "region": region if pair.mask_dir else None,
        "device": str(device),
    }
    return df


def save_results(df: pd.DataFrame, out_dir: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``results.csv`` and ``results.json`` (rows + conventions + warnings) atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "results.csv", out_dir / "results.json"
    flat = df.copy()
    flat["fold_values"] = flat["fold_values"].map(json.dumps)
    with atomic_path(csv_path, suffix=".csv") as tmp:
        flat.to_csv(tmp, index=False)
    payload = {
        "results": json.loads(df.to_json(orient="records")),
        "conventions": df.attrs.get("conventions", {}),
        "warnings": df.attrs.get("warnings", []),
        "source": df.attrs.get("source", {}),
        **(extra or {}),
    }
    atomic_write_json(json_path, payload)
    return {"csv": csv_path, "json": json_path}


def load_results(path: str | Path) -> pd.DataFrame:
    """Read ``results.json`` written by :func:`save_results` back into the tidy DataFrame."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SynthbenchError(f"cannot read evaluation results ({exc})", path) from exc
    df = pd.DataFrame(payload.get("results", []), columns=COLUMNS)
    for key in ("conventions", "warnings", "source"):
        df.attrs[key] = payload.get(key)
    return df
