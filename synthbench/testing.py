"""Conformance kit for synthesizer plugins: the contract of docs/plugins.md as executable checks.

A plugin's own test suite runs it (the built-in synthesizers pass it too)::

    from synthbench.testing import check_synthesizer
    def test_conforms(tmp_path):
        check_synthesizer(MySynth, workdir=tmp_path)

or, one pytest item per check and case::

    from synthbench.testing import CHECKS, conformance_cases
    @pytest.mark.parametrize("case", conformance_cases(MySynth), ids=str)
    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_conformance(check, case, tmp_path):
        check(MySynth, case, tmp_path)

Every check takes ``(cls, case, workdir)`` and raises :class:`ConformanceError` (an
``AssertionError``) with a message naming the method, the case and what is wrong. Cases are tiny
(2, 3, 4 classes at 32 and 64 px by default; sizes respect :attr:`Synthesizer.min_size` and
:attr:`Synthesizer.size_multiple`). Training goes through the shared engine
(:func:`synthbench.engine.train`, :data:`STEPS_PER_STAGE` steps per stage, CPU, deterministic)
on a small phantom data set (paper Sec. "Data and preprocessing" classes, remapped to the
case's class count) written on the fly with :func:`synthbench.data.prepared.write_prepared`.
Every variant is built too (:func:`check_variants`).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synthbench.errors import SynthbenchError
from synthbench.output_check import output_problem
from synthbench.synthesizer import (
    OptimizerSpec,
    Stage,
    Synthesizer,
    SynthesizerConfigError,
    one_hot,
)

DEFAULT_CLASSES = (2, 3, 4)
DEFAULT_SIZES = (32, 64)
#: Engine steps the training checks run per stage (a loss that turns NaN after step 1 must show).
STEPS_PER_STAGE = 2
#: Seed of every build and of the engine run (the engine seeds python, numpy and torch with it).
SEED = 0


class ConformanceError(AssertionError):
    """A synthesizer breaks the plugin contract (docs/plugins.md); the message says where and how."""


@dataclass(frozen=True)
class Case:
    """One configuration to check: class count, square image size and options for the constructor."""

    num_classes: int
    image_size: int
    options: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    def __str__(self) -> str:
        return f"{self.num_classes}classes-{self.image_size}px"

    def build(self, cls: type[Synthesizer], seed: int = SEED) -> Synthesizer:
        """Build ``cls`` for this case with every RNG seeded as the engine seeds it."""
        _seed_all(seed)
        return cls(num_classes=self.num_classes, image_size=self.image_size, options=dict(self.options or {}))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fail(cls: type, case: Case | None, message: str) -> ConformanceError:
    where = f"{getattr(cls, 'name', cls.__name__)}" + (f" [{case}]" if case is not None else "")
    return ConformanceError(f"{where}: {message}")


# --------------------------------------------------------------------------- cases
def size_constraints(cls: type[Synthesizer]) -> tuple[int, int]:
    """``(min_size, size_multiple)`` the class declares (both default to 1)."""
    return int(getattr(cls, "min_size", 1) or 1), int(getattr(cls, "size_multiple", 1) or 1)


def valid_sizes(cls: type[Synthesizer], sizes: Sequence[int] = DEFAULT_SIZES) -> tuple[int, ...]:
    """Each requested size raised to the smallest size >= it that the class declares buildable."""
    min_size, multiple = size_constraints(cls)
    out: list[int] = []
    for s in sizes:
        s = max(int(s), min_size)
        s = -(-s // multiple) * multiple
        if s not in out:
            out.append(s)
    return tuple(out)


def conformance_cases(
    cls: type[Synthesizer],
    classes: Sequence[int] = DEFAULT_CLASSES,
    sizes: Sequence[int] = DEFAULT_SIZES,
    options: Mapping[str, Any] | None = None,
) -> list[Case]:
    """Every (class count, size) case, sizes adjusted by :func:`valid_sizes`; ``options`` go to each build."""
    return [Case(int(c), s, options) for s in valid_sizes(cls, sizes) for c in classes]


# --------------------------------------------------------------------------- tiny data
def tiny_spec(num_classes: int):
    """A data-set description with ``num_classes`` classes: background, lung, lesions, extra 'other'."""
    from synthbench.data.spec import DatasetSpec, make_classes

    if num_classes < 2:
        raise ValueError("at least two classes")
    if num_classes == 2:
        roles = [("background", "background"), ("lesion", "lesion")]
    elif num_classes == 3:
        roles = [("background", "background"), ("lung", "lung"), ("lesion", "lesion")]
    else:
        roles = [("background", "background"), ("lung", "lung"), ("ground_glass", "lesion"), ("consolidation", "lesion")]
        roles += [(f"tissue_{k}", "other") for k in range(num_classes - 4)]
    region = "lesion" if num_classes == 2 else "lung"  # two classes: no lung mask, the region is the lesion
    return DatasetSpec(name=f"conformance-{num_classes}", classes=make_classes(roles), intensity="hu", region=region)


@lru_cache(maxsize=16)
def _tiny_arrays(num_classes: int, size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Phantom slices (HU -> [-1, 1]) with labels remapped to ``num_classes`` classes."""
    from synthbench.data.phantom import generate_patient
    from synthbench.data.preprocess import to_unit

    patient = generate_patient(SEED, 0, count, max(size, 16))
    spec = tiny_spec(num_classes)
    image = to_unit(patient.image, spec)
    label = patient.label.astype(np.int64)
    if image.shape[-1] != size:
        from synthbench.data.preprocess import resize

        image, label = resize(image, label.astype(np.uint8), size)
        label = label.astype(np.int64)
    if num_classes == 2:
        label = (label > 0).astype(np.int64)
    elif num_classes == 3:
        label = np.minimum(label, 2)
    elif num_classes > 4:
        # split the background into intensity bands so that every extra class occurs
        # (by rank, so the many pixels of equal air value still spread over the bands)
        bands = num_classes - 3
        flat_label, flat_image = label.reshape(-1).copy(), image.reshape(-1)
        bg = np.flatnonzero(flat_label == 0)
        ordered = bg[np.argsort(flat_image[bg], kind="stable")]
        for k, chunk in enumerate(np.array_split(ordered, bands)):
            if k:
                flat_label[chunk] = 3 + k
        label = flat_label.reshape(label.shape)
    return image.astype(np.float32), label.astype(np.uint8)


def tiny_batch(num_classes: int, size: int, count: int = 2):
    """``(image [B,1,H,W] float32 in [-1,1], label [B,H,W] int64)`` of phantom slices."""
    image, label = _tiny_arrays(num_classes, size, max(count, 2))
    return torch.from_numpy(image[:count]).unsqueeze(1).clone(), torch.from_numpy(label[:count]).long()


def write_tiny_dataset(out_dir: str | Path, num_classes: int, size: int, count: int = 2) -> Path:
    """A prepared data set (``train`` and ``test`` splits of ``count`` phantom slices) for the engine."""
    from synthbench.data.prepared import SplitArrays, write_prepared

    image, label = _tiny_arrays(num_classes, size, count)
    split = SplitArrays(image.astype(np.float16), label, ["conformance"] * count, list(range(count)), [0] * count)
    write_prepared(out_dir, tiny_spec(num_classes), {"train": split, "test": split},
                   source={"name": "conformance phantom", "kind": "phantom"}, options={"size": size})
    return Path(out_dir)


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def registered(cls: type[Synthesizer]) -> Iterator[None]:
    """Make ``cls`` resolvable by name in the process registry (as an installed plugin would be)."""
    from synthbench.plugins import get_registry

    table = get_registry().synthesizers
    before = table.get(cls.name, None)
    table[cls.name] = cls
    try:
        yield
    finally:
        if before is None:
            table.pop(cls.name, None)
        else:
            table[cls.name] = before


def _generate(synth: Synthesizer, onehot: torch.Tensor, style: torch.Tensor | None = None, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)  # a generator may sample noise; outputs are compared at equal seeds
    return synth.generate(onehot, style=style)


def _check_output(cls, case: Case, out: Any, batch: int, what: str) -> None:
    problem = output_problem(out, batch, case.image_size)  # the engine's and synthesis's check too
    if problem is not None:
        raise _fail(cls, case, f"{what} {problem}")
    if out.requires_grad:
        raise _fail(cls, case, f"{what} output requires grad; generate must run under torch.no_grad()")


def _state_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """None if equal, else the first differing key."""
    if set(a) != set(b):
        return f"keys differ: {sorted(set(a) ^ set(b))[:5]}"
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, Mapping):
            diff = _state_equal(va, vb)
            if diff:
                return f"{k}.{diff}"
        elif isinstance(va, torch.Tensor):
            if va.shape != vb.shape or not torch.equal(va, vb):
                return str(k)
        elif va != vb:
            return str(k)
    return None


def _inputs(case: Case, count: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    image, label = tiny_batch(case.num_classes, case.image_size, count)
    return one_hot(label, case.num_classes), image


# --------------------------------------------------------------------------- checks
def check_declaration(cls: type[Synthesizer], case: Case, workdir: Path | None = None) -> None:
    """Class attributes (name, stages, options, variants, size constraints) and constructor errors."""
    if not (isinstance(cls, type) and issubclass(cls, Synthesizer)):
        raise _fail(cls, case, "is not a subclass of synthbench.Synthesizer")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or any(ch.isspace() or ch in ",:" for ch in name):
        raise _fail(cls, case, f"class attribute 'name' must be a non-empty string without spaces, ',' or ':', got {name!r}")
    stages = cls.stages
    if not isinstance(stages, tuple) or not stages or not all(isinstance(s, Stage) for s in stages):
        raise _fail(cls, case, "'stages' must be a non-empty tuple of synthbench.Stage")
    if len({s.name for s in stages}) != len(stages) or any(s.fraction <= 0 for s in stages):
        raise _fail(cls, case, f"stage names must be unique and fractions > 0, got {stages}")
    defaults = cls.default_options()
    if not isinstance(defaults, dict):
        raise _fail(cls, case, f"default_options() must return a dict, got {type(defaults).__name__}")
    try:
        json.dumps(defaults, default=str)
    except (TypeError, ValueError) as exc:
        raise _fail(cls, case, f"default_options() is not JSON-serialisable (recorded in config.json): {exc}") from exc
    for variant in cls.variants:
        try:
            cls.resolve_options(None, variant)
        except SynthesizerConfigError as exc:
            raise _fail(cls, case, f"variant {variant!r} does not resolve: {exc}") from exc
    min_size, multiple = size_constraints(cls)
    if min_size < 1 or multiple < 1:
        raise _fail(cls, case, f"min_size ({min_size}) and size_multiple ({multiple}) must be >= 1")
    bad_builds: list[tuple[str, int, int, Mapping[str, Any]]] = [
        ("1 class", 1, case.image_size, {}),
        ("an unknown option", case.num_classes, case.image_size, {"no_such_option_xyz": 1}),
    ]
    if multiple > 1:
        bad_builds.append((f"size {case.image_size + multiple // 2} (not a multiple of size_multiple={multiple})",
                           case.num_classes, case.image_size + multiple // 2, {}))
    for what, classes, size, extra in bad_builds:
        try:
            _seed_all(SEED)
            cls(num_classes=classes, image_size=size, options={**(case.options or {}), **extra})
        except SynthesizerConfigError:
            continue
        except Exception as exc:  # noqa: BLE001 - the point is which exception
            raise _fail(cls, case, f"building with {what} raised {type(exc).__name__}: {exc}; "
                        "expected synthbench.SynthesizerConfigError") from exc
        raise _fail(cls, case, f"building with {what} did not raise synthbench.SynthesizerConfigError")


def check_build(cls: type[Synthesizer], case: Case, workdir: Path | None = None) -> None:
    """Networks, parameter counts and one optimizer spec per stage over the instance's own parameters."""
    try:
        synth = case.build(cls)
    except SynthesizerConfigError as exc:
        raise _fail(cls, case, f"cannot be built: {exc} (declare min_size / size_multiple if the size is "
                    "impossible, or pass other sizes to the kit)") from exc
    if not isinstance(synth.nets, nn.ModuleDict) or len(synth.nets) == 0:
        raise _fail(cls, case, "build_networks() must return a non-empty dict of nn.Module")
    for stage in synth.stages:
        gen = synth.generator_for(stage.name)
        if gen not in synth.nets:
            raise _fail(cls, case, f"generator_for({stage.name!r}) = {gen!r} is not one of the networks {list(synth.nets)}")
    counts = synth.parameter_counts()
    if set(counts) != set(synth.nets) or any(not isinstance(n, int) or n < 0 for n in counts.values()):
        raise _fail(cls, case, f"parameter_counts() must give an int per network, got {counts}")
    if sum(counts.values()) == 0:
        raise _fail(cls, case, "has no parameters")
    own = {id(p) for p in synth.nets.parameters()}
    for stage in synth.stage_names():
        specs = synth.optimizers(stage)
        if not isinstance(specs, dict) or not specs:
            raise _fail(cls, case, f"optimizers({stage!r}) must return a non-empty dict of OptimizerSpec")
        for opt_name, spec in specs.items():
            if not isinstance(spec, OptimizerSpec):
                raise _fail(cls, case, f"optimizers({stage!r})[{opt_name!r}] is {type(spec).__name__}, not OptimizerSpec")
            params = list(spec.params)
            if not params or any(id(p) not in own for p in params):
                raise _fail(cls, case, f"optimizers({stage!r})[{opt_name!r}] must hold parameters of self.nets "
                            "(a non-empty tuple)")
            if not spec.lr_scale > 0 or len(spec.betas) != 2:
                raise _fail(cls, case, f"optimizers({stage!r})[{opt_name!r}]: lr_scale > 0 and two betas required")
    if not isinstance(synth.describe(), dict) or not isinstance(synth.pretrained_weights(), list):
        raise _fail(cls, case, "describe() must return a dict and pretrained_weights() a list")


#: The largest size :func:`check_variants` tries for a variant that needs more than the case's size.
MAX_VARIANT_SIZE = 256


def check_variants(cls: type[Synthesizer], case: Case, workdir: Path | None = None) -> None:
    """Every variant builds (its own keys win over the case's options, as the engine applies them
    over the reduced build), has optimizers for each stage and generates conforming output. A
    variant that refuses the case's size with :class:`SynthesizerConfigError` is tried at twice
    the size, up to :data:`MAX_VARIANT_SIZE`."""
    for variant, preset in cls.variants.items():
        options = {k: v for k, v in (case.options or {}).items() if k not in preset}
        size, synth = case.image_size, None
        while synth is None:
            try:
                _seed_all(SEED)
                synth = cls(num_classes=case.num_classes, image_size=size, options=options, variant=variant)
            except SynthesizerConfigError as exc:
                if size * 2 > MAX_VARIANT_SIZE:
                    raise _fail(cls, case, f"variant {variant!r} cannot be built at any size from "
                                f"{case.image_size} to {MAX_VARIANT_SIZE} px: {exc}") from exc
                size *= 2
            except Exception as exc:  # noqa: BLE001 - any other failure to build is the finding
                raise _fail(cls, case, f"variant {variant!r} cannot be built: {type(exc).__name__}: {exc}") from exc
        for stage in synth.stage_names():
            if not synth.optimizers(stage):
                raise _fail(cls, case, f"variant {variant!r}: optimizers({stage!r}) is empty")
        at = Case(case.num_classes, size, case.options)
        onehot, image = _inputs(at)
        _check_output(cls, at, _generate(synth, onehot, image), 2, f"variant {variant!r}: generate()")


def check_generate(cls: type[Synthesizer], case: Case, workdir: Path | None = None) -> None:
    """generate(): [B,1,H,W] float32 in [-1,1], no grad, nets left in their mode, style optional."""
    synth = case.build(cls)
    synth.train(True)
    onehot, image = _inputs(case)
    _check_output(cls, case, _generate(synth, onehot), 2, "generate(onehot)")
    _check_output(cls, case, _generate(synth, onehot, style=image), 2, "generate(onehot, style=image)")
    _check_output(cls, case, _generate(synth, onehot[:1]), 1, "generate(onehot) with batch size 1")
    if not all(m.training for m in synth.nets.values()):
        raise _fail(cls, case, "generate() left networks in eval mode; restore their training flag")


def check_input_errors(cls: type[Synthesizer], case: Case, workdir: Path | None = None) -> None:
    """Wrong channel count, wrong size or a 3-D map -> SynthesizerConfigError (not a shape crash)."""
    synth = case.build(cls)
    onehot, _ = _inputs(case)
    C, S = case.num_classes, case.image_size
    wrong = {
        f"{C + 1} channels": one_hot(torch.zeros(2, S, S, dtype=torch.long), C + 1),
        f"{S // 2}x{S // 2} maps": onehot[..., : S // 2, : S // 2].contiguous(),
        "a 3-D [C, H, W] map": onehot[0],
    }
    for what, tensor in wrong.items():
        try:
            synth.generate(tensor)
        except SynthesizerConfigError:
            continue
        except Exception as exc:  # noqa: BLE001
            raise _fail(cls, case, f"generate() with {what} raised {type(exc).__name__}: {exc}; expected "
                        "SynthesizerConfigError (call self.check_input(onehot))") from exc
        raise _fail(cls, case, f"generate() with {what} did not raise SynthesizerConfigError")


def check_state_dict_roundtrip(cls: type[Synthesizer], case: Case, workdir: Path | None = None) -> None:
    """state_dict -> torch.save -> torch.load(weights_only=True) -> load_state_dict gives identical outputs."""
    a = case.build(cls, seed=SEED)
    b = case.build(cls, seed=SEED + 1)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    try:
        state = torch.load(buf, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise _fail(cls, case, f"state_dict() does not load with torch.load(weights_only=True): {exc}") from exc
    b.load_state_dict(state)
    diff = _state_equal(a.state_dict(), b.state_dict())
    if diff:
        raise _fail(cls, case, f"state dict differs after load_state_dict at {diff}")
    onehot, image = _inputs(case)
    if not torch.equal(_generate(a, onehot, image), _generate(b, onehot, image)):
        raise _fail(cls, case, "outputs differ after a state-dict round trip (state kept outside self.nets?)")


def check_determinism(cls: type[Synthesizer], case: Case, workdir: Path | None = None) -> None:
    """Two builds with the same seed have equal weights and give equal outputs on CPU."""
    a, b = case.build(cls), case.build(cls)
    diff = _state_equal(a.state_dict(), b.state_dict())
    if diff:
        raise _fail(cls, case, f"two builds with the same seed differ at {diff} (use torch RNGs only)")
    onehot, image = _inputs(case)
    if not torch.equal(_generate(a, onehot, image), _generate(b, onehot, image)):
        raise _fail(cls, case, "same seed, same weights, different outputs")


def stage_epochs(stages: Sequence[Stage], steps: int = STEPS_PER_STAGE) -> int:
    """The fewest epochs for which the engine's plan gives every stage at least ``steps`` one-batch
    epochs (:func:`synthbench.engine.plan_stages` with one batch per epoch)."""
    from synthbench.engine.loop import plan_stages

    for epochs in range(steps, 1000 * steps):
        if all(p.steps >= steps for p in plan_stages(stages, epochs, 1, None)):
            return epochs
    raise ValueError(f"stage fractions {[s.fraction for s in stages]} are too small for {steps} steps each")


def planned_stage_steps(stages: Sequence[Stage], epochs: int) -> list[int]:
    """Steps per stage of a run of ``epochs`` one-batch epochs (:func:`synthbench.engine.plan_stages`)."""
    from synthbench.engine.loop import plan_stages

    return [p.steps for p in plan_stages(stages, epochs, 1, None)]


def _train(cls, case: Case, workdir: Path, tag: str):
    """Train through the engine: at least :data:`STEPS_PER_STAGE` steps per stage (one batch an epoch)."""
    from synthbench.engine import train

    data = workdir / f"data-{case.num_classes}-{case.image_size}"
    if not (data / "manifest.json").is_file():
        write_tiny_dataset(data, case.num_classes, case.image_size, count=2)
    run = workdir / f"run-{cls.name}-{case}-{tag}"
    epochs = stage_epochs(case.build(cls).stages)
    overrides = {"epochs": epochs, "batch_size": 2, "max_steps": None, "device": "cpu", "precision": "fp32",
                 "deterministic": True, "sample_count": 2, "checkpoint_every": 1000, "keep_last_n": 1,
                 "train_split": "train"}
    from dataclasses import fields

    from synthbench.engine import Protocol

    if "reduced_networks" in {f.name for f in fields(Protocol)}:
        overrides["reduced_networks"] = False  # train exactly the case's options (what the kit built)
    with registered(cls):
        try:
            result = train(cls.name, data, run, protocol="smoke", seed=SEED,
                           options=dict(case.options or {}) or None, overrides=overrides, show_progress=False)
        except SynthbenchError as exc:  # a NaN loss, a broken output contract...: the engine's own words
            raise _fail(cls, case, f"engine run failed: {exc}") from exc
    return result


@contextlib.contextmanager
def _workdir(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="synthbench-conformance-") as tmp:
            yield Path(tmp)


def check_training(cls: type[Synthesizer], case: Case, workdir: Path | None = None) -> None:
    """Through the engine: a few steps per stage, finite losses, the generator learns, weights reload."""
    from synthbench.engine import load_synthesizer

    with _workdir(workdir) as wd:
        initial = case.build(cls).state_dict()
        result = _train(cls, case, wd, "a")
        synth = result.synthesizer
        names = synth.stage_names()
        per_stage = planned_stage_steps(synth.stages, stage_epochs(synth.stages))
        expected = [n for n, k in zip(names, per_stage, strict=True) for _ in range(k)]
        if result.status != "finished" or result.steps != len(expected):
            raise _fail(cls, case, f"engine run {result.status} after {result.steps} steps, expected "
                        f"{len(expected)} ({dict(zip(names, per_stage, strict=True))} per stage)")
        records = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines() if line]
        if [r["stage"] for r in records] != expected:
            raise _fail(cls, case, f"stages ran as {[r['stage'] for r in records]}, expected {expected}")
        for r in records:
            if not any(k.startswith("loss/") for k in r):
                raise _fail(cls, case, f"stage {r['stage']!r} yielded no Update")
        gen = synth.generator_for(names[-1])
        if _state_equal(initial[gen], synth.state_dict()[gen]) is None:
            raise _fail(cls, case, f"generator {gen!r} is unchanged after training (no gradient reaches it?)")
        with registered(cls):
            reloaded = load_synthesizer(result.run_dir, device="cpu")
        onehot, image = _inputs(case)
        out = _generate(synth, onehot, image)
        _check_output(cls, case, out, 2, "generate() after training")
        if not torch.equal(out, _generate(reloaded, onehot, image)):
            raise _fail(cls, case, "the engine's saved final weights give other outputs than the trained model")


def check_training_determinism(cls: type[Synthesizer], case: Case, workdir: Path | None = None) -> None:
    """Two engine runs with the same seed on CPU end with identical weights (reproducible runs)."""
    with _workdir(workdir) as wd:
        a = _train(cls, case, wd, "seed-a").synthesizer.state_dict()
        b = _train(cls, case, wd, "seed-b").synthesizer.state_dict()
        diff = _state_equal(a, b)
        if diff:
            raise _fail(cls, case, f"two runs with the same seed end with different weights at {diff}")


#: Every check, in order; each is ``check(cls, case, workdir)``.
CHECKS: tuple[Callable[..., None], ...] = (
    check_declaration,
    check_build,
    check_variants,
    check_generate,
    check_input_errors,
    check_state_dict_roundtrip,
    check_determinism,
    check_training,
    check_training_determinism,
)


@dataclass
class CheckResult:
    check: str
    case: str
    seconds: float
    error: str | None = None


def check_synthesizer(
    cls: type[Synthesizer],
    classes: Sequence[int] = DEFAULT_CLASSES,
    sizes: Sequence[int] = DEFAULT_SIZES,
    options: Mapping[str, Any] | None = None,
    workdir: str | Path | None = None,
    checks: Sequence[Callable[..., None]] = CHECKS,
    raise_on_failure: bool = True,
) -> list[CheckResult]:
    """Run every check on every case; raise one :class:`ConformanceError` listing all failures."""
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    results: list[CheckResult] = []
    with _workdir(Path(workdir) if workdir is not None else None) as wd:
        for case in conformance_cases(cls, classes, sizes, options):
            for check in checks:
                t0 = time.perf_counter()
                error = None
                try:
                    check(cls, case, wd)
                except ConformanceError as exc:
                    error = str(exc)
                except Exception as exc:  # noqa: BLE001 - a crash is a failure too, reported with the rest
                    error = f"{getattr(cls, 'name', cls)} [{case}]: {check.__name__} crashed: {type(exc).__name__}: {exc}"
                results.append(CheckResult(check.__name__, str(case), time.perf_counter() - t0, error))
    failures = [r for r in results if r.error]
    if failures and raise_on_failure:
        lines = "\n".join(f"  {r.check}: {r.error}" for r in failures)
        raise ConformanceError(f"{len(failures)} of {len(results)} conformance checks failed:\n{lines}")
    return results


__all__ = [
    "CHECKS",
    "Case",
    "CheckResult",
    "ConformanceError",
    "check_build",
    "check_declaration",
    "check_determinism",
    "check_generate",
    "check_input_errors",
    "check_state_dict_roundtrip",
    "check_synthesizer",
    "check_training",
    "check_training_determinism",
    "check_variants",
    "conformance_cases",
    "registered",
    "stage_epochs",
    "tiny_batch",
    "tiny_spec",
    "valid_sizes",
    "write_tiny_dataset",
]
