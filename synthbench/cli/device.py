"""One device rule for every command: ``--device auto`` (the default) is CUDA when available, else the CPU."""

from __future__ import annotations

from synthbench.errors import SynthbenchError

#: The default of every command's ``--device``.
DEFAULT_DEVICE = "auto"
DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda or cuda:N."


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` or ``cpu``; a device torch does not know, or CUDA without CUDA, is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise SynthbenchError(f"--device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SynthbenchError(f"--device {requested}: CUDA is not available on this machine")
    return requested
