"""What a reader needs beside the numbers: the settings table, the units and definitions of every
metric, and which warning concerns which table.

:func:`comparison_settings` collects, when ``synthbench compare`` builds its results, what the
report's settings table shows (training protocol, U-Net protocol, seeds, data, FID weights);
:func:`settings_rows` turns it into rows, falling back on what the runs recorded (config.json,
manifest.json) for results built without it. Both leaderboard.md and report.html render the
same rows and texts, so they never disagree.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from synthbench.report.results import ComparisonResults

#: Fields of the training protocol shown in their own rows (the rest go into "other fields").
PROTOCOL_FIELDS = ("epochs", "batch_size", "lr", "lr_schedule", "decay_start", "lr_scope", "image_size",
                   "max_steps", "precision", "reduced_networks", "deterministic")
#: Fields of the U-Net protocol shown (the rest are bookkeeping such as log_every).
UNET_FIELDS = ("depth", "width", "batch_norm", "steps", "batch_size", "lr", "betas", "weight_decay", "loss", "augment",
               "seed", "memory_format")

#: Units and definitions of the image-quality metrics (docs/metrics.md has the formulas).
QUALITY_DEFINITIONS = (
    ("complete", "the synthetic lung region pasted into the real slice (synthetic inside the region mask, real "
                 "outside), compared with the real slice over every pixel"),
    ("lung (region-only)", "the data set's region only (lung, or lesion for a lesion region): PSNR, RMSE and lung "
                           "SSIM average over the region's pixels; FID/KID/FRD see region-only images (every other "
                           "pixel black)"),
    ("PSNR", "in dB: 10 log10(R^2 / MSE) with data range R = 2 on intensities in [-1, 1] (255 gray levels); an "
             "identical pair scores the 8-bit ceiling"),
    ("RMSE", "sqrt(MSE) / R: on the [0, 1] intensity scale (x 255 = gray levels); PSNR = -20 log10 RMSE"),
    ("SSIM", "unitless, at most 1 (Gaussian window, sigma 1.5); lung SSIM averages the SSIM map over the region's "
             "pixels, SSIM (paper) is the whole region-only image"),
    ("FID, KID", "unitless distances between Inception-v3 pool features (pytorch-fid, 2048-d) of all test images; "
                 "FRD is a log-scaled distance of radiomics features"),
    ("why complete PSNR > lung PSNR", "outside the region the complete image equals the real slice, so its MSE is "
                                      "the region's MSE diluted by identical pixels: per image, complete PSNR = lung "
                                      "PSNR + 10 log10(all pixels / region pixels)"),
)

#: Units and definitions of the downstream scores (synthbench/downstream/scores.py).
DOWNSTREAM_DEFINITIONS = (
    ("Dice (%)", "100 x 2 TP / (2 TP + FP + FN), pixel counts pooled within each test fold (the paper's Dice, "
                 "Tables III/IV in %)"),
    ("sensitivity, specificity (%)", "100 x TP / (TP + FN) and 100 x TN / (TN + FP), pooled the same way"),
    ("classes", "the data set's own class names; infection = every lesion class together"),
    ("synthetic", "synthetic images as a share of the real training count (replace: instead of real images; add: "
                  "on top of all real ones); 0% is the real-only baseline"),
)

#: The paper's class names -> the names used in every table of the report (measured and published).
PAPER_CLASS_NAMES = {"GGO": "ground_glass", "consolidation": "consolidation", "infection": "infection"}
CLASS_NAME_NOTE = ("Class names: ground_glass is the paper's GGO (ground-glass opacity); consolidation as in the "
                   "paper; infection = every lesion class together (the paper's infection). Measured and published "
                   "tables use these names.")

#: Words that tie a comparison note to the table it concerns.
_QUALITY_WORDS = ("FID", "KID", "FRD", "synthesis-test", "mask", "pairs are identical", "metric ")
_DOWNSTREAM_WORDS = ("segmentation-test", "U-Net", "Dice", "downstream")


def comparison_settings(protocol: Any, unet: Any, seeds: list[int], data: Any, quality: list[pd.DataFrame],
                        device: str) -> dict[str, Any]:
    """What ``synthbench compare`` ran with, for the report's settings table.

    ``protocol``/``unet``: the training and U-Net protocol objects (``to_dict``); ``data``: the
    :class:`~synthbench.data.prepared.PreparedDataset`; ``quality``: the evaluation frames (their
    ``attrs["conventions"]`` record the FID Inception weights).
    """
    splits = {name: int(split.get("count", 0)) for name, split in data.manifest.get("splits", {}).items()}
    return {
        "protocol": protocol.to_dict(),
        "unet": unet.to_dict(device=device),
        "seeds": [int(s) for s in seeds],
        "device": str(device),
        "data": {"size": int(data.size), "splits": splits, "spec": data.spec.name},
        "fid_weights": fid_weights(quality),
    }


def fid_weights(frames: list[pd.DataFrame]) -> dict[str, Any]:
    """The Inception weights record (name, source, sha256) the evaluations used, or ``{}``."""
    for frame in frames:
        for per_metric in (frame.attrs.get("conventions") or {}).values():
            for name in ("fid", "kid"):
                weights = (per_metric.get(name) or {}).get("weights")
                if isinstance(weights, dict) and weights.get("sha256"):
                    return {k: weights.get(k) for k in ("name", "source", "sha256")}
    return {}


def _fields(record: dict[str, Any], names: tuple[str, ...]) -> str:
    return ", ".join(f"{k} {_value(record[k])}" for k in names if k in record)


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return "none" if value is None else str(value)


def _hardware(manifest: dict[str, Any]) -> str | None:
    hw = manifest.get("hardware")
    if not isinstance(hw, dict):
        return str(hw) if hw else None
    if hw.get("gpu"):
        return f"{hw['gpu']}" + (f" x{hw['gpu_count']}" if hw.get("gpu_count", 1) != 1 else "")
    cpu = hw.get("cpu") or hw.get("device") or "cpu"
    return f"{cpu}" + (f", {hw['cpu_cores']} cores" if hw.get("cpu_cores") else "") + (
        f", {hw['cpus']} CPUs" if hw.get("cpus") else "")


def settings_rows(results: ComparisonResults) -> list[tuple[str, str]]:
    """(setting, value) rows of the report's settings table; "not recorded" where nothing says."""
    settings = results.settings
    config = next((r.config() for r in results.runs if r.config()), {})
    protocol = settings.get("protocol") or config.get("protocol") or {}
    rows: list[tuple[str, str]] = [("training protocol", f"{results.protocol}")]
    if protocol:
        rows.append(("protocol fields", _fields(protocol, PROTOCOL_FIELDS)))
        if protocol.get("image_size") and settings.get("data", {}).get("size") not in (None, protocol["image_size"]):
            rows.append(("image size", f"{settings['data']['size']} px (the prepared data's size; the protocol's "
                                       f"{protocol['image_size']} px applies only when the comparison prepares the data)"))
    seeds = settings.get("seeds") or sorted({r.seed for r in results.runs})
    rows.append(("seeds", ", ".join(str(s) for s in seeds) if seeds else "not recorded"))
    rows.append(("data set", results.dataset))
    data = settings.get("data") or {}
    if data.get("splits"):
        rows.append(("images per split", ", ".join(f"{k} {v:,}" for k, v in data["splits"].items())))
    for key, label in (("image_quality", "image quality (Table II)"), ("downstream", "downstream (Tables III/IV)")):
        if key in results.image_counts():
            rows.append((label, results.image_counts()[key]))
    unet = settings.get("unet")
    if unet:
        rows.append(("U-Net", _fields(unet, UNET_FIELDS)))
    elif len(results.downstream):
        rows.append(("U-Net", "not recorded"))
    weights = settings.get("fid_weights") or {}
    rows.append(("FID Inception weights", f"sha256 {weights['sha256']} ({weights.get('name') or '?'}, "
                                          f"{weights.get('source') or '?'})" if weights.get("sha256") else "not recorded"))
    hardware = list(dict.fromkeys(h for h in (_hardware(r.manifest()) for r in results.runs) if h))
    device = settings.get("device")
    rows.append(("hardware", "; ".join(hardware) + (f" (device {device})" if device else "")
                 if hardware else (f"device {device}" if device else "not recorded")))
    rows.append(("data hash", results.data_hash))
    return rows


def notes_for(results: ComparisonResults, table: str) -> list[str]:
    """The comparison's notes (small samples, left-out images, ...) that concern ``table``
    ("image_quality", "downstream", or "general" for the rest)."""
    out = []
    for note in results.notes:
        if any(w in note for w in _DOWNSTREAM_WORDS):
            kind = "downstream"
        elif any(w in note for w in _QUALITY_WORDS):
            kind = "image_quality"
        else:
            kind = "general"
        if kind == table:
            out.append(note)
    return out
