"""Training protocols: everything about *how* a method is trained, shared by every method.

The ``paper`` protocol is the paper's training setup (Sec. "Implementation details"): 20 epochs,
learning rate 2e-4 constant for the first 10 then linearly to 0 over the last 10, Adam with
beta1 0.5 / beta2 0.999, batch size 16, 512 x 512 slices. ``quick`` is a CPU-sized version of the
same schedule (64 px, a step cap) that still learns visibly; ``smoke`` only proves the wiring.

Every field can be overridden per run (``train(..., overrides={...})``) and the resolved values
are written to the run's ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from synthbench.errors import SynthbenchError

#: Fields that only affect *this invocation* (not the training plan); a resumed run may change them.
RUNTIME_FIELDS = ("stop_after_steps", "device", "workers", "checkpoint_every", "keep_last_n")
#: ``lr_scope`` values: one schedule over the whole run (paper), or restarted in every stage.
LR_SCOPES = ("run", "stage")


@dataclass
class Protocol:
    """One training protocol (see the module docstring and the engine's docs for each field).

    ``precision``: "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32", "bf16", "fp16" (autocast
    with a ``torch.amp.GradScaler``). ``channels_last``: "auto" turns it on on CUDA only.
    ``fused_adam``: "auto" fuses Adam wherever the installed torch supports the device and every
    parameter (CUDA, and CPU since torch 2.4), else falls back with the reason recorded in the
    run; True insists (an error where unsupported). Set either to False to turn it off. ``cudnn_benchmark`` "auto": on unless deterministic.
    ``lr_schedule``: "linear_decay" (constant for the first ``decay_start`` fraction of the steps,
    then linearly to 0; paper) or "constant". ``lr_scope``: "run" (one schedule over the whole run,
    the stages of a multi-stage method concatenated: the paper's 20 epochs, 2e-4 for 10 then to 0)
    or "stage" (the schedule restarts in every stage). ``batch_size`` is the *global* batch
    (the paper's 16 across two GPUs): each of the world's processes takes ``batch_size /
    world_size``, and a size that does not divide is an error. ``max_steps`` caps the *plan* (the
    schedule is computed over the capped plan); ``stop_after_steps`` stops an invocation early
    (as if interrupted, with a checkpoint) without changing the plan, so ``--resume`` continues.
    ``reduced_networks``: build every method with its ``Synthesizer.reduced_options``
    (narrower networks that train in minutes on a CPU; quick and smoke only, recorded per run).
    ``method_options`` / ``method_betas``: per-method overrides of a synthesizer's options and
    of its optimizers' Adam betas, keyed by method name.
    """

    name: str = "custom"
    epochs: int = 20
    lr: float = 2e-4
    lr_schedule: str = "linear_decay"
    decay_start: float = 0.5
    lr_scope: str = "run"
    batch_size: int = 16
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    channels_last: Any = "auto"
    fused_adam: Any = "auto"
    cudnn_benchmark: Any = "auto"
    compile: bool = False
    workers: int = 0
    image_size: int = 512
    max_steps: int | None = None
    stop_after_steps: int | None = None
    checkpoint_every: int = 1000
    keep_last_n: int = 3
    sample_every_epoch: bool = True
    sample_count: int = 4
    train_split: str = "auto"
    ddp_find_unused_parameters: bool = True
    reduced_networks: bool = False
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    method_betas: dict[str, tuple[float, float]] = field(default_factory=dict)

    def replace(self, overrides: dict[str, Any] | None) -> Protocol:
        """A copy with ``overrides`` applied; unknown field names are a :class:`SynthbenchError`."""
        if not overrides:
            return dataclasses.replace(self)
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SynthbenchError(f"unknown protocol field(s) {unknown} (known: {', '.join(sorted(known))})")
        return dataclasses.replace(self, **overrides)

    def validate(self) -> Protocol:
        problems = _type_problems(self)
        if problems:  # the range checks below assume the right types
            raise SynthbenchError(f"protocol {self.name!r}: " + "; ".join(problems))
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(f"precision must be auto/fp32/bf16/fp16, got {self.precision!r}")
        if self.lr_schedule not in ("linear_decay", "constant"):
            problems.append(f"lr_schedule must be linear_decay or constant, got {self.lr_schedule!r}")
        if self.lr_scope not in LR_SCOPES:
            problems.append(f"lr_scope must be one of {', '.join(LR_SCOPES)}, got {self.lr_scope!r}")
        if not 0.0 <= self.decay_start <= 1.0:
            problems.append(f"decay_start must be in [0, 1], got {self.decay_start}")
        for name in ("max_steps", "stop_after_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1, got {value}")
        if self.checkpoint_every < 1 or self.keep_last_n < 1:
            problems.append("checkpoint_every and keep_last_n must be >= 1")
        if problems:
            raise SynthbenchError(f"protocol {self.name!r}: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["method_betas"] = {k: list(v) for k, v in self.method_betas.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["method_betas"] = {k: tuple(v) for k, v in kwargs.get("method_betas", {}).items()}
        kwargs.setdefault("lr_scope", "stage")  # recorded before lr_scope existed: per-stage restarts
        return cls(**kwargs)


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def _type_problems(protocol: Protocol) -> list[str]:
    """Fields whose value has the wrong type (``--set lr=fast``), from the dataclass annotations."""
    problems = []
    for f in dataclasses.fields(protocol):
        value = getattr(protocol, f.name)
        kind = str(f.type).replace(" ", "")
        optional = kind.endswith("|None")
        kind = kind.removesuffix("|None")
        if value is None and optional:
            continue
        if kind in _TYPES:
            ok = isinstance(value, _TYPES[kind]) and (kind == "bool" or not isinstance(value, bool))
            expected = _TYPE_WORDS[kind] + (" or none" if optional else "")
        elif kind == "Any":  # the "auto"-or-switch fields
            ok, expected = value == "auto" or isinstance(value, bool), "auto, true or false"
        elif kind.startswith("dict"):
            ok, expected = isinstance(value, dict), "a table"
        else:
            continue
        if not ok:
            problems.append(f"{f.name} must be {expected}, got {value!r}")
    return problems


#: The paper's protocol (Sec. "Implementation details") on its 512 x 512 slices.
PAPER = Protocol(
    name="paper", epochs=20, batch_size=16, image_size=512, workers=4,
    checkpoint_every=1000, keep_last_n=3,
)
#: CPU-sized: 64 px, reduced networks, the paper's schedule over a capped number of steps.
QUICK = Protocol(
    name="quick", epochs=10, batch_size=4, image_size=64, workers=0, max_steps=150,
    checkpoint_every=50, keep_last_n=2, reduced_networks=True,
)
#: Wiring check: a handful of steps, deterministic.
SMOKE = Protocol(
    name="smoke", epochs=1, batch_size=4, image_size=64, workers=0, max_steps=4,
    deterministic=True, checkpoint_every=2, keep_last_n=2, sample_count=2, reduced_networks=True,
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (PAPER, QUICK, SMOKE)}


def get_protocol(protocol: str | Protocol, overrides: dict[str, Any] | None = None) -> Protocol:
    """A built-in protocol by name (or a :class:`Protocol` as is), with ``overrides`` applied."""
    if isinstance(protocol, Protocol):
        base = protocol
    else:
        if protocol not in PROTOCOLS:
            raise SynthbenchError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
        base = PROTOCOLS[protocol]
    return base.replace(overrides).validate()
