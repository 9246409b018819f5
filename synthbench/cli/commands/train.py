"""``synthbench train METHOD --data DIR``: train one synthesizer with the shared engine."""

from __future__ import annotations

import datetime as _dt
import os
import shlex
from pathlib import Path
from typing import Any

import typer

from synthbench.cli.console import console, err_console
from synthbench.cli.device import DEFAULT_DEVICE, DEVICE_HELP
from synthbench.errors import SynthbenchError
from synthbench.options import parse_literal, split_key_values, typed_options


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def parse_key_values(items: list[str] | None, what: str = "--option") -> dict[str, Any]:
    """``["a=1", "b=(0.5, 0.9)", "c=name"]`` -> ``{"a": 1, "b": (0.5, 0.9), "c": "name"}`` (untyped)."""
    return {key: parse_literal(raw) for key, raw in split_key_values(items, what).items()}


def parse_method_options(method: str, items: list[str] | None) -> dict[str, Any]:
    """``--option key=value`` typed by the method's defaults (:mod:`synthbench.options`)."""
    if not items:
        return {}
    from synthbench.plugins import get_registry

    return typed_options(get_registry().synthesizer(method), split_key_values(items))


def train_command(
    method: str = typer.Argument(..., help="Synthesizer name (see 'synthbench plugins')."),
    data: Path = typer.Option(..., "--data", help="Prepared data set directory ('synthbench data prepare')."),
    protocol: str = typer.Option(None, "--protocol", help="Training protocol: paper, quick (default) or smoke. "
                                 "With --resume the recorded one is used."),
    out: Path = typer.Option(None, "--out", help="Run directory (default runs/<method>-<timestamp>)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default: the protocol's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    variant: str = typer.Option(None, "--variant", help="Named variant of the method (e.g. an ablation)."),
    option: list[str] = typer.Option(None, "--option", help="Method option key=value (repeatable), typed like "
                                     "the option's default: true/false, integer, finite number, text, or "
                                     "comma-separated items (see 'synthbench info METHOD')."),
    set_field: list[str] = typer.Option(None, "--set", help="Protocol field key=value (repeatable), e.g. --set precision=fp32."),
    epochs: int = typer.Option(None, "--epochs", help="Override the protocol's epochs."),
    max_steps: int = typer.Option(None, "--max-steps", help="Cap the plan at this many steps."),
    stop_after: int = typer.Option(None, "--stop-after", help="Stop this invocation after this many steps "
                                   "(checkpointed; --resume continues; not recorded for later invocations)."),
    device: str = typer.Option(DEFAULT_DEVICE, "--device", help=DEVICE_HELP + " --set device=... wins."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train METHOD on a prepared data set; writes a run directory (config, manifest, log, samples, checkpoints).

    Ctrl-C or SIGTERM writes a checkpoint, records the run as interrupted and exits with 130;
    --resume continues it. One process at a time may write a run directory.
    """
    from synthbench.engine import train
    from synthbench.engine.interrupts import EXIT_INTERRUPTED, RunInterrupted
    from synthbench.io import user_errors_from_os

    if out is None:
        if resume:
            raise SynthbenchError("--resume needs --out RUN (the run directory to continue)")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{method}-{stamp}"
    if resume and protocol is not None:
        _check_resumed_protocol(out, protocol)
    overrides = parse_key_values(set_field, "--set")
    for key, value in (("epochs", epochs), ("max_steps", max_steps), ("stop_after_steps", stop_after)):
        if value is not None:
            overrides[key] = value
    overrides.setdefault("device", device)
    method_options = parse_method_options(method, option) or None
    from synthbench.plugins import get_registry

    get_registry().synthesizer(method)  # an unknown or ambiguous method: its one-line error, before anything else
    if not resume and not (out.is_dir() and any(out.iterdir())):  # (a non-empty --out is refused by train())
        err_console.print(size_message(data, protocol or "quick", overrides), markup=False, highlight=False,
                          soft_wrap=True)
    resume_hint = f"synthbench train {shlex.quote(method)} --data {shlex.quote(str(data))} --out {shlex.quote(str(out))} --resume"
    try:
        with user_errors_from_os(out):
            result = train(
                method,
                data,
                out,
                protocol=protocol or "quick",
                seed=seed,
                variant=variant,
                options=method_options,
                overrides=overrides or None,
                resume=resume,
                show_progress=not quiet,
            )
    except RunInterrupted as exc:
        err_console.print(f"interrupted by {exc.signal_name} after step {exc.step}, checkpoint written; "
                          f"resume with: {resume_hint}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted at once (no new checkpoint); resume from the last one with: {resume_hint}",
                          markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the run's summary is rank 0's alone
        return
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.final_losses.items())
    console.print(
        f"{result.status}: {steps_text(result.steps, result.run_dir)} in {result.wall_time_s:.1f} s "
        f"({result.images_per_second:.1f} img/s); final losses: {losses or '-'}", soft_wrap=True
    )
    console.print(f"run directory: {result.run_dir}")


def size_message(data: Path, protocol: str, overrides: dict[str, Any]) -> str:
    """Which image size the run trains at, and why: always the prepared data's size; the
    protocol's ``image_size`` is the size ``compare`` prepares data at, not a resize."""
    from synthbench.data.prepared import PreparedDataset
    from synthbench.engine.protocol import get_protocol

    size = PreparedDataset(data).size
    named = get_protocol(protocol, overrides).image_size
    if named == size:
        return f"training at {size} px: the prepared data's size, as protocol {protocol!r} names"
    return (f"training at {size} px, the prepared data's size: protocol {protocol!r} names {named} px, but a run trains "
            f"on the slices as prepared (the protocol's size is what 'compare' prepares data at); to train at "
            f"{named} px, prepare the data with --size {named}")


def steps_text(steps: int, run_dir: Path) -> str:
    """``N steps of batch B = I images, F of one epoch over C training images`` from the run's
    config.json (the bare step count when it records no batch or count)."""
    from synthbench.engine import rundir

    config = rundir.read_json(Path(run_dir) / "config.json")
    batch = config.get("resolved", {}).get("global_batch_size")
    count = config.get("data", {}).get("train_count")
    if not batch or not count:
        return f"{steps} steps"
    seen = steps * batch
    epochs = seen / count
    share = f"{epochs:.3g} of one epoch" if epochs < 1 else f"{epochs:.3g} epochs"
    return f"{steps:,} steps of batch {batch} = {seen:,} images, {share} over {count:,} training images"


def _check_resumed_protocol(out: Path, protocol: str) -> None:
    """``--protocol`` with ``--resume`` must name the recorded protocol (it cannot change)."""
    from synthbench.engine import rundir

    config_path = out / "config.json"
    if not config_path.is_file():
        return  # train() says what is wrong with the directory
    recorded = rundir.read_json(config_path).get("protocol", {}).get("name")
    if recorded != protocol:
        raise SynthbenchError(f"--protocol {protocol} with --resume: the run was trained with protocol {recorded!r}, "
                              "which --resume keeps (omit --protocol)", config_path)
