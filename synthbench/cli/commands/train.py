"""``synthbench train METHOD --data DIR``: train one synthesizer with the shared engine."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import typer

from synthbench.cli.console import console
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
    protocol: str = typer.Option("quick", "--protocol", help="Training protocol: paper, quick or smoke."),
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
    stop_after: int = typer.Option(None, "--stop-after", help="Stop after this many steps (checkpointed; --resume continues)."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train METHOD on a prepared data set; writes a run directory (config, manifest, log, samples, checkpoints)."""
    from synthbench.engine import train

    if out is None:
        if resume:
            raise SynthbenchError("--resume needs --out RUN (the run directory to continue)")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{method}-{stamp}"
    overrides = parse_key_values(set_field, "--set")
    for key, value in (("epochs", epochs), ("max_steps", max_steps), ("stop_after_steps", stop_after), ("device", device)):
        if value is not None:
            overrides[key] = value
    result = train(
        method,
        data,
        out,
        protocol=protocol,
        seed=seed,
        variant=variant,
        options=parse_method_options(method, option) or None,
        overrides=overrides or None,
        resume=resume,
        show_progress=not quiet,
    )
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.final_losses.items())
    console.print(
        f"{result.status}: {result.steps} steps, {result.epochs} epochs in {result.wall_time_s:.1f} s "
        f"({result.images_per_second:.1f} img/s); final losses: {losses or '-'}"
    )
    console.print(f"run directory: {result.run_dir}")
