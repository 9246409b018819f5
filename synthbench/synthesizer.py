"""The Synthesizer contract: what a plugin provides so the shared engine can train it.

Tensor layouts (MONAI-style, documented once here and used everywhere):

* ``Batch.image``: ``float32 [B, 1, H, W]`` CT slice, intensities in ``[-1, 1]``
  (HU window mapped linearly, paper Sec. "Data and preprocessing").
* ``Batch.label``: ``int64 [B, H, W]`` class ids ``0 .. num_classes - 1``.
* ``Batch.onehot``: ``float32 [B, C, H, W]`` one-hot of ``label`` (the conditioning input of
  every built-in method; baselines.md "Input everywhere: a one-hot label map"), in the batch's
  ``memory_format`` (contiguous NCHW unless the engine moved the batch with the protocol's
  ``channels_last``; layout is a decision, never a side effect of how the one-hot is built).
* ``Batch.lung``: ``bool [B, 1, H, W]`` the lung region (every class marked as lung or lesion
  in the data-set description); used by the completion step and lung-only metrics.
* :meth:`Synthesizer.generate` returns ``float32 [B, 1, H, W]`` in ``[-1, 1]``.

A synthesizer never writes a training loop. The engine calls :meth:`Synthesizer.training_step`
for the current stage; the method *yields* one :class:`Update` per optimizer step (for a GAN:
first the discriminator's loss, then the generator's). The engine runs each piece under the
run's precision (autocast), does ``zero_grad`` / ``backward`` / gradient scaling / ``step`` for
the named optimizer, checks the loss is finite, logs, and resumes the generator.

Post-step work: the engine resumes the generator only after the yielded update's optimizer step
(also after the last one, until ``StopIteration``), so code after a ``yield`` sees the stepped
weights. That is where a method updates an exponential moving average of its weights (SDM) or
any other state that must follow a step; keep such state in ``self.nets`` so checkpoints hold it.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from synthbench.errors import SynthbenchError


@dataclass(frozen=True)
class Stage:
    """One training stage. ``fraction`` is its default share of the protocol's epochs."""

    name: str
    fraction: float = 1.0
    description: str = ""


@dataclass
class Update:
    """One optimizer step requested by a synthesizer: minimise ``loss`` with optimizer ``optimizer``.

    ``logs`` are scalars (floats or 0-d tensors) written to the run's step log, e.g. loss
    components or the mean DESUM weight alpha.
    """

    optimizer: str
    loss: torch.Tensor
    logs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerSpec:
    """What the engine needs to build one Adam optimizer (the paper trains every method with Adam).

    ``lr_scale`` multiplies the protocol's base learning rate (SPADE's two-time-scale rule is
    G 0.5x, D 2x of 2e-4). ``betas`` come from the method's paper unless the protocol overrides.
    """

    params: tuple[nn.Parameter, ...]
    lr_scale: float = 1.0
    betas: tuple[float, float] = (0.5, 0.999)


@dataclass
class Batch:
    """A training or synthesis batch; see the module docstring for layouts."""

    image: torch.Tensor
    label: torch.Tensor
    num_classes: int
    lung: torch.Tensor | None = None
    memory_format: torch.memory_format = torch.contiguous_format

    @property
    def onehot(self) -> torch.Tensor:
        return one_hot(self.label, self.num_classes).contiguous(memory_format=self.memory_format)

    def to(self, device: torch.device | str, memory_format=torch.contiguous_format) -> Batch:
        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        image = move(self.image)
        if image.dim() == 4:
            image = image.contiguous(memory_format=memory_format)
        return Batch(image, move(self.label), self.num_classes, move(self.lung), memory_format)

    def __len__(self) -> int:
        return self.label.shape[0]


def one_hot(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``int64 [B, H, W]`` -> contiguous ``float32 [B, C, H, W]`` (NCHW strides).

    ``F.one_hot`` puts the classes last; permuting alone would leave channels-last strides, which
    sends every convolution that reads the map (SPADE/SEAN's 1024-channel ones) into channels-last
    and re-lays-out its weights each step. A caller wanting channels-last converts explicitly.
    """
    return nn.functional.one_hot(label.long(), num_classes).permute(0, 3, 1, 2).float().contiguous()


def set_requires_grad(modules: nn.Module | Iterable[nn.Module], flag: bool) -> None:
    """Freeze or unfreeze networks (pix2pix freezes D while G is optimised)."""
    if isinstance(modules, nn.Module):
        modules = [modules]
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(flag)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Synthesizer(abc.ABC):
    """Base class of a label-map -> CT-slice synthesizer plugin.

    A subclass must define :attr:`name`, :meth:`build_networks`, :meth:`optimizers` and
    :meth:`training_step`, and should define :meth:`default_options` (every hyperparameter of
    its paper, recorded in the run), :attr:`stages` (the paper's model has three),
    :attr:`citation` and :attr:`summary`. It must work for any ``num_classes >= 2`` and any
    ``image_size`` the data set gives; if a size is impossible for the architecture it raises
    :class:`synthbench.SynthesizerConfigError` naming the constraint.

    The engine may replace entries of :attr:`train_nets` by wrapped modules
    (DistributedDataParallel, torch.compile); plugins call networks through
    ``self.train_nets[name]`` inside :meth:`training_step` and through ``self.nets[name]``
    elsewhere. ``self.nets`` always holds the plain modules, so state dicts are wrapper-free.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    stages: ClassVar[tuple[Stage, ...]] = (Stage("main", 1.0, "train all networks jointly"),)
    #: Named option presets (e.g. the paper's ablations); ``--variant NAME`` applies one.
    variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Options that shrink the networks (narrower, fewer blocks) for the CPU-sized ``quick`` and
    #: ``smoke`` protocols, whose runs record them as options used. The ``paper`` protocol never
    #: applies them. Empty: the method always trains at its published size.
    reduced_options: ClassVar[Mapping[str, Any]] = {}
    #: Smallest image size and the multiple every size must be, with the default options; the
    #: conformance kit (:mod:`synthbench.testing`) picks test sizes from these. Declarative only:
    #: the constructor still raises :class:`SynthesizerConfigError` for an impossible size.
    min_size: ClassVar[int] = 1
    size_multiple: ClassVar[int] = 1
    #: Test-time settings the method offers: ``{name: {value: description}}``, the first value the
    #: default (what the method's official test code does). ``synthbench synthesize --test-mode
    #: NAME=VALUE`` picks another; :meth:`generate` reads ``self.test_mode``; synthesis records it.
    test_modes: ClassVar[Mapping[str, Mapping[str, str]]] = {}
    #: Whether :meth:`generate` can use a ``style`` image (SEAN); synthesis passes the real slice
    #: only when asked (``--style real``), and records that the method saw the answer.
    uses_style: ClassVar[bool] = False
    #: The paper's / official code's value of every option (``synthbench.departures.UNSTATED``
    #: where neither fixes one). A default that differs needs a :meth:`departures` entry naming
    #: the option (tested for the built-in methods; listed in docs/departures.md).
    paper_options: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        options: Mapping[str, Any] | None = None,
        variant: str | None = None,
    ):
        if num_classes < 2:
            raise SynthesizerConfigError(f"{self.name}: needs at least 2 label classes, got {num_classes}")
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.variant = variant
        self.options = self.resolve_options(options, variant)
        self.test_mode: dict[str, str] = {name: next(iter(values)) for name, values in self.test_modes.items()}
        self.nets = nn.ModuleDict(self.build_networks())
        self.train_nets: dict[str, nn.Module] = dict(self.nets.items())

    # ----------------------------------------------------------------- configuration
    @classmethod
    def default_options(cls) -> dict[str, Any]:
        """Every method-specific hyperparameter with its paper's value."""
        return {}

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any] | None, variant: str | None) -> dict[str, Any]:
        """Defaults, then the variant's preset, then explicit options; unknown keys are errors."""
        resolved = copy.deepcopy(cls.default_options())
        layers: list[Mapping[str, Any]] = []
        if variant is not None:
            if variant not in cls.variants:
                known = ", ".join(sorted(cls.variants)) or "none"
                raise SynthesizerConfigError(f"{cls.name}: unknown variant {variant!r} (known: {known})")
            layers.append(cls.variants[variant])
        layers.append(options or {})
        for layer in layers:
            for key, value in layer.items():
                if key not in resolved:
                    raise SynthesizerConfigError(
                        f"{cls.name}: unknown option {key!r} (known: {', '.join(sorted(resolved))})"
                    )
                resolved[key] = value
        return resolved

    # ----------------------------------------------------------------- to implement
    @abc.abstractmethod
    def build_networks(self) -> dict[str, nn.Module]:
        """Create every network (generators, discriminators, auxiliary nets), initialised."""

    @abc.abstractmethod
    def optimizers(self, stage: str) -> dict[str, OptimizerSpec]:
        """The optimizers of one stage, by name; names match the ``Update.optimizer`` it yields."""

    @abc.abstractmethod
    def training_step(self, stage: str, batch: Batch) -> Iterator[Update]:
        """Yield the updates of one training iteration of ``stage`` (see the module docstring)."""

    def generator_for(self, stage: str | None = None) -> str:
        """Name of the network that produces the final image (for sample grids); default 'G'."""
        return "G"

    @torch.no_grad()
    def generate(self, onehot: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """Synthesize ``[B, 1, H, W]`` images in ``[-1, 1]`` from ``[B, C, H, W]`` one-hot maps.

        ``style`` is an optional ``[B, 1, H, W]`` reference image for style-based methods (SEAN);
        others ignore it. The default runs ``self.nets[self.generator_for()]`` in eval mode.
        """
        self.check_input(onehot)
        net = self.nets[self.generator_for()]
        was_training = net.training
        net.eval()
        try:
            return net(onehot)
        finally:
            net.train(was_training)

    # ----------------------------------------------------------------- shared helpers
    def check_input(self, onehot: torch.Tensor) -> None:
        if onehot.dim() != 4 or onehot.shape[1] != self.num_classes:
            raise SynthesizerConfigError(
                f"{self.name}: expected a one-hot label map [B, {self.num_classes}, H, W], "
                f"got shape {tuple(onehot.shape)}"
            )
        if onehot.shape[-2:] != (self.image_size, self.image_size):
            raise SynthesizerConfigError(
                f"{self.name}: built for {self.image_size}x{self.image_size} maps, "
                f"got {onehot.shape[-2]}x{onehot.shape[-1]}"
            )

    def sampling(self) -> dict[str, Any]:
        """How :meth:`generate` draws one image, recorded in ``synthesis.json``: ``sampler`` and
        ``steps`` (network evaluations per image for iterative samplers such as diffusion; a GAN
        makes one forward pass), plus method-specific facts (e.g. a guidance scale)."""
        return {"sampler": "single forward pass", "steps": 1}

    def parameter_counts(self) -> dict[str, int]:
        """Exact parameter count of every network, by name."""
        return {name: count_parameters(net) for name, net in self.nets.items()}

    def describe(self) -> dict[str, Any]:
        """Extra facts for ``synthbench info`` (e.g. reference counts, architecture notes)."""
        return {}

    @classmethod
    def departures(cls, options: Mapping[str, Any]) -> list[Any]:
        """Every departure from the method's paper or official code under the resolved ``options``
        (:class:`synthbench.departures.Departure`: both values, why, the option if one selects
        the paper's value)."""
        return []

    def set_test_mode(self, **modes: str) -> None:
        """Choose test-time settings among :attr:`test_modes` (unknown names or values are errors)."""
        for name, value in modes.items():
            if name not in self.test_modes:
                known = ", ".join(sorted(self.test_modes)) or "none"
                raise SynthesizerConfigError(f"{self.name}: no test-time mode {name!r} (has: {known})")
            if value not in self.test_modes[name]:
                raise SynthesizerConfigError(
                    f"{self.name}: test-time mode {name}={value!r} not one of {', '.join(self.test_modes[name])}")
            self.test_mode[name] = value

    def describe_test_mode(self) -> str:
        """The test-time settings in use, in words ("eval mode" when the method offers none)."""
        if not self.test_modes:
            return "eval mode"
        return "; ".join(f"{name}={value} ({self.test_modes[name][value]})" for name, value in self.test_mode.items())

    def pretrained_weights(self) -> list[dict[str, str]]:
        """Pretrained weights this instance uses (``{"name", "path", "sha256"}``), for the manifest."""
        return []

    def state_dict(self) -> dict[str, Any]:
        return {name: net.state_dict() for name, net in self.nets.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = set(self.nets) - set(state)
        if missing:
            raise SynthesizerConfigError(f"{self.name}: checkpoint lacks networks {sorted(missing)}")
        for name, net in self.nets.items():
            net.load_state_dict(state[name])

    def to(self, device: torch.device | str, memory_format=torch.contiguous_format) -> Synthesizer:
        self.nets.to(device=device, memory_format=memory_format)
        return self

    def train(self, mode: bool = True) -> Synthesizer:
        self.nets.train(mode)
        return self

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


class SynthesizerConfigError(SynthbenchError):
    """A synthesizer cannot be built with the requested classes, size or options."""
