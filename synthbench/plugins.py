"""Plugin loading: every entry point of the ``synthbench`` group, each in isolation.

Built-in synthesizers, metrics and tasks are registered through exactly this mechanism; the
core names none of them. Rules (docs/plugins.md, "Loading rules"):

* A plugin that fails to import (``sys.exit`` included), declares an incompatible API version,
  or raises inside a hook is recorded in :attr:`PluginRecord.error` and skipped; everything
  else keeps working. ``SYNTHBENCH_DEBUG=1`` prints the traceback.
* ``register(cls)`` registers a class; ``register("pkg.module:Class", name="x")`` registers it
  by path: the module is imported on first use, so start-up never pays for heavy modules.
* A name registered by two plugins is unusable (an error naming both distributions) unless
  ``SYNTHBENCH_PREFER=name=distribution[,...]`` chooses one; every run records which
  distribution and version produced it (:meth:`Registry.provenance`).
* Two distributions declaring the same entry-point key are both loaded and both reported.
* Misspelt hooks (an ``@hookimpl`` the API does not know) and hook-like functions without
  ``@hookimpl`` are reported as warnings.
* ``SYNTHBENCH_PLUGINS=a,b`` loads only those entry points plus the core plugins (the metrics
  and the segmentation task of synthbench itself); ``-name`` excludes one, core included.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as importlib_metadata
import os
import re
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pluggy

from synthbench import hookspecs
from synthbench.errors import SynthbenchError

ENTRY_POINT_GROUP = "synthbench"
ENV_PLUGINS = "SYNTHBENCH_PLUGINS"
ENV_PREFER = "SYNTHBENCH_PREFER"
ENV_DEBUG = "SYNTHBENCH_DEBUG"

KINDS = ("synthesizers", "metrics", "downstream_tasks", "commands")
#: Registration hook -> the kind it registers.
REGISTER_HOOKS = {
    "register_synthesizers": "synthesizers",
    "register_metrics": "metrics",
    "register_downstream_tasks": "downstream_tasks",
}
#: Kind -> (singular for messages, "module:Class" of the base class every registered class extends).
KIND_INFO = {
    "synthesizers": ("synthesizer", "synthbench.synthesizer:Synthesizer"),
    "metrics": ("metric", "synthbench.metric:Metric"),
    "downstream_tasks": ("downstream task", "synthbench.task:DownstreamTask"),
}
#: A registered name may not contain whitespace, ',' (list separator) or ':' (``method:variant``).
_BAD_NAME = re.compile(r"[\s,:]")


@dataclass
class PluginRecord:
    """What ``synthbench plugins`` shows for one entry point.

    ``key`` is unique among loaded plugins: the entry-point name, or ``name@distribution`` for a
    second distribution declaring the same entry-point name. ``error``: the plugin failed (it
    registers nothing). ``warnings``: it loaded, but something is probably wrong (a misspelt
    hook, a duplicate entry point). ``clashes``: names it registers that another plugin also
    registers (unusable until ``SYNTHBENCH_PREFER`` chooses).
    """

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    api_version: Any = None
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    error: str | None = None
    key: str = ""
    warnings: list[str] = field(default_factory=list)
    clashes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = self.key or self.name

    @property
    def origin(self) -> str:
        """``distribution version (entry point NAME)``, for messages."""
        dist = f"{self.distribution} {self.version}" if self.distribution else "no distribution"
        return f"{dist} (entry point {self.name!r})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "api_version": self.api_version,
            "registered": self.registered,
            "error": self.error,
            "warnings": list(self.warnings),
            "clashes": list(self.clashes),
        }


@dataclass
class Registration:
    """One name registered by one plugin: a class, or a ``"module:Qualname"`` path imported on use."""

    kind: str
    name: str
    target: Any
    record: PluginRecord | None = None
    _loaded: type | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        return self.record.origin if self.record is not None else f"module {getattr(self.target, '__module__', '?')}"

    @property
    def path(self) -> str:
        t = self.target
        return t if isinstance(t, str) else f"{t.__module__}:{t.__qualname__}"

    def load(self) -> type:
        """The class (imported now for a path); a failure is a :class:`SynthbenchError` naming the plugin."""
        if self._loaded is not None:
            return self._loaded
        what = KIND_INFO[self.kind][0]
        try:
            cls = _import_path(self.target) if isinstance(self.target, str) else self.target
            base = _import_path(KIND_INFO[self.kind][1])
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"{self.path} is not a subclass of {base.__module__}.{base.__qualname__}")
            if getattr(cls, "name", None) != self.name:
                raise TypeError(f"{self.path} has name {getattr(cls, 'name', None)!r}, registered as {self.name!r}")
        except (Exception, SystemExit) as exc:
            message = f"loading {what} {self.name!r} ({self.path}) failed: {_describe(exc)}"
            if self.record is not None and self.record.error is None:
                self.record.error = message
            _debug_trace()
            raise SynthbenchError(f"{what} {self.name!r} from {self.origin} cannot be loaded: {_describe(exc)}") from exc
        self._loaded = cls
        return cls


class Registry:
    """Loaded plugins and everything they registered.

    ``synthesizers`` / ``metrics`` / ``downstream_tasks`` map each usable name to its
    :class:`Registration` (or to a class put there directly, e.g. by
    :func:`synthbench.testing.registered`); look names up with :meth:`synthesizer`,
    :meth:`metric`, :meth:`downstream_task`. ``conflicts[kind][name]`` holds the registrations
    of a name that several plugins register and no preference resolved.
    """

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("synthbench")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.synthesizers: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.downstream_tasks: dict[str, Any] = {}
        self.conflicts: dict[str, dict[str, list[Registration]]] = {k: {} for k in REGISTER_HOOKS.values()}
        self._shadowed: list[tuple[Registration, Registration]] = []
        self._commands: list[tuple[PluginRecord, Callable]] = []
        self.preferences, self.config_errors = _parse_preferences(os.environ.get(ENV_PREFER))

    # ------------------------------------------------------------------ loading
    def load_entry_points(self) -> None:
        selection = _selection()
        eps = sorted(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda e: (e.name, e.dist.name if e.dist else ""))
        by_name: dict[str, list] = {}
        for ep in eps:
            by_name.setdefault(ep.name, []).append(ep)
        for name, group in by_name.items():
            if not _selected(name, group[0], selection):
                continue
            dists = ", ".join(_dist_label(ep) for ep in group)
            for i, ep in enumerate(group):
                key = name if i == 0 else f"{name}@{ep.dist.name if ep.dist else i}"
                record = PluginRecord(name=name, module=ep.value, key=key)
                if ep.dist is not None:
                    record.distribution, record.version = ep.dist.name, ep.dist.version
                if len(group) > 1:
                    record.warnings.append(
                        f"entry point {name!r} is declared by {len(group)} distributions ({dists}); "
                        "each is loaded, but SYNTHBENCH_PLUGINS cannot tell them apart: rename one")
                self.records[key] = record
                try:
                    module = ep.load()
                except (Exception, SystemExit) as exc:  # a broken plugin must not break the tool
                    record.error = f"import failed: {_describe(exc)}"
                    _debug_trace()
                    continue
                self.add_plugin(module, record)

    def add_plugin(self, module: Any, record: PluginRecord) -> None:
        """Register one plugin object (also used by tests to add a plugin without installing)."""
        self.records.setdefault(record.key, record)
        record.api_version = getattr(module, "SYNTHBENCH_API", None)
        if record.api_version is not None and not _compatible(record.api_version):
            record.error = (
                f"incompatible plugin API version {record.api_version!r}; "
                f"this synthbench provides version {hookspecs.HOOK_API_VERSION}"
            )
            return
        try:
            self.pm.register(module, name=record.key)
        except Exception as exc:
            record.error = f"registration failed: {_describe(exc)}"
            return
        record.warnings.extend(_hook_warnings(self.pm, module))
        for hook, kind in REGISTER_HOOKS.items():
            if not self._call_hook(module, record, hook, kind):
                return
        for impl in self.pm.hook.register_commands.get_hookimpls():
            if impl.plugin is module:
                self._commands.append((record, impl.function))

    def _call_hook(self, module, record: PluginRecord, hook: str, kind: str) -> bool:
        impls = [i for i in getattr(self.pm.hook, hook).get_hookimpls() if i.plugin is module]
        staged: dict[str, Registration] = {}

        def register(target: Any, name: str | None = None) -> None:
            if isinstance(target, str):
                if not re.fullmatch(r"[\w.]+:[\w.]+", target):
                    raise ValueError(f"register({target!r}): a path must look like 'package.module:Class'")
                if name is None:
                    raise TypeError(f"register({target!r}) needs name=...: the name it is used by")
            elif isinstance(target, type):
                declared = getattr(target, "name", None)
                if name is not None and name != declared:
                    raise ValueError(f"register({target.__qualname__}, name={name!r}): the class's name is {declared!r}")
                name = declared
            else:
                raise TypeError(f"register() takes a class or a 'module:Class' path, got {type(target).__name__}")
            if not isinstance(name, str) or not name or _BAD_NAME.search(name):
                raise ValueError(f"invalid {KIND_INFO[kind][0]} name {name!r}: a non-empty string without spaces, ',' or ':'")
            if name in staged:
                raise ValueError(f"{KIND_INFO[kind][0]} name {name!r} is registered twice by this plugin")
            staged[name] = Registration(kind, name, target, record)

        for impl in impls:
            try:
                impl.function(register=register)
            except (Exception, SystemExit) as exc:
                record.error = f"{hook} failed: {_describe(exc)}"
                _debug_trace()
                return False
        for registration in staged.values():
            self._place(registration)
        record.registered[kind].extend(sorted(staged))
        return True

    def _place(self, reg: Registration) -> None:
        """Make ``reg`` the entry for its name, or record a clash (resolved by SYNTHBENCH_PREFER)."""
        table, conflicts = self._table(reg.kind), self.conflicts[reg.kind]
        contenders = conflicts.get(reg.name)
        if contenders is None:
            current = table.get(reg.name)
            if current is None:
                table[reg.name] = reg
                return
            contenders = [current if isinstance(current, Registration) else Registration(reg.kind, reg.name, current)]
        contenders = [*contenders, reg]
        chosen = [c for c in contenders if self._preferred(c)]
        if len(chosen) == 1:
            table[reg.name] = chosen[0]
            conflicts.pop(reg.name, None)
            self._shadowed = [(r, w) for r, w in self._shadowed if r.name != reg.name or r.kind != reg.kind]
            self._shadowed += [(c, chosen[0]) for c in contenders if c is not chosen[0]]
        else:
            table.pop(reg.name, None)
            conflicts[reg.name] = contenders
        self._refresh_clashes()

    def _preferred(self, reg: Registration) -> bool:
        wanted = self.preferences.get(reg.name)
        if wanted is None or reg.record is None:
            return False
        return wanted in {_normalize(x) for x in (reg.record.distribution, reg.record.name, reg.record.key) if x}

    def _refresh_clashes(self) -> None:
        for record in self.records.values():
            record.clashes = []
        for kind, table in self.conflicts.items():
            for name, regs in table.items():
                for reg in regs:
                    others = "; ".join(o.origin for o in regs if o is not reg)
                    if reg.record is not None:
                        reg.record.clashes.append(
                            f"{KIND_INFO[kind][0]} {name!r} is also registered by {others}: unusable until "
                            f"{ENV_PREFER}={name}=<distribution> chooses one")
        for reg, winner in self._shadowed:
            if reg.record is not None:
                reg.record.clashes.append(
                    f"{KIND_INFO[reg.kind][0]} {reg.name!r} not used: {ENV_PREFER} chose {winner.origin}")

    def add_commands(self, cli) -> None:
        """Let plugins add CLI commands; a failing one is recorded, the CLI still works."""
        for record, fn in self._commands:
            before = {c.name for c in cli.registered_commands}
            try:
                fn(cli=cli)
            except (Exception, SystemExit) as exc:
                record.error = f"register_commands failed: {_describe(exc)}"
                _debug_trace()
                continue
            added = [c.name or c.callback.__name__ for c in cli.registered_commands if c.name not in before]
            record.registered["commands"].extend(added)

    def load_all(self) -> None:
        """Import every registration made by path (``synthbench plugins`` does, to report failures)."""
        for kind in REGISTER_HOOKS.values():
            regs = [v for v in self._table(kind).values() if isinstance(v, Registration)]
            regs += [r for rs in self.conflicts[kind].values() for r in rs]
            for reg in regs:
                try:
                    reg.load()
                except SynthbenchError:
                    pass  # recorded in reg.record.error

    # ------------------------------------------------------------------ lookup
    def synthesizer(self, name: str) -> type:
        return self._lookup("synthesizers", name)

    def metric(self, name: str) -> type:
        return self._lookup("metrics", name)

    def downstream_task(self, name: str) -> type:
        return self._lookup("downstream_tasks", name)

    def provenance(self, kind: str, name: str) -> dict[str, Any]:
        """Which plugin provides ``name``: plugin (entry point), module, distribution, version."""
        entry = self._table(kind).get(name)
        record = entry.record if isinstance(entry, Registration) else None
        if record is None:
            module = getattr(entry.target if isinstance(entry, Registration) else entry, "__module__", None)
            return {"plugin": None, "module": module, "distribution": None, "version": None}
        return {"plugin": record.name, "module": record.module, "distribution": record.distribution,
                "version": record.version}

    def _table(self, kind: str) -> dict[str, Any]:
        return getattr(self, kind)

    def _lookup(self, kind: str, name: str) -> type:
        what = KIND_INFO[kind][0]
        if self.config_errors:
            raise SynthbenchError(self.config_errors[0])
        clash = self.conflicts[kind].get(name)
        if clash:
            origins = " and ".join(r.origin for r in clash)
            wanted = self.preferences.get(name)
            hint = (f"{ENV_PREFER} names {wanted!r}, which provides none of them; "
                    if wanted else "")
            raise SynthbenchError(
                f"{what} {name!r} is registered by {len(clash)} plugins: {origins}; {hint}choose one with "
                f"{ENV_PREFER}={name}=<distribution>")
        table = self._table(kind)
        if name in table:
            entry = table[name]
            if not isinstance(entry, Registration):
                return entry
            wanted = self.preferences.get(name)
            if wanted is not None and not self._preferred(entry):
                raise SynthbenchError(
                    f"{ENV_PREFER} asks for {what} {name!r} from {wanted!r}, but only {entry.origin} provides it")
            return entry.load()
        known = ", ".join(sorted([*table, *self.conflicts[kind]])) or "none loaded"
        raise SynthbenchError(f"unknown {what} {name!r}{self._hint(name)}; available: {known}")

    def _hint(self, name: str) -> str:
        failed = [r for r in self.records.values() if r.error and r.name == name]
        if failed:
            return f" (plugin {name!r} failed to load: {failed[0].error})"
        suspicious = [r for r in self.records.values()  # e.g. plugin 'mygan' with a misspelt hook
                      if r.warnings and not any(r.registered[k] for k in REGISTER_HOOKS.values())
                      and (name.startswith(r.name) or difflib.get_close_matches(name, [r.name], cutoff=0.6))]
        if suspicious:
            r = suspicious[0]
            return f" (plugin {r.key!r} registers nothing: {r.warnings[0]})"
        return ""


# ---------------------------------------------------------------------- helpers
def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


def _import_path(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _normalize(name: str) -> str:
    """Distribution-name normalisation (PEP 503): case and runs of '-', '_', '.' do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_label(ep) -> str:
    return f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else ep.value


def _parse_preferences(value: str | None) -> tuple[dict[str, str], list[str]]:
    """``"pix2pix=synthbench,psnr=my-metrics"`` -> ``{name: normalised distribution}``, errors."""
    prefs: dict[str, str] = {}
    errors: list[str] = []
    for item in (value or "").split(","):
        if not item.strip():
            continue
        name, sep, dist = item.partition("=")
        if not sep or not name.strip() or not dist.strip():
            errors.append(f"{ENV_PREFER}: {item.strip()!r} is not name=distribution (e.g. pix2pix=synthbench)")
            continue
        prefs[name.strip()] = _normalize(dist.strip())
    return prefs, errors


def _selection() -> tuple[set[str] | None, set[str]] | None:
    """``SYNTHBENCH_PLUGINS`` -> (included names or None for all, excluded names); None if unset."""
    value = os.environ.get(ENV_PLUGINS)
    if value is None:
        return None
    items = [n.strip() for n in value.split(",") if n.strip()]
    excluded = {n[1:].strip() for n in items if n.startswith("-")}
    included = {n for n in items if not n.startswith("-")}
    only_exclusions = bool(items) and not included
    return (None if only_exclusions else included), excluded


def is_core(ep) -> bool:
    """Core plugins: entry points of synthbench itself whose module is inside the synthbench package
    (the metrics and the segmentation task); built-in synthesizers are ordinary plugins."""
    dist = _normalize(ep.dist.name) if ep.dist is not None else ""
    return dist == "synthbench" and ep.value.split(":")[0].startswith("synthbench.")


def _selected(name: str, ep, selection) -> bool:
    if selection is None:
        return True
    included, excluded = selection
    if name in excluded:
        return False
    return included is None or name in included or is_core(ep)


def _hook_warnings(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """Misspelt ``@hookimpl`` functions, hook-like functions without ``@hookimpl``, no hook at all."""
    known = [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "synthbench_spec")]
    warnings: list[str] = []
    callers = pm.get_hookcallers(plugin) or []
    for caller in callers:
        if not caller.has_spec():
            close = difflib.get_close_matches(caller.name, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            warnings.append(f"unknown hook {caller.name!r}{hint}: synthbench never calls it; hooks are {', '.join(known)}")
    if isinstance(plugin, types.ModuleType):
        for attr, value in sorted(vars(plugin).items()):
            if not (callable(value) and getattr(value, "__module__", None) == plugin.__name__):
                continue
            if not attr.startswith("register") or hasattr(value, "synthbench_impl"):
                continue
            close = [attr] if attr in known else difflib.get_close_matches(attr, known, n=1, cutoff=0.8)
            if close:
                warnings.append(f"function {attr!r} looks like hook {close[0]!r} but is not marked @hookimpl "
                                "(from synthbench import hookimpl): synthbench never calls it")
    if not any(c.has_spec() for c in callers):
        warnings.append("implements no synthbench hook: it registers nothing (see docs/plugins.md, Hooks)")
    return warnings


def _compatible(declared: Any) -> bool:
    try:
        return int(str(declared).split(".")[0]) == hookspecs.HOOK_API_VERSION
    except ValueError:
        return False


def _debug_trace() -> None:
    if os.environ.get(ENV_DEBUG):
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
