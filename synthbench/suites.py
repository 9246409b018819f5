"""Benchmark suites: TOML files in ``benchmarks/`` that describe a comparison.

A suite file has a ``[compare]`` table whose keys are :class:`synthbench.compare.CompareConfig`
fields (``methods`` as a list of ``name`` or ``name:variant``), and optional
``[profiles.NAME]`` tables merged over it by ``--profile NAME`` (e.g. ``smoke`` for tests)::

    [suite]
    name = "quick"
    description = "..."

    [compare]
    methods = ["ours", "pix2pix", "spade"]
    protocol = "quick"
    data_options = { patients = 12, slices_per_patient = 6 }

    [profiles.smoke.compare]
    protocol = "smoke"

A relative ``data_options.config`` (a data config, :mod:`synthbench.data.folder`) is read
relative to the suite file, so a suite can ship its data description beside it.
An optional ``[launcher]`` table says where the jobs run (:class:`synthbench.jobs.launchers.LaunchOptions`
fields; the command-line flags override it)::

    [launcher]
    kind = "slurm"
    partition = "gpu"
    time_min = 720
    gpus_per_node = 2
    sbatch = { qos = "normal" }
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import tomllib

from synthbench.compare import CompareConfig, parse_methods
from synthbench.errors import SynthbenchError

_LIST_FIELDS = ("experiments", "ratios", "metrics")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_suite(path: str | Path, profile: str | None = None) -> dict[str, Any]:
    """Read a suite file (with ``profile`` merged in); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise SynthbenchError("suite file not found", path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SynthbenchError(f"invalid TOML: {exc}", path) from exc
    if "compare" not in doc:
        raise SynthbenchError("suite has no [compare] table", path)
    if profile is not None:
        profiles = doc.get("profiles", {})
        if profile not in profiles:
            raise SynthbenchError(f"no profile {profile!r} (known: {', '.join(profiles) or 'none'})", path)
        doc = _merge(doc, profiles[profile])
    _resolve_data_config(doc, path)
    return doc


def _resolve_data_config(doc: dict[str, Any], path: Path) -> None:
    """A relative ``[compare] data_options.config`` names a file beside the suite, not in the working directory."""
    options = doc["compare"].get("data_options")
    config = options.get("config") if isinstance(options, dict) else None
    if isinstance(config, str) and not Path(config).is_absolute():
        resolved = (path.parent / config).resolve()
        if not resolved.is_file():
            raise SynthbenchError(f"data_options.config: no such file {resolved}", path)
        options["config"] = str(resolved)


def suite_config(doc: dict[str, Any], out_dir: Path, data: str | None, path: str | Path = "suite") -> CompareConfig:
    """Turn a suite document into a :class:`CompareConfig` (``data`` from the command line wins)."""
    compare = dict(doc["compare"])
    known = set(CompareConfig.__dataclass_fields__) - {"methods", "out_dir"}
    unknown = sorted(set(compare) - known - {"methods", "requires_data"})
    if unknown:
        raise SynthbenchError(f"unknown [compare] keys {unknown} (known: {', '.join(sorted(known))})", path)
    if "methods" not in compare:
        raise SynthbenchError("[compare] needs 'methods'", path)
    requires_data = compare.pop("requires_data", False)
    if data is not None:
        compare["data"] = data
    if requires_data and not compare.get("data"):
        raise SynthbenchError("this suite runs on a data set given on the command line: add --data DIR", path)
    for key in _LIST_FIELDS:
        if key in compare and compare[key] is not None:
            compare[key] = tuple(compare[key])
    methods = parse_methods(compare.pop("methods"))
    return CompareConfig(methods=methods, out_dir=Path(out_dir), **compare)


def suite_launcher(doc: dict[str, Any], path: str | Path = "suite") -> dict[str, Any]:
    """The suite's ``[launcher]`` table (unknown keys refused with the known ones)."""
    from dataclasses import fields

    from synthbench.jobs.launchers import LaunchOptions

    table = doc.get("launcher", {})
    if not isinstance(table, dict):
        raise SynthbenchError("[launcher] must be a table", path)
    known = {f.name for f in fields(LaunchOptions)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise SynthbenchError(f"unknown [launcher] keys {unknown} (known: {', '.join(sorted(known))})", path)
    if not isinstance(table.get("sbatch", {}), dict):
        raise SynthbenchError("[launcher] sbatch must be a table of #SBATCH flags, e.g. { qos = \"high\" }", path)
    return dict(table)
