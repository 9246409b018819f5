"""Built-in downstream task plugin (entry point ``segmentation``): the paper's U-Net experiment.

Registers :class:`SegmentationTask`, the :class:`synthbench.DownstreamTask` wrapping
:func:`synthbench.downstream.run_experiment` (paper Sec. "Evaluation", Tables III and IV).
The experiment stack (torch, pandas, scipy) is imported when the task runs, not when the
plugin loads (every CLI start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from synthbench import hookimpl
from synthbench.errors import SynthbenchError
from synthbench.task import DownstreamContext, DownstreamTask

if TYPE_CHECKING:
    from synthbench.downstream.train import UNetProtocol

SYNTHBENCH_API = 1


class SegmentationTask(DownstreamTask):
    """U-Net lesion segmentation with synthetic images replacing (``replace``) or added to
    (``add``) the real training images; Dice, sensitivity, specificity per lesion class and for
    infection, mean and 95% CI over 10 folds.

    ``context.options``: ``protocol`` (a :class:`UNetProtocol`, a dict of its fields, or the
    name ``"default"``/``"quick"``), ``steps`` (overrides the protocol's), ``folds`` (10),
    ``primary`` (the method swept over all ratios; default the first), ``compare_ratio``,
    ``reuse`` (reuse recorded configurations, default true).
    """

    name = "segmentation"
    summary = "U-Net segmentation with synthetic images replacing or added to real ones (paper Tables III/IV)"
    experiments = ("replace", "add")

    def run(self, context: DownstreamContext) -> list[dict[str, Any]]:
        from synthbench.downstream.experiment import _json_safe, run_experiment

        opts = dict(context.options)
        protocol = resolve_protocol(opts.pop("protocol", None), opts.pop("steps", None))
        allowed = {"folds", "primary", "compare_ratio", "reuse"}
        unknown = set(opts) - allowed
        if unknown:
            raise SynthbenchError(f"segmentation task: unknown option(s) {', '.join(sorted(unknown))} (known: protocol, steps, {', '.join(sorted(allowed))})")
        df = run_experiment(
            context.data_dir, context.synthetic, context.experiment, context.ratios, context.out_dir,
            seed=context.seed, protocol=protocol, device=context.device, **opts,
        )
        return _json_safe(df.to_dict("records"))


def resolve_protocol(protocol: Any = None, steps: int | None = None) -> UNetProtocol:
    """A :class:`UNetProtocol` from an instance, a dict of fields or a name, with optional steps."""
    from synthbench.downstream.train import UNetProtocol

    if protocol is None:
        protocol = UNetProtocol()
    elif isinstance(protocol, str):
        protocol = UNetProtocol.named(protocol)
    elif isinstance(protocol, dict):
        protocol = UNetProtocol.from_dict(protocol)
    elif not isinstance(protocol, UNetProtocol):
        raise SynthbenchError(f"segmentation task: protocol must be a UNetProtocol, dict or name, got {type(protocol).__name__}")
    if steps is not None:
        protocol = UNetProtocol.from_dict({**protocol.to_dict(), "steps": int(steps)})
    return protocol


@hookimpl
def register_downstream_tasks(register):
    register(SegmentationTask)
