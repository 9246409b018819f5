"""The Metric contract (torchmetrics-style: a stateful class over a functional core).

A metric compares real and synthetic images, streamed in batches:

* ``update(real, fake, mask=None)``: ``real``/``fake`` are ``float32 [B, 1, H, W]`` in
  ``[-1, 1]``; ``mask`` (optional) is ``bool [B, 1, H, W]``, the lung region, given for
  bookkeeping by region-aware metrics. Lung-only and complete images are made *before* the
  metric sees them (see :mod:`synthbench.composite`), so one metric serves both settings.
* ``compute()`` returns ``{metric_name: value}`` over everything seen since ``reset()``.
* ``compute_folds(folds)`` returns one such dict per fold, ``folds`` being a list of index
  arrays into the images seen in order (the paper's 10-fold mean and 95% interval).

State must not grow with the number of images beyond what the metric needs (a float per image
for paired metrics, a 2048-d feature per image for FID/KID).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch


class Metric(abc.ABC):
    """Base class of an image-quality metric plugin."""

    name: ClassVar[str]
    #: True when larger is better (PSNR, SSIM); False for FID, KID, RMSE.
    higher_is_better: ClassVar[bool]
    #: "paired" metrics compare image i with image i; "distribution" metrics compare sets.
    kind: ClassVar[str] = "paired"
    summary: ClassVar[str] = ""

    def __init__(self, device: torch.device | str = "cpu", **options: Any):
        self.device = torch.device(device)
        self.options = options
        self.reset()

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget every image seen."""

    @abc.abstractmethod
    def update(self, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Accumulate one batch."""

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """Values over every image seen."""

    @abc.abstractmethod
    def compute_folds(self, folds: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """Values per fold (index arrays into the images seen, in order)."""

    def convention(self) -> dict[str, Any]:
        """How this metric was computed (data range, window, weights sha256...), for results."""
        return {}
