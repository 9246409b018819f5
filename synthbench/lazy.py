"""Lazy module attributes (PEP 562) for plugin registration modules.

A plugin registers its synthesizer by class path, so loading it at CLI start imports neither
torch nor its networks; ``__getattr__ = lazy_attributes("pkg.model")`` keeps
``from pkg import Model`` working by importing ``pkg.model`` on first access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(module: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` that looks names up in ``module`` (imported on first access)."""

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):  # dunder probes (pickle, inspect) must not import the model
            raise AttributeError(attr)
        return getattr(importlib.import_module(module), attr)

    return __getattr__
