"""Divergence checks: a run whose weights or images stop being finite fails instead of finishing.

A non-finite *loss* is caught at every step (:func:`synthbench.engine.loop._iteration`). A run
can also diverge with finite losses: a huge learning rate leaves ``inf`` in a BatchNorm
``running_var`` and the generator then draws black images. So, cheaply, at every checkpoint
(before it is written) and at the end (before ``final.pt``), the engine checks every parameter
and buffer of every network and the generator's output on the fixed sample batch; the sample
grid of each epoch is checked too. A failure raises :class:`DivergenceError` and the last good
checkpoint stays the newest one.
"""

from __future__ import annotations

import torch

from synthbench.engine import rundir
from synthbench.errors import NonFiniteLossError


class DivergenceError(NonFiniteLossError):
    """Weights, buffers or generated images hold NaN or infinity; the run stops."""


def non_finite_tensor(synth) -> str | None:
    """``"G.model.1.running_var (inf)"`` for the first non-finite parameter or buffer, else None."""
    named = [(f"{net_name}.{name}", t) for net_name, net in synth.nets.items()
             for name, t in (*net.named_parameters(), *net.named_buffers()) if t.is_floating_point()]
    if not named or bool(torch.stack([torch.isfinite(t).all() for _, t in named]).all()):  # one device sync
        return None
    for name, tensor in named:
        if not bool(torch.isfinite(tensor).all()):
            return f"{name} ({'nan' if bool(torch.isnan(tensor).any()) else 'inf'})"
    return None


def generated_problem(fake: torch.Tensor) -> str | None:
    """What is wrong with a generated batch (non-finite values), else None."""
    if not bool(torch.isfinite(fake).all()):
        return f"{int((~torch.isfinite(fake)).sum())} of {fake.numel()} generated pixels are NaN or infinite"
    return None


@torch.no_grad()
def probe_generator(synth, batch) -> torch.Tensor:
    """The generator's output on ``batch`` (eval mode); every RNG is left as it was, so a check
    at a checkpoint never changes the training that follows."""
    saved = rundir.rng_state()
    try:
        return synth.generate(batch.onehot.to(batch.image.dtype), style=batch.image)
    finally:
        synth.train(True)
        rundir.set_rng_state(saved)


def check_run(synth, sample_batch) -> str | None:
    """The first sign of divergence in the networks or on the sample batch, else None."""
    problem = non_finite_tensor(synth)
    if problem is not None:
        return f"non-finite values in {problem}"
    if sample_batch is not None:
        bad = generated_problem(probe_generator(synth, sample_batch))
        if bad is not None:
            return f"generator output on the sample batch: {bad}"
    return None


def divergence_error(method: str, step: int, problem: str) -> DivergenceError:
    return DivergenceError(f"{method}: the run diverged after step {step}: {problem}; training stopped "
                           "(lower the learning rate or check the data)")
