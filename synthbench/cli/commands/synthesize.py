"""``synthbench synthesize RUN --data DIR --out OUT``: images + completion from a trained run."""

from __future__ import annotations

from pathlib import Path

import typer

from synthbench.cli.console import console


def register(app: typer.Typer) -> None:
    app.command("synthesize")(synthesize_command)


def synthesize_command(
    run: Path = typer.Argument(..., help="Run directory written by 'synthbench train'."),
    data: Path = typer.Option(..., "--data", help="Prepared data set directory."),
    out: Path = typer.Option(..., "--out", help="Output directory (must not exist)."),
    split: str = typer.Option("test", "--split", help="Split whose label maps are synthesized."),
    augment: int = typer.Option(0, "--augment", help="N augmented label maps per slice (paper's test-time input); 0: the split as is."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per generator call."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N."),
) -> None:
    """Synthesize a split from RUN's final weights and write real/fake/complete/lung-only PNGs."""
    from synthbench.io import user_errors_from_os
    from synthbench.synthesis import synthesize

    with user_errors_from_os(out):
        record = synthesize(run, data, out, split=split, augment=augment, batch_size=batch_size, device=device)
    console.print(f"{record['count']} images ({record['method']}, split {split}, style {record['style_mode']}) -> {out}")
