"""``synthbench compare`` and ``synthbench bench run``."""

from __future__ import annotations

from pathlib import Path

import typer

from synthbench.cli.commands.downstream import DEFAULT_UNET_PROTOCOL, UNET_PROTOCOL_HELP
from synthbench.cli.console import console, err_console
from synthbench.cli.device import DEFAULT_DEVICE, DEVICE_HELP

bench_app = typer.Typer(help="Benchmark suites (benchmarks/*.toml).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.add_typer(bench_app, name="bench")


def _parse_floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    from synthbench.errors import SynthbenchError

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise SynthbenchError(f"--ratios must be comma-separated numbers, got {text!r}") from exc


def compare(
    methods: str = typer.Option(..., "--methods", help="Comma-separated methods, e.g. ours,sean,spade or ours:no_dfm."),
    data: str = typer.Option(None, "--data", help="Prepared data set, or a source to prepare (default: the embedded phantom)."),
    protocol: str = typer.Option("quick", "--protocol", help="Training protocol: paper, quick or smoke."),
    seeds: int = typer.Option(1, "--seeds", help="Train each method this many times (seeds s, s+1, ...)."),
    out: Path = typer.Option(Path("comparison"), "--out", help="Output directory (reused to resume)."),
    experiments: str = typer.Option("replace,add", "--experiments", help="Downstream experiments to run (empty: none)."),
    ratios: str = typer.Option(None, "--ratios", help="Synthetic ratios, e.g. 0,0.1,0.2,0.3,0.4,0.5."),
    unet: str = typer.Option(DEFAULT_UNET_PROTOCOL, "--unet-protocol", help=UNET_PROTOCOL_HELP),
    folds: int = typer.Option(10, "--folds", help="Folds of the test sets for mean and 95% CI (fewer if a split is small)."),
    device: str = typer.Option(DEFAULT_DEVICE, "--device", help=DEVICE_HELP),
    style: str = typer.Option("none", "--style", help="'real': style-based methods (SEAN) reconstruct from the real "
                              "slice (sees the answer; marked in the report). Default 'none': the label map only."),
) -> None:
    """Train, synthesize, evaluate and run the downstream experiments for several methods; write the report.

    A method that fails is reported (a failed row with its reason) and the others finish; the
    command then exits with status 1.
    """
    from synthbench.compare import CompareConfig, parse_methods

    cfg = CompareConfig(
        methods=parse_methods(methods), out_dir=out, data=data, protocol=protocol, seeds=seeds,
        experiments=tuple(e.strip() for e in experiments.split(",") if e.strip()),
        unet_protocol=unet, device=device, folds=folds, style=style,
    )
    if (parsed := _parse_floats(ratios)) is not None:
        cfg.ratios = parsed
    _run(cfg)


@bench_app.command("run")
def bench_run(
    suite: Path = typer.Argument(..., help="Suite file, e.g. benchmarks/quick.toml."),
    data: str = typer.Option(None, "--data", help="Data set (prepared or source); required by suites that say so."),
    out: Path = typer.Option(None, "--out", help="Output directory (default: runs/<suite name>)."),
    profile: str = typer.Option(None, "--profile", help=r"Merge the suite's \[profiles.NAME] table (e.g. smoke)."),
    device: str = typer.Option(None, "--device", help="Override the suite's device."),
) -> None:
    """Run a benchmark suite (a comparison described in a TOML file)."""
    from synthbench.suites import load_suite, suite_config

    doc = load_suite(suite, profile)
    name = doc.get("suite", {}).get("name", suite.stem)
    cfg = suite_config(doc, out or Path("runs") / name, data, suite)
    if device is not None:
        cfg.device = device
    _run(cfg)


def _run(cfg) -> None:
    from synthbench.compare import run_comparison
    from synthbench.engine.interrupts import EXIT_INTERRUPTED
    from synthbench.io import user_errors_from_os

    try:
        with user_errors_from_os(cfg.out_dir):
            outcome = run_comparison(cfg)
    except KeyboardInterrupt as exc:  # RunInterrupted (checkpoint written) or a second Ctrl-C
        err_console.print(f"{exc or 'interrupted'}; run the same command again to resume (finished work is reused)",
                          markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    console.print(f"comparison finished in {outcome.wall_time_s / 60:.1f} min")
    console.print(f"report: {outcome.report_dir / 'report.html'}")
    console.print(f"leaderboard: {outcome.report_dir / 'leaderboard.md'}")
    if outcome.failures:  # the report shows them as failed rows; the exit status says it too
        for run in outcome.failures:
            typer.echo(f"FAILED {run.method} (seed {run.seed}) at {run.failed_step}: {run.error}", err=True)
        raise typer.Exit(1)
