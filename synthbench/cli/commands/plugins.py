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


def plugins(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    check: bool = typer.Option(False, "--check", help="Also exit non-zero on warnings (misspelt hooks, "
                               "duplicate entry points, names another plugin shadows)."),
) -> None:
    """List plugins: distribution, version, what each registers, failures and warnings.

    Exit status 1 when a plugin failed or a name is registered by two plugins (with --check,
    also on warnings); every message is printed whole, at any terminal width.
    """
    registry = get_registry()
    registry.load_all()  # import what was registered by path, so that a broken class shows here
    records = list(registry.records.values())
    failed = [r for r in records if r.error]
    clashing = any(registry.conflicts.values())
    warned = [r for r in records if r.warnings or r.clashes]
    if as_json:
        print_json([r.as_dict() for r in records])
    else:
        table = Table(title="synthbench plugins")
        for col in ("plugin", "distribution", "version", "registers", "status"):
            table.add_column(col, overflow="fold")
        for r in records:
            registers = "; ".join(f"{k}: {', '.join(v)}" for k, v in r.registered.items() if v)
            if r.error:
                status = "[red]FAILED[/red]"
            elif r.warnings or r.clashes:
                status = "[yellow]warning[/yellow]"
            else:
                status = "[green]ok[/green]"
            table.add_row(r.key, r.distribution or "-", r.version or "-", registers or "-", status)
        console.print(table)
        # Messages after the table, unwrapped by rich, so no width ever truncates them.
        for r in records:
            lines = ([f"FAILED {r.key} ({r.origin}): {r.error}"] if r.error else [])
            lines += [f"warning {r.key} ({r.origin}): {w}" for w in [*r.warnings, *r.clashes]]
            for line in lines:
                typer.echo(line)
        for message in registry.config_errors:
            typer.echo(f"error: {message}")
    if failed or clashing or registry.config_errors or (check and warned):
        raise typer.Exit(1)


def info(
    method: str = typer.Argument(..., help="Synthesizer name (see 'synthbench plugins')."),
    classes: int = typer.Option(4, "--classes", help="Number of label classes."),
    size: int = typer.Option(None, "--size", help="Image size (pixels, square; default: the protocol's "
                             "image_size with --protocol, else 256). Training uses the data set's size."),
    variant: str = typer.Option(None, "--variant", help="Named variant (e.g. an ablation of 'ours')."),
    protocol: str = typer.Option(None, "--protocol", help="Build the networks exactly as this protocol trains "
                                 "them (quick and smoke: the reduced widths)."),
    option: list[str] = typer.Option(None, "--option", help="Method option key=value (repeatable), as for train."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """A synthesizer's networks with exact parameter counts, its test-time settings and every
    departure from its paper or official code (docs/departures.md), for a class count and size."""
    from synthbench.departures import method_departures
    from synthbench.options import build_options, split_key_values, typed_options

    cls = get_registry().synthesizer(method)
    proto = None
    if protocol is not None:
        from synthbench.engine.protocol import get_protocol

        proto = get_protocol(protocol)
    size = size if size is not None else (proto.image_size if proto is not None else 256)
    explicit = typed_options(cls, split_key_values(option))
    options = build_options(cls, variant, bool(proto and proto.reduced_networks),
                            proto.method_options.get(method) if proto else None, explicit)
    try:
        synth = cls(num_classes=classes, image_size=size, options=options, variant=variant)
    except SynthbenchError:
        raise
    except (ValueError, RuntimeError) as exc:
        raise SynthbenchError(f"{method}: cannot build for {classes} classes at {size}px: {exc}") from exc
    counts = synth.parameter_counts()
    result = {
        "method": method,
        "variant": variant,
        "protocol": proto.name if proto is not None else None,
        "classes": classes,
        "size": size,
        "stages": [s.name for s in synth.stages],
        "variants": sorted(cls.variants),
        "parameters": counts,
        "total": sum(counts.values()),
        "options": synth.options,
        "provenance": get_registry().provenance("synthesizers", method),
        "notes": synth.describe(),
        "test_time": {"default": synth.describe_test_mode(), "modes": {k: dict(v) for k, v in cls.test_modes.items()},
                      "uses_style": bool(getattr(synth, "uses_style", False))},
        "departures": [d.to_dict() for d in method_departures(cls, synth.options)],
    }
    if as_json:
        print_json(result)
        return
    built = f", as protocol {proto.name!r} trains it" if proto is not None else ""
    table = Table(title=f"{method}{f' [{variant}]' if variant else ''}: {classes} classes, {size}x{size}{built}")
    table.add_column("network")
    table.add_column("parameters", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    table.add_row("[bold]total[/bold]", f"[bold]{result['total']:,}[/bold]")
    console.print(table)
    console.print(f"stages: {', '.join(result['stages'])}")
    if result["variants"]:
        console.print(f"variants: {', '.join(result['variants'])}")
    differing = {k: v for k, v in synth.options.items() if cls.default_options().get(k) != v}
    if differing:
        console.print(f"options differing from the defaults: {', '.join(f'{k}={v!r}' for k, v in differing.items())}")
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
