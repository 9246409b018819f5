"""The DownstreamTask contract: an experiment that measures how useful synthetic images are.

The paper's evidence (Tables III and IV) is a U-Net segmentation experiment; a task plugin
receives the prepared data set, the synthesized images of one or more runs and an output
directory, and returns tidy result rows (one dict per method x ratio x class x metric).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class DownstreamContext:
    """Everything a downstream task needs to run one experiment.

    ``data_dir``: a prepared data set (:mod:`synthbench.data.prepared`).
    ``synthetic``: method name -> directory written by ``synthbench synthesize``.
    ``experiment``: task-defined experiment name (segmentation: ``replace`` or ``add``).
    ``ratios``: fractions of synthetic images, e.g. ``(0, .1, .2, .3, .4, .5)``.
    """

    data_dir: Path
    synthetic: dict[str, Path]
    experiment: str
    out_dir: Path
    ratios: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    seed: int = 0
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)


class DownstreamTask(abc.ABC):
    """Base class of a downstream-task plugin."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    experiments: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def run(self, context: DownstreamContext) -> list[dict[str, Any]]:
        """Run one experiment; write artefacts under ``context.out_dir``; return result rows."""
