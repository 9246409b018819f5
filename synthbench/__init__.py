"""synthbench: train and compare conditional-GAN CT synthesizers under identical settings.

Public API for plugin authors (see docs/plugins.md)::

    from synthbench import hookimpl, Synthesizer, Metric, DownstreamTask
"""

from synthbench.errors import SynthbenchError
from synthbench.hookspecs import HOOK_API_VERSION, hookimpl
from synthbench.metric import Metric
from synthbench.synthesizer import (
    Batch,
    OptimizerSpec,
    Stage,
    Synthesizer,
    SynthesizerConfigError,
    Update,
)
from synthbench.task import DownstreamContext, DownstreamTask

__version__ = "0.1.0"

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
    "hookimpl",
]
