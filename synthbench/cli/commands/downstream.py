"""``synthbench downstream``: the paper's U-Net experiments (Tables III and IV) from the CLI."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from synthbench.cli.console import console
from synthbench.cli.device import DEFAULT_DEVICE, DEVICE_HELP, resolve_device
from synthbench.errors import SynthbenchError

#: The U-Net protocol ``downstream --protocol`` and ``compare --unet-protocol`` default to: the
#: quick one, as ``train`` and ``compare`` default to the quick training protocol. Published
#: numbers use ``default`` (the original U-Net size), as benchmarks/paper.toml does.
DEFAULT_UNET_PROTOCOL = "quick"
UNET_PROTOCOL_HELP = ("U-Net protocol: quick (depth 3, width 8, 300 steps, like the quick training protocol) "
                      "or default (the original U-Net size, 4000 steps; use it for published numbers).")


def register(app: typer.Typer) -> None:
    app.command("downstream")(downstream)


def parse_ratios(text: str) -> tuple[float, ...]:
    """``"0,0.1,0.5"`` (or percentages ``"0,10,50%"``) -> fractions in [0, 1]."""
    ratios = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            value = float(item.rstrip("%")) / (100.0 if item.endswith("%") else 1.0)
        except ValueError as exc:
            raise SynthbenchError(f"--ratios: {item!r} is not a number") from exc
        if not 0.0 <= value <= 1.0:
            raise SynthbenchError(f"--ratios: {item!r} is outside 0..1 (or 0%..100%)")
        ratios.append(value)
    if not ratios:
        raise SynthbenchError("--ratios: no ratio given")
    return tuple(ratios)


def resolve_runs(text: str) -> dict[str, Path]:
    """Comma-separated run or synthesis folders -> ``{method: synthesis folder}``.

    The method is the synthesis record's ``method`` (folder name as fall-back); two folders of
    the same method are told apart by their folder names.
    """
    from synthbench.downstream.sources import open_synthesis

    found: list[tuple[str, Path]] = []
    for item in (t.strip() for t in text.split(",")):
        if item:
            src = open_synthesis(item)
            found.append((src.method, src.path))
    if not found:
        raise SynthbenchError("--runs: no run or synthesis folder given")
    names = [m for m, _ in found]
    out: dict[str, Path] = {}
    for method, path in found:
        name = method if names.count(method) == 1 else f"{method} ({path.parent.name}/{path.name})"
        if name in out:
            raise SynthbenchError(f"--runs: {path} is given twice")
        out[name] = path
    return out


def downstream(
    data: Path = typer.Option(..., "--data", help="Prepared data set (synthbench data prepare)."),
    runs: str = typer.Option(..., "--runs", help="Comma-separated training runs or synthesis folders; the first is swept over all ratios."),
    experiment: str = typer.Option("replace", "--experiment", help="replace (Table III) or add (Table IV)."),
    ratios: str = typer.Option("0,0.1,0.2,0.3,0.4,0.5", "--ratios", help="Synthetic fractions of the real training count."),
    out: Path = typer.Option(Path("downstream"), "--out", help="Output folder (tables, per-configuration records)."),
    protocol: str = typer.Option(DEFAULT_UNET_PROTOCOL, "--protocol", help=UNET_PROTOCOL_HELP),
    steps: int = typer.Option(None, "--steps", help="Override the protocol's number of training steps."),
    folds: int = typer.Option(10, "--folds", help="Folds of the segmentation-test set for mean and 95% CI."),
    seed: int = typer.Option(0, "--seed", help="Seed of the real/synthetic image selection."),
    device: str = typer.Option(DEFAULT_DEVICE, "--device", help=DEVICE_HELP),
    fresh: bool = typer.Option(False, "--fresh", help="Retrain configurations already recorded in --out."),
) -> None:
    """U-Net segmentation with synthetic images replacing or added to real ones (paper Tables III/IV)."""
    from synthbench.downstream.builtin import resolve_protocol
    from synthbench.downstream.experiment import (
        ci_caption,
        paper_table,
        run_experiment,
        table_title,
    )

    if experiment not in ("replace", "add"):
        raise SynthbenchError(f"--experiment must be 'replace' or 'add', got {experiment!r}")
    if steps is not None and steps < 1:
        raise SynthbenchError(f"--steps must be >= 1, got {steps}")
    from synthbench.io import user_errors_from_os

    device = resolve_device(device)
    with user_errors_from_os(out):
        df = run_experiment(
            data, resolve_runs(runs), experiment, parse_ratios(ratios), out, seed=seed,
            protocol=resolve_protocol(protocol, steps), device=device, folds=folds, reuse=not fresh,
        )
    table = paper_table(df, experiment)
    view = Table(title=table_title(experiment), caption=ci_caption(folds))
    view.add_column(table.index.name)
    for cls, metric in table.columns:
        view.add_column(f"{cls}\n{metric}", justify="right")
    for label, row in table.iterrows():
        view.add_row(str(label), *[str(v) for v in row])
    console.print(view)
    console.print(f"tables written to {out / experiment} (results.csv, results.json, table.csv, table.md)")

