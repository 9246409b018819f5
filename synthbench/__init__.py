"""synthbench: train and compare conditional-GAN CT synthesizers under identical settings.

Public API for plugin authors (see docs/plugins.md)::

    from synthbench import hookimpl, Synthesizer, Metric, DownstreamTask

Names are imported on first access (PEP 562), so ``from synthbench import hookimpl`` in a
plugin's registration module does not import torch: the CLI starts without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from synthbench.errors import SynthbenchError
from synthbench.hookspecs import HOOK_API_VERSION, hookimpl

__version__ = "0.1.0"

#: Public name -> module that defines it (imported on first access).
_LAZY = {
    "Batch": "synthbench.synthesizer",
    "OptimizerSpec": "synthbench.synthesizer",
    "Stage": "synthbench.synthesizer",
    "Synthesizer": "synthbench.synthesizer",
    "SynthesizerConfigError": "synthbench.synthesizer",
    "Update": "synthbench.synthesizer",
    "one_hot": "synthbench.synthesizer",
    "set_requires_grad": "synthbench.synthesizer",
    "Metric": "synthbench.metric",
    "DownstreamContext": "synthbench.task",
    "DownstreamTask": "synthbench.task",
    "get_registry": "synthbench.plugins",
}

__all__ = [
    "HOOK_API_VERSION",
    "Batch",
    "DownstreamContext",
    "DownstreamTask",
    "Metric",
    "OptimizerSpec",
    "Stage",
    "Synthesizer",
    "SynthesizerConfigError",
    "SynthbenchError",
    "Update",
    "get_registry",
    "hookimpl",
    "one_hot",
    "set_requires_grad",
]

if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from synthbench.metric import Metric
    from synthbench.plugins import get_registry
    from synthbench.synthesizer import (
        Batch,
        OptimizerSpec,
        Stage,
        Synthesizer,
        SynthesizerConfigError,
        Update,
        one_hot,
        set_requires_grad,
    )
    from synthbench.task import DownstreamContext, DownstreamTask


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synthbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
