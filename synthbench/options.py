"""Synthesizer options: typing of ``--option key=value`` and the precedence of option sources.

Typing (docs/plugins.md, "Options"): a value is read by the type of the option's default in
:meth:`Synthesizer.default_options`:

=============  ===============================================================================
default        accepted text
=============  ===============================================================================
bool           ``true``/``false`` (also ``yes``/``no``, ``1``/``0``; any case)
int            an integer (``16``, ``-1``)
float          a finite number (``1e-4``, ``10``); ``nan`` and ``inf`` are refused
str            the text as written (``instance``)
tuple / list   comma-separated items, or a Python literal (``0.5,0.999`` or ``(0.5, 0.999)``),
               each item typed like the default's items; a tuple keeps its length (betas), a
               list takes one or more items (layer or resolution lists)
None or other  a Python literal (number, ``true``/``false``, ``none``, tuple...), else the text
=============  ===============================================================================

The same types are checked for options from every source (CLI, suite files, the Python API),
so a value the option cannot take is a one-line :class:`SynthbenchError`, never a traceback
from inside the plugin.

Precedence when the engine builds a synthesizer (paper settings first, explicit choices last):
defaults -> ``reduced_options`` (quick/smoke protocols) -> the variant's preset ->
protocol ``method_options`` -> explicit options. A variant's own keys win over the reduced build:
``--variant wide`` trains wide under ``quick`` too.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from typing import Any

from synthbench.errors import SynthbenchError

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def split_key_values(items: list[str] | None, what: str = "--option") -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` (the text, untyped)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SynthbenchError(f"{what} {item!r}: expected key=value")
        if not key.strip():
            raise SynthbenchError(f"{what} {item!r}: empty key")
        out[key.strip()] = raw.strip()
    return out


def parse_literal(raw: str) -> Any:
    """Untyped text -> Python value: ``true``/``false``/``none``, a literal, else the text."""
    low = raw.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_option(name: str, raw: str, default: Any) -> Any:
    """Text -> value of the type of ``default`` (module table); ValueError says what it takes."""
    text = raw.strip()
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("takes true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError("takes an integer") from None
    if isinstance(default, float):
        try:
            value = float(text)
        except ValueError:
            raise ValueError("takes a finite number") from None
        if not math.isfinite(value):
            raise ValueError("takes a finite number")
        return value
    if isinstance(default, str):
        return text
    if isinstance(default, tuple | list):
        literal = parse_literal(text)
        items = list(literal) if isinstance(literal, tuple | list) else [t for t in text.split(",") if t.strip()]
        _check_length(items, default)
        try:
            values = [parse_option(name, str(v), default[min(i, len(default) - 1)]) for i, v in enumerate(items)]
        except ValueError as exc:
            raise ValueError(f"takes {_length_text(default)}, each like {default[0]!r} ({exc})") from None
        return type(default)(values)
    return parse_literal(text)


def check_option(name: str, value: Any, default: Any) -> None:
    """Raise ValueError when ``value`` cannot stand for an option whose default is ``default``."""
    if value is None or default is None:
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError("takes true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("takes an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError("takes a finite number")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError("takes a string")
    elif isinstance(default, tuple | list):
        if not isinstance(value, tuple | list):
            raise ValueError(f"takes {_length_text(default)}")
        _check_length(value, default)
        for i, v in enumerate(value):
            check_option(name, v, default[min(i, len(default) - 1)])


def _length_text(default: tuple | list) -> str:
    return f"{len(default)} items" if isinstance(default, tuple) else "one or more items"


def _check_length(items, default: tuple | list) -> None:
    """A tuple default (e.g. Adam betas) fixes the length; a list default (layer or resolution
    lists) takes any non-empty list of items of its element type."""
    if (len(items) != len(default)) if isinstance(default, tuple) else not items:
        raise ValueError(f"takes {_length_text(default)}")


def typed_options(cls, raw: Mapping[str, str], what: str = "--option") -> dict[str, Any]:
    """CLI texts -> typed options of synthesizer ``cls``; unknown keys and bad values are one-line errors."""
    defaults = cls.default_options()
    out: dict[str, Any] = {}
    for key, text in raw.items():
        if key not in defaults:
            raise SynthbenchError(f"{what} {key}={text}: {cls.name} has no option {key!r} "
                                  f"(known: {', '.join(sorted(defaults))})")
        try:
            out[key] = parse_option(key, text, defaults[key])
        except ValueError as exc:
            raise SynthbenchError(f"{what} {key}={text}: {cls.name} option {key!r} {exc} "
                                  f"(default {defaults[key]!r})") from None
    return out


def check_options(cls, options: Mapping[str, Any], source: str) -> None:
    """Type-check already-typed options (suite files, Python API) against ``cls``'s defaults."""
    defaults = cls.default_options()
    for key, value in options.items():
        if key not in defaults:
            continue  # Synthesizer.resolve_options names unknown keys with the full list
        try:
            check_option(key, value, defaults[key])
        except ValueError as exc:
            raise SynthbenchError(f"{source}: {cls.name} option {key!r} {exc} (default {defaults[key]!r}), "
                                  f"got {value!r}") from None


def build_options(cls, variant: str | None, reduced: bool, method_options: Mapping[str, Any] | None,
                  options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The explicit options the engine passes to ``cls(..., options=, variant=)`` (module precedence).

    The constructor applies defaults, then the variant, then these; so the reduced build is
    passed only for keys the variant does not set.
    """
    check_options(cls, method_options or {}, "protocol method_options")
    check_options(cls, options or {}, "options")
    variant_keys = set(cls.variants.get(variant, {})) if variant else set()
    merged = {k: v for k, v in (cls.reduced_options if reduced else {}).items() if k not in variant_keys}
    return {**merged, **(method_options or {}), **(options or {})}
