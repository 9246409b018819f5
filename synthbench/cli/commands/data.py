"""``synthbench data prepare | info | preview`` (paper Sec. "Data and preprocessing", Table I)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import typer
from rich.table import Table

from synthbench.cli.console import console, err_console, print_json

data_app = typer.Typer(help="Prepare, inspect and preview data sets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command("prepare")
def prepare_cmd(
    source: str = typer.Argument(..., help="'phantom', a MedSeg NIfTI folder (rp_im/, rp_lung_msk/, rp_msk/), a folder of images, NIfTI or DICOM series with a config, or the shared real-slices folder."),
    out: Path = typer.Option(..., "--out", help="Output directory of the prepared data set."),
    size: int = typer.Option(512, "--size", help="Slice size in pixels (paper: 512)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of every augmented sample."),
    train_factor: int = typer.Option(40, "--train-factor", help="Augmented copies per train slice (paper: 300 -> 12,000, x40)."),
    test_factor: int = typer.Option(140, "--test-factor", help="Augmented copies per test slice (paper: 73 -> 10,220, x140)."),
    config: Path = typer.Option(None, "--config", help="Folder-layout config (JSON or TOML)."),
    keep_all_slices: bool = typer.Option(False, "--keep-all-slices", help="Keep slices without infection too."),
    patients: int = typer.Option(None, "--patients", help="Phantom only: number of patients (default 9)."),
    slices_per_patient: int = typer.Option(None, "--slices-per-patient", help="Phantom only: slices per patient (default 92)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    workers: int = typer.Option(0, "--workers", help="Augmentation processes (0: one per core); the output is identical."),
    effusion: str = typer.Option(None, "--effusion", help="MedSeg only: pleural effusion becomes 'background' (default), 'lung' or its own 'class'."),
    resize: str = typer.Option("pad", "--resize", help="Non-square slices: 'pad' (keep the aspect ratio, pad with background) or 'stretch'."),
    slice_split: bool = typer.Option(False, "--slice-split", help="Split slices, not patients (fewer than 3 patients only; recorded as a warning)."),
) -> None:
    """Preprocess, split and augment SOURCE into a prepared data set."""
    from synthbench.data.prepare import PrepareOptions, prepare, resolve_source
    from synthbench.errors import SynthbenchError

    if source != "phantom" and (patients is not None or slices_per_patient is not None):
        raise SynthbenchError("--patients and --slices-per-patient apply to the phantom source only")
    kwargs = {k: v for k, v in (("patients", patients), ("slices_per_patient", slices_per_patient)) if v is not None}
    if out.exists() and not overwrite:
        raise SynthbenchError("output directory already exists (use --overwrite to replace it)", out)
    src = resolve_source(source, size, seed, config=config, effusion=effusion, **kwargs)
    options = PrepareOptions(size=size, seed=seed, train_factor=train_factor, test_factor=test_factor,
                             keep_all_slices=keep_all_slices, workers=workers, resize=resize, slice_split=slice_split)
    from synthbench.io import user_errors_from_os

    t0 = time.perf_counter()
    with user_errors_from_os(out), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        digest = prepare(src, out, options, overwrite=overwrite, show_progress=True,
                         say=lambda text: err_console.print(text, markup=False, highlight=False, soft_wrap=True))
    for w in caught:
        err_console.print(f"[yellow]warning:[/yellow] {w.message}")
    err_console.print(f"prepared {src.spec.name} in {time.perf_counter() - t0:.1f} s")
    console.print(f"{out}  content hash {digest}", soft_wrap=True)


@data_app.command("verify")
def verify_cmd(
    directory: Path = typer.Argument(..., help="Prepared data set directory."),
) -> None:
    """Check every file of a prepared data set against the sha256 recorded when it was prepared."""
    from synthbench.data.prepared import PreparedDataset

    ds = PreparedDataset(directory)
    checked = ds.verify_files(show_progress=True)
    console.print(f"{directory}: ok, content hash {ds.content_hash} ({checked})", soft_wrap=True)


@data_app.command("info")
def info_cmd(
    directory: Path = typer.Argument(..., help="Prepared data set directory."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Counts per split before and after augmentation (paper Table I), patients, class fractions."""
    from synthbench.data.prepared import PreparedDataset
    from synthbench.data.preview import summarize

    summary = summarize(PreparedDataset(directory))
    if as_json:
        print_json(summary)
        return
    console.print(f"[bold]{summary['name']}[/bold]  {summary['size']}x{summary['size']}  intensity {summary['intensity']}  "
                  f"hash {summary['content_hash'][:16]}")
    console.print(f"region: {summary['region']}")
    for message in summary["warnings"]:
        err_console.print(f"[yellow]warning:[/yellow] {message}")
    t1 = Table(title="slices before / after augmentation (Table I)")
    for col in ("split", "before", "after"):
        t1.add_column(col, justify="right" if col != "split" else "left")
    for row in summary["table_i"]:
        t1.add_row(row["split"], f"{row['before']:,}", f"{row['after']:,}")
    console.print(t1)
    t2 = Table(title="splits")
    t2.add_column("split")
    t2.add_column("count", justify="right")
    t2.add_column("patients")
    for c in summary["classes"]:
        t2.add_column(c, justify="right")
    for name, s in summary["splits"].items():
        t2.add_row(name, f"{s['count']:,}", str(len(s['patients'])),
                   *[f"{100 * s['class_fraction'][c]:.2f}%" for c in summary["classes"]])
    console.print(t2)


@data_app.command("preview")
def preview_cmd(
    directory: Path = typer.Argument(..., help="Prepared data set directory."),
    out: Path = typer.Option(..., "--out", help="Output PNG file."),
    split: str = typer.Option("train", "--split", help="Split to show."),
    n: int = typer.Option(16, "--n", help="Number of slices."),
    seed: int = typer.Option(0, "--seed", help="Which slices (random choice, seeded)."),
) -> None:
    """A grid of slices with coloured label overlays (lung red, ground-glass blue, consolidation green)."""
    from synthbench.data.prepared import PreparedDataset
    from synthbench.data.preview import preview_grid

    path = preview_grid(PreparedDataset(directory), split, n, out, seed=seed)
    console.print(f"wrote {path}")
