"""``synthbench synthesize RUN --data DIR --out OUT``: images + completion from a trained run."""

from __future__ import annotations

from pathlib import Path

import typer

from synthbench.cli.console import console
from synthbench.cli.device import DEFAULT_DEVICE, DEVICE_HELP, resolve_device


def register(app: typer.Typer) -> None:
    app.command("synthesize")(synthesize_command)


def synthesize_command(
    run: Path = typer.Argument(..., help="Run directory written by 'synthbench train'."),
    data: Path = typer.Option(..., "--data", help="Prepared data set directory."),
    out: Path = typer.Option(..., "--out", help="Output directory (must not exist)."),
    split: str = typer.Option("test", "--split", help="Split whose label maps are synthesized."),
    augment: int = typer.Option(0, "--augment", help="N augmented label maps per slice (paper's test-time input); 0: the split as is."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per generator call."),
    device: str = typer.Option(DEFAULT_DEVICE, "--device", help=DEVICE_HELP),
    style: str = typer.Option(
        "none", "--style",
        help="Style image of style-based methods (SEAN): 'none' (default; SEAN uses its per-class mean style "
        "codes) or 'real' (the real target slice: reconstruction, the method sees the answer; reports mark it)."),
    test_mode: list[str] = typer.Option(
        [], "--test-mode", help="NAME=VALUE: a test-time setting of the method (e.g. pix2pix mode=eval); repeatable."),
    seed: int = typer.Option(0, "--seed", help="Seed of torch's RNG during synthesis (dropout, noise injection)."),
) -> None:
    """Synthesize a split from RUN's final weights and write real/fake/complete/lung-only PNGs."""
    from synthbench.errors import SynthbenchError
    from synthbench.io import user_errors_from_os
    from synthbench.synthesis import synthesize

    modes = {}
    for item in test_mode:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SynthbenchError(f"--test-mode expects NAME=VALUE, got {item!r}")
        modes[name.strip()] = value.strip()
    with user_errors_from_os(out):
        record = synthesize(run, data, out, split=split, augment=augment, batch_size=batch_size,
                            device=resolve_device(device),
                            style=style, test_mode=modes, seed=seed)
    console.print(f"{record['count']} images ({record['method']}, split {split}; test time: {record['test_time']}) -> {out}")
