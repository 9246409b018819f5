"""Plugin loading: every entry point of the ``synthbench`` group, each in isolation.

Built-in synthesizers, metrics and tasks are registered through exactly this mechanism; the
core names none of them. A plugin that fails to import, declares an incompatible API version,
or raises inside a hook is recorded in :attr:`PluginRecord.error` and skipped; everything else
keeps working. ``SYNTHBENCH_PLUGINS=name1,name2`` restricts loading to those entry points
(an empty value loads none).
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pluggy

from synthbench import hookspecs
from synthbench.errors import SynthbenchError

ENTRY_POINT_GROUP = "synthbench"
ENV_PLUGINS = "SYNTHBENCH_PLUGINS"

KINDS = ("synthesizers", "metrics", "downstream_tasks", "commands")


@dataclass
class PluginRecord:
    """What ``synthbench plugins`` shows for one entry point."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    api_version: Any = None
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "api_version": self.api_version,
            "registered": self.registered,
            "error": self.error,
        }


class Registry:
    """Loaded plugins and everything they registered."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("synthbench")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.synthesizers: dict[str, type] = {}
        self.metrics: dict[str, type] = {}
        self.downstream_tasks: dict[str, type] = {}
        self._commands: list[tuple[PluginRecord, Callable]] = []

    # ------------------------------------------------------------------ loading
    def load_entry_points(self) -> None:
        allowed = _allowed_names()
        for ep in sorted(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if allowed is not None and ep.name not in allowed:
                continue
            if ep.name in self.records:
                continue
            record = PluginRecord(name=ep.name, module=ep.value)
            if ep.dist is not None:
                record.distribution, record.version = ep.dist.name, ep.dist.version
            self.records[ep.name] = record
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not break the tool
                record.error = f"import failed: {type(exc).__name__}: {exc}"
                continue
            self.add_plugin(module, record)

    def add_plugin(self, module: Any, record: PluginRecord) -> None:
        """Register one plugin object (also used by tests to add a plugin without installing)."""
        self.records.setdefault(record.name, record)
        record.api_version = getattr(module, "SYNTHBENCH_API", None)
        if record.api_version is not None and not _compatible(record.api_version):
            record.error = (
                f"incompatible plugin API version {record.api_version!r}; "
                f"this synthbench provides version {hookspecs.HOOK_API_VERSION}"
            )
            return
        try:
            self.pm.register(module, name=record.name)
        except Exception as exc:
            record.error = f"registration failed: {type(exc).__name__}: {exc}"
            return
        for hook, kind, target in (
            ("register_synthesizers", "synthesizers", self.synthesizers),
            ("register_metrics", "metrics", self.metrics),
            ("register_downstream_tasks", "downstream_tasks", self.downstream_tasks),
        ):
            self._call_hook(module, record, hook, kind, target)
        for impl in self.pm.hook.register_commands.get_hookimpls():
            if impl.plugin is module:
                self._commands.append((record, impl.function))

    def _call_hook(self, module, record: PluginRecord, hook: str, kind: str, target: dict) -> None:
        impls = [i for i in getattr(self.pm.hook, hook).get_hookimpls() if i.plugin is module]
        staged: dict[str, type] = {}

        def register(cls: type) -> None:
            name = getattr(cls, "name", None)
            if not isinstance(name, str) or not name:
                raise TypeError(f"{cls!r} has no 'name' attribute")
            if name in target or name in staged:
                raise ValueError(f"{kind[:-1]} name {name!r} is already registered")
            staged[name] = cls

        for impl in impls:
            try:
                impl.function(register=register)
            except Exception as exc:
                record.error = f"{hook} failed: {type(exc).__name__}: {exc}"
                _debug_trace()
                return
        target.update(staged)
        record.registered[kind].extend(sorted(staged))

    def add_commands(self, cli) -> None:
        """Let plugins add CLI commands; a failing one is recorded, the CLI still works."""
        for record, fn in self._commands:
            before = {c.name for c in cli.registered_commands}
            try:
                fn(cli=cli)
            except Exception as exc:
                record.error = f"register_commands failed: {type(exc).__name__}: {exc}"
                continue
            added = [c.name or c.callback.__name__ for c in cli.registered_commands if c.name not in before]
            record.registered["commands"].extend(added)

    # ------------------------------------------------------------------ lookup
    def synthesizer(self, name: str) -> type:
        return self._lookup(self.synthesizers, name, "synthesizer")

    def metric(self, name: str) -> type:
        return self._lookup(self.metrics, name, "metric")

    def downstream_task(self, name: str) -> type:
        return self._lookup(self.downstream_tasks, name, "downstream task")

    def _lookup(self, table: dict[str, type], name: str, what: str) -> type:
        if name in table:
            return table[name]
        known = ", ".join(sorted(table)) or "none loaded"
        failed = [r for r in self.records.values() if r.error and r.name == name]
        hint = f" (plugin {name!r} failed to load: {failed[0].error})" if failed else ""
        raise SynthbenchError(f"unknown {what} {name!r}{hint}; available: {known}")


def _allowed_names() -> set[str] | None:
    value = os.environ.get(ENV_PLUGINS)
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


def _compatible(declared: Any) -> bool:
    try:
        return int(str(declared).split(".")[0]) == hookspecs.HOOK_API_VERSION
    except ValueError:
        return False


def _debug_trace() -> None:
    if os.environ.get("SYNTHBENCH_DEBUG"):
        traceback.print_exc()


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry, loading entry points on first use."""
    registry = Registry()
    registry.load_entry_points()
    return registry


def reset_registry() -> None:
    """Forget loaded plugins (tests that install or restrict plugins call this)."""
    get_registry.cache_clear()
