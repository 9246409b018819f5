"""``synthbench plugins`` and ``synthbench info``."""

from __future__ import annotations

import typer
from rich.table import Table

from synthbench.cli.console import console, print_json
from synthbench.errors import SynthbenchError
from synthbench.plugins import get_registry


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
    app.command("info")(info)


def plugins(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List plugins: distribution, version, what each registers, and load failures."""
    records = list(get_registry().records.values())
    if as_json:
        print_json([r.as_dict() for r in records])
        return
    table = Table(title="synthbench plugins")
    for col in ("plugin", "distribution", "version", "registers", "status"):
        table.add_column(col)
    for r in records:
        registers = "; ".join(f"{k}: {', '.join(v)}" for k, v in r.registered.items() if v)
        status = f"[red]FAILED: {r.error}[/red]" if r.error else "[green]ok[/green]"
        table.add_row(r.name, r.distribution or "-", r.version or "-", registers or "-", status)
    console.print(table)


def info(
    method: str = typer.Argument(..., help="Synthesizer name (see 'synthbench plugins')."),
    classes: int = typer.Option(4, "--classes", help="Number of label classes."),
    size: int = typer.Option(256, "--size", help="Image size (pixels, square)."),
    variant: str = typer.Option(None, "--variant", help="Named variant (e.g. an ablation of 'ours')."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """A synthesizer's networks with exact parameter counts, its test-time settings and every
    departure from its paper or official code (docs/departures.md), for a class count and size."""
    from synthbench.departures import method_departures

    cls = get_registry().synthesizer(method)
    try:
        synth = cls(num_classes=classes, image_size=size, variant=variant)
    except SynthbenchError:
        raise
    except (ValueError, RuntimeError) as exc:
        raise SynthbenchError(f"{method}: cannot build for {classes} classes at {size}px: {exc}") from exc
    counts = synth.parameter_counts()
    result = {
        "method": method,
        "variant": variant,
        "classes": classes,
        "size": size,
        "stages": [s.name for s in synth.stages],
        "variants": sorted(cls.variants),
        "parameters": counts,
        "total": sum(counts.values()),
        "options": synth.options,
        "notes": synth.describe(),
        "test_time": {"default": synth.describe_test_mode(), "modes": {k: dict(v) for k, v in cls.test_modes.items()},
                      "uses_style": bool(getattr(synth, "uses_style", False))},
        "departures": [d.to_dict() for d in method_departures(cls, synth.options)],
    }
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{method}{f' [{variant}]' if variant else ''}: {classes} classes, {size}x{size}")
    table.add_column("network")
    table.add_column("parameters", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    table.add_row("[bold]total[/bold]", f"[bold]{result['total']:,}[/bold]")
    console.print(table)
    console.print(f"stages: {', '.join(result['stages'])}")
    if result["variants"]:
        console.print(f"variants: {', '.join(result['variants'])}")
    for key, value in result["notes"].items():
        console.print(f"{key}: {value}")
    console.print(f"test time: {result['test_time']['default']}"
                  + (" (synthesize --style real: the real slice as style image)" if result["test_time"]["uses_style"] else ""))
    if result["departures"]:
        dep = Table(title="departures from the paper / official code (docs/departures.md)")
        for col in ("what", "paper / official code", "synthbench", "option"):
            dep.add_column(col, overflow="fold")
        for d in result["departures"]:
            dep.add_row(d["topic"], d["paper"], d["here"], d["option"] or "-")
        console.print(dep)
