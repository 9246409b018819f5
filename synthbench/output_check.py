"""The output contract of :meth:`Synthesizer.generate`, checked wherever synthbench relies on it.

``generate(onehot)`` must return ``float32 [B, 1, H, W]``, finite, in ``[-1, 1]``
(docs/architecture.md, "Tensor layouts"). The conformance kit checks it on tiny cases; the
engine checks it on the first sample batch before training and on every sample grid; synthesis
checks every batch. A violation is one line naming the method and the plugin distribution that
registered it: a 3-channel or [-5, 5] output must never reach the metrics, where it would
train, synthesize, evaluate and "win" columns.
"""

from __future__ import annotations

from typing import Any

import torch

from synthbench.errors import SynthbenchError


class OutputContractError(SynthbenchError):
    """A synthesizer's ``generate()`` broke the output contract (shape, dtype, finite, range)."""


def output_problem(out: Any, batch: int, size: int) -> str | None:
    """What is wrong with ``out`` for ``batch`` maps of ``size`` px, or None when it conforms."""
    if not isinstance(out, torch.Tensor):
        return f"returned {type(out).__name__}, expected a torch.Tensor"
    expected = (batch, 1, size, size)
    if tuple(out.shape) != expected:
        return f"returned shape {tuple(out.shape)}, expected {expected} ([B, 1, H, W])"
    if out.dtype != torch.float32:
        return f"returned dtype {out.dtype}, expected torch.float32"
    if not bool(torch.isfinite(out).all()):
        return "returned NaN or infinite values"
    lo, hi = float(out.min()), float(out.max())
    if lo < -1.0 or hi > 1.0:
        return f"values span {lo:.4g}..{hi:.4g}, outside [-1, 1] (end the generator with tanh)"
    return None


def origin(method: str) -> str:
    """``distribution version`` of the plugin that registered ``method`` (for error messages)."""
    from synthbench.plugins import get_registry

    prov = get_registry().provenance("synthesizers", method)
    if prov.get("distribution"):
        return f"plugin {prov['plugin']!r} from {prov['distribution']} {prov['version']}"
    return f"module {prov.get('module')}"


def check_generated(out: Any, method: str, batch: int, size: int, where: str) -> None:
    """Raise :class:`OutputContractError` (one line) unless ``out`` conforms; ``where`` says when."""
    problem = output_problem(out, batch, size)
    if problem is not None:
        raise OutputContractError(
            f"{method} ({origin(method)}): generate() {where} {problem}; every synthesizer must return "
            "float32 [B, 1, H, W] in [-1, 1] (docs/plugins.md)")
