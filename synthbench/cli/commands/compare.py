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


# Where the jobs run (docs: README "Running on a cluster"); shared by compare and bench run.
LAUNCHER = typer.Option(None, "--launcher", help="local (default: one job at a time in this process), processes "
                        "(worker processes: one per visible GPU, or per CPU core up to 4; 'gpus' is its older name) "
                        "or slurm (submitit).")
PARALLEL = typer.Option(None, "--parallel", help="Jobs at once: processes: default one per visible GPU, else "
                        "min(cores, 4), at most the cores on CPU; slurm: jobs queued at once (default all).")
PARTITION = typer.Option(None, "--partition", help="Slurm partition.")
TIME = typer.Option(None, "--time", help="Slurm time limit per job in minutes (a run that hits it is requeued and "
                    "resumes from its checkpoint).")
GPUS_PER_NODE = typer.Option(None, "--gpus-per-node", help="Slurm: GPUs of a training job (one DDP process each).")
NODES = typer.Option(None, "--nodes", help="Slurm: nodes of a training job (DDP over nodes x gpus-per-node).")
ACCOUNT = typer.Option(None, "--account", help="Slurm account.")
SBATCH = typer.Option(None, "--sbatch", help="Extra #SBATCH flag KEY=VALUE (repeatable), e.g. qos=high.")


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
    launcher: str = LAUNCHER, parallel: int = PARALLEL, partition: str = PARTITION, time: int = TIME,
    gpus_per_node: int = GPUS_PER_NODE, nodes: int = NODES, account: str = ACCOUNT, sbatch: list[str] = SBATCH,
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
    _run(cfg, _launch_options({}, launcher, parallel, partition, time, gpus_per_node, nodes, account, sbatch))


@bench_app.command("run")
def bench_run(
    suite: Path = typer.Argument(..., help="Suite file, e.g. benchmarks/quick.toml."),
    data: str = typer.Option(None, "--data", help="Data set (prepared or source); required by suites that say so."),
    out: Path = typer.Option(None, "--out", help="Output directory (default: runs/<suite name>)."),
    profile: str = typer.Option(None, "--profile", help=r"Merge the suite's \[profiles.NAME] table (e.g. smoke)."),
    device: str = typer.Option(None, "--device", help="Override the suite's device."),
    launcher: str = LAUNCHER, parallel: int = PARALLEL, partition: str = PARTITION, time: int = TIME,
    gpus_per_node: int = GPUS_PER_NODE, nodes: int = NODES, account: str = ACCOUNT, sbatch: list[str] = SBATCH,
) -> None:
    """Run a benchmark suite (a comparison described in a TOML file; its [launcher] table says
    where the jobs run, the flags override it)."""
    from synthbench.suites import load_suite, suite_config, suite_launcher

    doc = load_suite(suite, profile)
    name = doc.get("suite", {}).get("name", suite.stem)
    cfg = suite_config(doc, out or Path("runs") / name, data, suite)
    if device is not None:
        cfg.device = device
    base = suite_launcher(doc, suite)
    _run(cfg, _launch_options(base, launcher, parallel, partition, time, gpus_per_node, nodes, account, sbatch))


def _launch_options(base: dict, kind, parallel, partition, time_min, gpus_per_node, nodes, account, sbatch):
    """The suite's [launcher] settings (``base``) with the command-line flags that were given over them."""
    from synthbench.errors import SynthbenchError
    from synthbench.jobs.launchers import LaunchOptions

    flags = {"kind": kind, "parallel": parallel, "partition": partition, "time_min": time_min,
             "gpus_per_node": gpus_per_node, "nodes": nodes, "account": account}
    merged = {**base, **{k: v for k, v in flags.items() if v is not None}}
    extra = dict(base.get("sbatch", {}))
    for item in sbatch or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SynthbenchError(f"--sbatch takes KEY=VALUE (e.g. qos=high), got {item!r}")
        extra[key.strip()] = value.strip()
    merged["sbatch"] = extra
    return LaunchOptions(**merged).validate()


def _run(cfg, launch) -> None:
    from synthbench.compare import run_comparison
    from synthbench.engine.interrupts import EXIT_INTERRUPTED
    from synthbench.io import user_errors_from_os

    try:
        with user_errors_from_os(cfg.out_dir):
            outcome = run_comparison(cfg, launch)
    except KeyboardInterrupt as exc:  # RunInterrupted (checkpoint written) or a second Ctrl-C
        err_console.print(f"{str(exc) or 'interrupted'}; run the same command again to resume (finished work is reused)",
                          markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    console.print(f"comparison finished in {outcome.wall_time_s / 60:.1f} min")
    console.print(f"report: {outcome.report_dir / 'report.html'}")
    console.print(f"leaderboard: {outcome.report_dir / 'leaderboard.md'}")
    if outcome.failures or outcome.failed_jobs:  # the report shows them as failed rows; the exit status says it too
        for run in outcome.failures:
            log = outcome.logs.get((run.method, run.seed))
            typer.echo(f"FAILED {run.method} (seed {run.seed}) at {run.failed_step}: {run.error}"
                       + (f" (log: {log})" if log else ""), err=True)
        for job in outcome.failed_jobs:
            typer.echo(f"FAILED {job.job.name}: {job.error}" + (f" (log: {job.log})" if job.log else ""), err=True)
        raise typer.Exit(1)
