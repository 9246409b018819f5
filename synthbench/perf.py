"""Performance benchmarks: training / inference throughput, peak memory, data loading, FLOPs.

What is measured (issue 9; ``benchmarks/perf.py`` is the command-line front end):

* **train** -- images per second of one full training iteration of a synthesizer stage: every
  ``Update`` of :meth:`Synthesizer.training_step` with its backward and optimizer step, driven by
  the engine's own step function :func:`synthbench.engine.loop._iteration` (the function
  ``train`` calls once per batch), with Adam built exactly as ``_train`` builds it (parameters
  requiring grad, ``lr = protocol.lr * lr_scale``, the spec's betas, ``fused`` wherever torch supports it) and the
  paper's ``LambdaLR`` stepped once per iteration. Synthesizers with several stages (ours: global,
  local, joint) are measured per stage.
* **infer** -- images per second of :meth:`Synthesizer.generate` (eval mode, no grad), at the
  sampler's steps (:meth:`Synthesizer.sampling`, column ``sampling_steps``: 1 for a GAN, e.g.
  1000 DDPM steps for SDM). An iterative sampler's ``generate`` is timed once per repetition
  after at most one warm-up call (each call already runs every step).
* **loader** -- images per second of the engine's ``DataLoader`` over the prepared, memory-mapped
  split (same batch size, ``collate_fn``, ``pin_memory`` on CUDA, sampler, and the host->device
  copy ``Batch.to``), and its ratio to the fastest training step at that size.
* Each combination of precision (fp32 / bf16 autocast), ``channels_last`` and ``torch.compile``;
  a combination that fails is recorded with its reason instead of stopping the benchmark.
* Warm-up iterations are excluded; ``reps`` timed repetitions give the median, the inter-quartile
  range and min / max. Peak memory: CUDA ``torch.cuda.max_memory_allocated`` (reset per
  combination), CPU the process's peak resident set ``VmHWM`` from ``/proc/self/status``, reset per
  combination through ``/proc/self/clear_refs`` (when the kernel refuses, the lifetime peak is
  reported and marked so).
* FLOPs per image-step of a full training iteration (``torch.utils.flop_counter.FlopCounterMode``
  divided by the batch size) and on a GPU the achieved fraction of its peak dense bf16 throughput.
* The paper protocol's cost (paper Sec. "Training settings": 20 epochs over the 12,000 augmented
  training images; stage i of a synthesizer runs ``round(fraction_i * 20)`` epochs, exactly as
  :func:`synthbench.engine.plan_stages` plans it) from the measured training throughput.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthbench.errors import SynthbenchError
from synthbench.io import atomic_write_text

#: Paper Sec. "Training settings": 20 epochs over the 300 -> 12,000 augmented training images.
PAPER_EPOCHS = 20
PAPER_TRAIN_IMAGES = 12_000

#: Peak dense bf16 tensor-core throughput (TFLOP/s, no sparsity) from the vendors' data sheets.
#: Assumption: SXM parts at boost clock; PCIe / NVL variants of a name are matched by substring.
PEAK_BF16_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "A10G": 70.0,
    "L40S": 362.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "TITAN RTX": 130.0,  # fp16 tensor cores (Turing has no bf16); the paper's GPUs
}

CSV_COLUMNS = (
    "kind", "method", "stage", "size", "batch_size", "device", "precision", "channels_last", "compile",
    "status", "reason", "warmup", "reps", "steps_per_rep",
    "images_per_s_median", "images_per_s_q1", "images_per_s_q3", "images_per_s_min", "images_per_s_max",
    "peak_memory_mb", "memory_kind", "loader_ratio", "stage_epochs", "paper_cost_hours", "cost_unit",
    "flops_per_image", "achieved_tflops", "peak_fraction", "sampling_steps",
)


# ----------------------------------------------------------------------------- configuration
@dataclass
class PerfConfig:
    """What to measure. ``data_dir`` None: a phantom data set is prepared per size in a temp dir."""

    methods: list[str]
    sizes: list[int] = field(default_factory=lambda: [256, 512])
    batch_size: int = 16
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    channels_last: list[bool] = field(default_factory=lambda: [False, True])
    compile: list[bool] = field(default_factory=lambda: [False])
    warmup: int = 2
    reps: int = 5
    steps_per_rep: int = 2
    device: str = "auto"
    data_dir: Path | None = None
    split: str = "auto"
    workers: int = 0
    loader_batches: int = 20
    inference: bool = True
    flops: bool = True
    flops_method: str = "ours"
    flops_size: int = 512
    flops_precision: str = "bf16"
    flops_batch_size: int | None = None
    seed: int = 0
    #: Per-method option overrides, e.g. ``{"sdm": {"sampling_steps": 50, "sampler": "ddim"}}``
    #: (default: every method at its published configuration).
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> PerfConfig:
        problems = []
        if not self.methods:
            problems.append("no methods given")
        for p in self.precisions:
            if p not in ("fp32", "bf16"):
                problems.append(f"precision must be fp32 or bf16, got {p!r}")
        for name in ("batch_size", "reps", "steps_per_rep", "loader_batches"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            problems.append(f"warmup must be >= 0, got {self.warmup}")
        if any(s < 8 for s in self.sizes):
            problems.append(f"sizes must be >= 8, got {self.sizes}")
        if problems:
            raise SynthbenchError("perf: " + "; ".join(problems))
        return self


# ----------------------------------------------------------------------------- hardware / memory
def hardware_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, GPU name, torch / CUDA versions (what the Markdown table names)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "gpu": None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        peak = peak_bf16_tflops(info["gpu"])
        info["gpu_peak_bf16_tflops"] = peak
    return info


def peak_bf16_tflops(gpu_name: str) -> float | None:
    """Known peak dense bf16 TFLOP/s of ``gpu_name`` (longest matching key), None if unknown."""
    name = gpu_name.upper()
    best = None
    for key, value in PEAK_BF16_TFLOPS.items():
        if key.upper() in name and (best is None or len(key) > len(best[0])):
            best = (key, value)
    return best[1] if best else None


def _proc_status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class MemoryMeter:
    """Peak memory of one combination: CUDA max allocated, or CPU peak RSS (``VmHWM``)."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
            return
        try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
            self.kind = "cpu_peak_rss"
        except OSError:
            self.kind = "cpu_peak_rss_lifetime"

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        kb = _proc_status_kb("VmHWM")
        return None if kb is None else kb / 1024


# ----------------------------------------------------------------------------- timing
def summarize(samples: list[float]) -> dict[str, float]:
    """Median, quartiles (linear interpolation, as numpy) and range of throughput samples."""
    arr = np.asarray(samples, dtype=float)
    return {
        "images_per_s_median": float(np.median(arr)),
        "images_per_s_q1": float(np.percentile(arr, 25)),
        "images_per_s_q3": float(np.percentile(arr, 75)),
        "images_per_s_min": float(arr.min()),
        "images_per_s_max": float(arr.max()),
    }


def time_throughput(fn: Callable[[], None], images_per_call: int, warmup: int, reps: int, calls_per_rep: int,
                    device: torch.device) -> list[float]:
    """Images/s of ``reps`` repetitions of ``calls_per_rep`` calls each, after ``warmup`` calls."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls_per_rep):
            fn()
        sync()
        samples.append(images_per_call * calls_per_rep / max(time.perf_counter() - t0, 1e-12))
    return samples


# ----------------------------------------------------------------------------- building blocks
def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SynthbenchError(f"perf: device {requested!r} requested but CUDA is not available")
    return torch.device(requested)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def build_synthesizer(method: str, num_classes: int, size: int, device: torch.device, channels_last: bool,
                      compile_nets: bool, seed: int, options: dict[str, Any] | None = None):
    """A fresh synthesizer on ``device`` with the engine's memory format and compile wrapping."""
    from synthbench.plugins import get_registry

    torch.manual_seed(seed)
    cls = get_registry().synthesizer(method)
    synth = cls(num_classes=num_classes, image_size=size, options=options)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    synth.to(device, memory_format=fmt)
    if compile_nets:  # as synthbench.engine.loop._train does for protocol.compile
        for name, net in list(synth.train_nets.items()):
            synth.train_nets[name] = torch.compile(net)
    return synth


def build_optimizers(synth, stage: str, device: torch.device, steps: int):
    """Adam + LambdaLR per optimizer spec, exactly as ``synthbench.engine.loop._train`` builds them."""
    from synthbench.engine.loop import fused_adam_unsupported, lr_lambda
    from synthbench.engine.protocol import PAPER

    specs = synth.optimizers(stage)
    # the engine's fused_adam="auto": fused wherever the installed torch supports every parameter
    fused = all(fused_adam_unsupported(spec.params) is None for spec in specs.values())
    optimizers, schedulers = {}, {}
    for name, spec in specs.items():
        params = [p for p in spec.params if p.requires_grad]
        kwargs = {"fused": True} if fused else {}
        optimizers[name] = torch.optim.Adam(params, lr=PAPER.lr * spec.lr_scale, betas=tuple(spec.betas), **kwargs)
        schedulers[name] = torch.optim.lr_scheduler.LambdaLR(
            optimizers[name], lr_lambda(steps, PAPER.lr_schedule, PAPER.decay_start))
    return optimizers, schedulers


def make_train_step(synth, method: str, stage: str, batch, device: torch.device, precision: str, total_steps: int):
    """A closure running one engine iteration (``_iteration`` + scheduler steps) on ``batch``."""
    from synthbench.engine.loop import _iteration

    optimizers, schedulers = build_optimizers(synth, stage, device, max(total_steps, 1))
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # fp16 only in the engine
    autocast = _autocast(device, precision)
    counter = [0]

    def step() -> None:
        synth.train(True)
        _iteration(synth, stage, batch, optimizers, scaler, autocast, method, counter[0])
        for sch in schedulers.values():
            sch.step()
        counter[0] += 1

    return step


def make_infer_step(synth, batch, precision: str, device: torch.device, channels_last: bool):
    """A closure running :meth:`Synthesizer.generate` on the batch's label maps (style: the real slice)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    onehot = batch.onehot.to(batch.image.dtype).contiguous(memory_format=fmt)
    autocast = _autocast(device, precision)

    def step() -> None:
        with autocast():
            synth.generate(onehot, style=batch.image)

    return step


def load_or_make_data(cfg: PerfConfig, size: int, tmp_root: Path):
    """The prepared data set to read: ``cfg.data_dir`` (must match ``size``), else a phantom at ``size``."""
    from synthbench.data.prepared import PreparedDataset

    if cfg.data_dir is not None:
        ds = PreparedDataset(cfg.data_dir)
        if ds.size != size:
            raise SynthbenchError(f"perf: prepared data set is {ds.size}px, benchmark size is {size}px", cfg.data_dir)
        return ds
    from synthbench.data.prepare import prepare_phantom

    out = tmp_root / f"phantom_{size}"
    if not (out / "manifest.json").is_file():
        # Enough slices for the loader measurement; content is irrelevant to throughput.
        prepare_phantom(out, size=size, patients=4, slices_per_patient=4, seed=cfg.seed, train_factor=2,
                        test_factor=1, keep_all_slices=True)
    return PreparedDataset(out)


def _split_name(ds, requested: str) -> str:
    if requested != "auto":
        return requested
    return "train_aug" if ds.has_split("train_aug") else "train"


def fixed_batch(ds, split: str, batch_size: int, device: torch.device, channels_last: bool):
    """``batch_size`` samples (cycling if the split is smaller) as a device Batch, engine layout."""
    dataset = ds.torch_dataset(split)
    if len(dataset) == 0:
        raise SynthbenchError(f"perf: split {split!r} is empty", ds.root)
    items = [dataset[i % len(dataset)] for i in range(batch_size)]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return ds.collate(items).to(device, fmt)


def measure_loader(ds, split: str, batch_size: int, device: torch.device, workers: int, batches: int,
                   warmup: int, reps: int) -> list[float]:
    """Images/s of the engine's DataLoader (+ host->device copy) over ``split``; one rep = ``batches`` batches."""
    from torch.utils.data import DataLoader, DistributedSampler

    from synthbench.engine.loop import _ListSampler

    dataset = ds.torch_dataset(split)
    bs = min(batch_size, len(dataset))
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0)
    on_cuda = device.type == "cuda"
    fmt = torch.channels_last if on_cuda else torch.contiguous_format
    samples = []
    epoch = 0

    def batches_iter():
        nonlocal epoch
        while True:
            sampler.set_epoch(epoch)
            epoch += 1
            indices = list(sampler)[: (len(dataset) // bs) * bs]
            loader = DataLoader(dataset, batch_size=bs, sampler=_ListSampler(indices), collate_fn=ds.collate,
                                num_workers=workers, drop_last=True, pin_memory=on_cuda, persistent_workers=False)
            yield from loader

    it = batches_iter()
    for _ in range(warmup):
        next(it).to(device, fmt)
    for _ in range(reps):
        if on_cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(batches):
            next(it).to(device, fmt)
        if on_cuda:
            torch.cuda.synchronize(device)
        samples.append(bs * batches / max(time.perf_counter() - t0, 1e-12))
    return samples


def count_training_flops(method: str, stage: str | None, ds, size: int, batch_size: int, device: torch.device,
                         precision: str, seed: int) -> tuple[float, str]:
    """FLOPs of one full training iteration per image (FlopCounterMode / batch size) and the stage used.

    ``stage`` None: the synthesizer's last stage (ours: joint, its full model). Counted ops:
    matmuls and convolutions forward and backward (the counter's registry); element-wise ops and
    the optimizer are not counted, as usual for model FLOPs.
    """
    from torch.utils.flop_counter import FlopCounterMode

    synth = build_synthesizer(method, ds.num_classes, size, device, device.type == "cuda", False, seed)
    stage = stage or synth.stage_names()[-1]
    batch = fixed_batch(ds, _split_name(ds, "auto"), batch_size, device, device.type == "cuda")
    step = make_train_step(synth, method, stage, batch, device, precision, 10)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops() / batch_size, stage


# ----------------------------------------------------------------------------- the benchmark
def _row(**kw) -> dict[str, Any]:
    row = dict.fromkeys(CSV_COLUMNS)
    row.update(kw)
    return row


def _short_reason(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:200]


def run_benchmark(cfg: PerfConfig, show_progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every measurement of ``cfg``; return ``{"hardware": ..., "config": ..., "rows": [...]}``."""
    from synthbench.plugins import get_registry

    cfg.validate()
    device = resolve_device(cfg.device)
    registry = get_registry()
    for m in cfg.methods:
        registry.synthesizer(m)  # unknown method -> SynthbenchError before any work
    on_cuda = device.type == "cuda"
    cudnn_before = torch.backends.cudnn.benchmark
    if on_cuda:  # engine default outside deterministic mode
        torch.backends.cudnn.benchmark = True
    rows: list[dict[str, Any]] = []
    meter = MemoryMeter(device)
    combos = [(p, cl, co) for p in cfg.precisions for cl in cfg.channels_last for co in cfg.compile]
    say = log or (lambda s: None)

    progress_cm: Any = contextlib.nullcontext(None)
    if show_progress:
        from synthbench.cli.console import progress

        progress_cm = progress()
    try:
        with tempfile.TemporaryDirectory(prefix="synthbench-perf-") as tmp, progress_cm as bar:
            tmp_root = Path(tmp)
            stage_lists: dict[tuple[str, int], tuple] = {}
            total = len(cfg.sizes) * (1 + len(combos) * sum(len(registry.synthesizer(m).stages) + int(cfg.inference)
                                                            for m in cfg.methods))
            task = bar.add_task("perf", total=total) if bar is not None else None

            def advance(desc: str) -> None:
                say(desc)
                if bar is not None:
                    bar.update(task, advance=1, description=desc)

            for size in cfg.sizes:
                ds = load_or_make_data(cfg, size, tmp_root)
                split = _split_name(ds, cfg.split)
                base = {"size": size, "batch_size": cfg.batch_size, "device": str(device)}
                for method in cfg.methods:
                    for precision, cl, co in combos:
                        combo = {**base, "method": method, "precision": precision, "channels_last": cl, "compile": co}
                        try:  # one instance per combination, reused by its stages and by inference
                            meter.reset()
                            synth = build_synthesizer(method, ds.num_classes, size, device, cl, co, cfg.seed,
                                                      cfg.method_options.get(method))
                            stages = synth.stage_names()
                            stage_lists[(method, size)] = tuple(synth.stages)
                        except Exception as exc:  # noqa: BLE001 - recorded, benchmark goes on
                            rows.append(_row(kind="train", stage=None, status="skipped", reason=_short_reason(exc), **combo))
                            advance(f"{method} {size}px {precision}: skipped")
                            continue
                        for stage in stages:
                            rows.append(_measure(cfg, "train", synth, method, stage, ds, split, device, precision,
                                                 cl, co, meter, combo))
                            advance(f"train {method}/{stage} {size}px {precision}{' cl' if cl else ''}{' compile' if co else ''}")
                        if cfg.inference:
                            rows.append(_measure(cfg, "infer", synth, method, None, ds, split, device, precision,
                                                 cl, co, meter, combo))
                            advance(f"infer {method} {size}px {precision}{' cl' if cl else ''}{' compile' if co else ''}")
                        del synth
                        if on_cuda:
                            torch.cuda.empty_cache()
                # data loader alone
                meter.reset()
                try:
                    samples = measure_loader(ds, split, cfg.batch_size, device, cfg.workers, cfg.loader_batches,
                                             min(cfg.warmup, 2), cfg.reps)
                    rows.append(_row(kind="loader", method="(data loader)", stage=split, status="ok", reason="",
                                     precision="-", channels_last=on_cuda, compile=False, warmup=min(cfg.warmup, 2),
                                     reps=cfg.reps, steps_per_rep=cfg.loader_batches, peak_memory_mb=meter.peak_mb(),
                                     memory_kind=meter.kind, **base, **summarize(samples)))
                except Exception as exc:  # noqa: BLE001
                    rows.append(_row(kind="loader", method="(data loader)", stage=split, status="skipped",
                                     reason=_short_reason(exc), **base))
                advance(f"loader {size}px")
            add_loader_ratios(rows)
            rows.extend(paper_cost_rows(rows, on_cuda, stage_lists))
            if cfg.flops and cfg.flops_method in registry.synthesizers:
                rows.append(_flops_row(cfg, device, tmp_root, rows))
    finally:
        torch.backends.cudnn.benchmark = cudnn_before
    return {"hardware": hardware_info(device), "config": _config_dict(cfg), "rows": rows}


def _config_dict(cfg: PerfConfig) -> dict[str, Any]:
    d = dict(vars(cfg))
    d["data_dir"] = str(cfg.data_dir) if cfg.data_dir else None
    return d


def _measure(cfg, kind, synth, method, stage, ds, split, device, precision, cl, co, meter, combo) -> dict[str, Any]:
    """One (kind, method, stage, combination) measurement on ``synth``; a failure becomes a skipped row.

    The peak memory of a row includes the networks already built (weights); optimizer state and
    activations are created inside the row.
    """
    meter.reset()
    try:
        batch = fixed_batch(ds, split, cfg.batch_size, device, cl)
        warmup, calls, extra = cfg.warmup, cfg.steps_per_rep, {}
        if kind == "train":
            fn = make_train_step(synth, method, stage, batch, device, precision, warmup + cfg.reps * calls)
        else:
            if co:
                for name, net in list(synth.nets.items()):
                    synth.nets[name] = torch.compile(net)
            fn = make_infer_step(synth, batch, precision, device, cl)
            extra["sampling_steps"] = int(synth.sampling().get("steps", 1))
            if extra["sampling_steps"] > 1:  # iterative sampler: every call is many network evaluations
                warmup, calls = min(warmup, 1), 1
        samples = time_throughput(fn, cfg.batch_size, warmup, cfg.reps, calls, device)
        peak = meter.peak_mb()
        del fn, batch
        return _row(kind=kind, stage=stage, status="ok", reason="", warmup=warmup, reps=cfg.reps,
                    steps_per_rep=calls, peak_memory_mb=peak, memory_kind=meter.kind,
                    **combo, **extra, **summarize(samples))
    except Exception as exc:  # noqa: BLE001 - e.g. compile without a C compiler, bf16 unsupported
        return _row(kind=kind, stage=stage, status="skipped", reason=_short_reason(exc), **combo)
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def add_loader_ratios(rows: list[dict[str, Any]]) -> None:
    """Loader rows get ``loader_ratio`` = loader img/s / fastest training img/s at the same size."""
    for row in rows:
        if row["kind"] != "loader" or row["status"] != "ok":
            continue
        train = [r["images_per_s_median"] for r in rows
                 if r["kind"] == "train" and r["status"] == "ok" and r["size"] == row["size"]]
        if train:
            row["loader_ratio"] = row["images_per_s_median"] / max(train)


def paper_cost_rows(rows: list[dict[str, Any]], on_cuda: bool, stage_lists: dict[tuple[str, int], tuple]
                    ) -> list[dict[str, Any]]:
    """Paper-protocol cost per (method, size, combination): sum over stages of images / img/s / 3600.

    Stage epochs follow :func:`synthbench.engine.plan_stages` for 20 epochs (ours: global 5,
    local 5, joint 10); every epoch is the 12,000 augmented training images (paper Sec. "Data").
    A combination with a skipped stage has no cost.
    """
    from synthbench.engine.loop import plan_stages

    unit = "GPU-hours" if on_cuda else "CPU-hours at this size"
    keys: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r["kind"] == "train" and r["stage"] is not None:
            keys.setdefault((r["method"], r["size"], r["precision"], r["channels_last"], r["compile"]), []).append(r)
    out = []
    for (method, size, precision, cl, co), stage_rows in keys.items():
        stages = stage_lists.get((method, size), ())
        steps_per_epoch = PAPER_TRAIN_IMAGES // 16
        plans = {p.name: p for p in plan_stages(stages, PAPER_EPOCHS, steps_per_epoch, None)}
        by_stage = {r["stage"]: r for r in stage_rows}
        hours, epochs, reason = 0.0, [], ""
        for name, plan in plans.items():
            r = by_stage.get(name)
            if r is None or r["status"] != "ok":
                reason = f"stage {name} not measured"
                break
            hours += plan.epochs * PAPER_TRAIN_IMAGES / r["images_per_s_median"] / 3600
            epochs.append(f"{name}:{plan.epochs}")
        first = stage_rows[0]
        out.append(_row(kind="cost", method=method, stage="+".join(plans), size=size, batch_size=first["batch_size"],
                        device=first["device"], precision=precision, channels_last=cl, compile=co,
                        status="ok" if not reason else "skipped", reason=reason, stage_epochs=" ".join(epochs),
                        paper_cost_hours=None if reason else hours, cost_unit=unit))
    return out


def _flops_row(cfg: PerfConfig, device: torch.device, tmp_root: Path, rows) -> dict[str, Any]:
    """FLOPs per image-step of ``cfg.flops_method`` at ``cfg.flops_size`` and its achieved peak fraction."""
    bs = cfg.flops_batch_size or cfg.batch_size
    base = {"kind": "flops", "method": cfg.flops_method, "size": cfg.flops_size, "batch_size": bs,
            "device": str(device), "precision": cfg.flops_precision, "channels_last": device.type == "cuda",
            "compile": False}
    try:
        from synthbench.data.prepared import PreparedDataset

        use_given = cfg.data_dir is not None and PreparedDataset(cfg.data_dir).size == cfg.flops_size
        src = cfg if use_given else PerfConfig(methods=cfg.methods, data_dir=None, seed=cfg.seed)
        ds = load_or_make_data(src, cfg.flops_size, tmp_root)
        flops, stage = count_training_flops(cfg.flops_method, None, ds, cfg.flops_size, bs, device,
                                            cfg.flops_precision, cfg.seed)
    except Exception as exc:  # noqa: BLE001
        return _row(status="skipped", reason=_short_reason(exc), **base)
    row = _row(status="ok", reason="", stage=stage, flops_per_image=flops, **base)
    attach_flops_throughput([row], rows, torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    return row


def attach_flops_throughput(flops_rows, rows, gpu_name: str | None) -> None:
    """Achieved TFLOP/s = FLOPs/image x the fastest measured img/s of the same method, stage, size,
    precision and device; on a GPU also the fraction of its data-sheet bf16 peak."""
    peak = peak_bf16_tflops(gpu_name) if gpu_name else None
    for row in flops_rows:
        if row["kind"] != "flops" or row["status"] != "ok":
            continue
        match = [r for r in rows if r["kind"] == "train" and r["status"] == "ok" and r["method"] == row["method"]
                 and r["stage"] == row["stage"] and r["size"] == row["size"] and r["precision"] == row["precision"]
                 and r["device"] == row["device"]]
        if not match:
            continue
        ips = max(r["images_per_s_median"] for r in match)
        row["images_per_s_median"] = ips
        row["achieved_tflops"] = row["flops_per_image"] * ips / 1e12
        if peak:
            row["peak_fraction"] = row["achieved_tflops"] / peak


def flops_result(cfg: PerfConfig, tmp_root: Path) -> dict[str, Any]:
    """Only the FLOP row of ``cfg`` (no throughput), as a result that ``combine`` can merge."""
    device = resolve_device(cfg.device)
    return {"hardware": hardware_info(device), "config": _config_dict(cfg), "rows": [_flops_row(cfg, device, tmp_root, [])]}


# ----------------------------------------------------------------------------- output
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e6 or abs(value) < 1e-3:
            return f"{value:.3e}"
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"
    return str(value)


def to_csv(rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def _table(header: list[str], lines: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(v) for v in line) + " |" for line in lines]
    return "\n".join(out)


def to_markdown(result: dict[str, Any]) -> str:
    """The Markdown report: hardware, training, inference, loader, paper cost, FLOPs, skipped combos."""
    hw, cfg, rows = result["hardware"], result["config"], result["rows"]
    on_cuda = hw.get("gpu") is not None
    ok = [r for r in rows if r["status"] == "ok"]
    parts = ["# synthbench performance benchmark", ""]
    parts.append(
        f"Hardware: CPU **{hw['cpu']}** ({hw['cpu_cores']} cores visible, {hw['torch_threads']} torch threads); "
        f"GPU **{hw.get('gpu') or 'none'}**; torch {hw['torch']}"
        + (f", CUDA {hw.get('cuda')}" if on_cuda else "") + f"; Python {hw['python']}; device `{hw['device']}`.")
    parts.append("")
    parts.append(
        f"Protocol: batch size {cfg['batch_size']}, {cfg['warmup']} warm-up iterations (excluded), "
        f"{cfg['reps']} timed repetitions of {cfg['steps_per_rep']} iterations; throughput is the median "
        "over repetitions with its inter-quartile range [q1, q3] and min-max. One training iteration is "
        "the engine's full step (every update of `training_step` with backward and optimizer step). "
        "Peak memory: " + ("`torch.cuda.max_memory_allocated`." if on_cuda else
                           "peak resident set size of the process (`VmHWM`, reset per row; includes the "
                           "Python process and libraries)."))
    parts.append("")

    def combo(r):
        return [r["precision"], r["channels_last"], r["compile"]]

    train = [r for r in ok if r["kind"] == "train"]
    if train:
        parts += ["## Training (images / s)", ""]
        parts.append(_table(
            ["method", "stage", "size", "precision", "channels_last", "compile", "median img/s", "IQR", "min-max",
             "peak MB"],
            [[r["method"], r["stage"], r["size"], *combo(r), r["images_per_s_median"],
              f"{_fmt(r['images_per_s_q1'])}-{_fmt(r['images_per_s_q3'])}",
              f"{_fmt(r['images_per_s_min'])}-{_fmt(r['images_per_s_max'])}", r["peak_memory_mb"]] for r in train]))
        parts.append("")
    infer = [r for r in ok if r["kind"] == "infer"]
    if infer:
        parts += ["## Inference, `generate` (images / s)", ""]
        parts.append("Sampling steps: the steps of the method's sampler per image (1: one forward pass; SDM's "
                     "classifier-free guidance evaluates its network twice per step).")
        parts.append("")
        parts.append(_table(
            ["method", "size", "sampling steps", "precision", "channels_last", "compile", "median img/s", "IQR",
             "min-max", "peak MB"],
            [[r["method"], r["size"], r.get("sampling_steps"), *combo(r), r["images_per_s_median"],
              f"{_fmt(r['images_per_s_q1'])}-{_fmt(r['images_per_s_q3'])}",
              f"{_fmt(r['images_per_s_min'])}-{_fmt(r['images_per_s_max'])}", r["peak_memory_mb"]] for r in infer]))
        parts.append("")
    loader = [r for r in ok if r["kind"] == "loader"]
    if loader:
        parts += ["## Data loader alone (prepared shards, memory-mapped)", ""]
        parts.append(_table(
            ["split", "size", "batch", "workers", "median img/s", "IQR", "ratio to fastest training step", ">= 10x"],
            [[r["stage"], r["size"], r["batch_size"], cfg["workers"], r["images_per_s_median"],
              f"{_fmt(r['images_per_s_q1'])}-{_fmt(r['images_per_s_q3'])}", r["loader_ratio"],
              None if r["loader_ratio"] is None else r["loader_ratio"] >= 10] for r in loader]))
        parts.append("")
    cost = [r for r in rows if r["kind"] == "cost"]
    if cost:
        unit = cost[0]["cost_unit"]
        parts += [f"## Paper protocol cost ({unit})", ""]
        if not on_cuda:
            parts.append(f"**CPU-hours at this size**: the paper's protocol (20 epochs x {PAPER_TRAIN_IMAGES:,} "
                         "images) priced at the throughput measured here on this CPU at the benchmark size; "
                         "not GPU-hours and not the paper's 512 px.")
        else:
            parts.append(f"GPU-hours of the paper's protocol (20 epochs x {PAPER_TRAIN_IMAGES:,} images) at the "
                         "measured throughput of this size on one GPU.")
        parts.append("Multi-stage methods sum their stages (stage:epochs shown).")
        parts.append("")
        parts.append(_table(["method", "stages (epochs)", "size", "precision", "channels_last", "compile", unit],
                            [[r["method"], r["stage_epochs"] or r["stage"], r["size"], *combo(r),
                              r["paper_cost_hours"] if r["status"] == "ok" else f"n/a ({r['reason']})"] for r in cost]))
        parts.append("")
    flops = [r for r in rows if r["kind"] == "flops"]
    if flops:
        parts += ["## Model FLOPs per image-step", ""]
        parts.append("`torch.utils.flop_counter.FlopCounterMode` over one full training iteration (forward and "
                     "backward of every update; matmul/conv FLOPs, element-wise ops and optimizer not counted), "
                     "divided by the batch size. Peak fraction assumes the data-sheet dense bf16 peak: "
                     + ", ".join(f"{k} {v:g}" for k, v in PEAK_BF16_TFLOPS.items() if k in ("H100 SXM", "H200", "A100"))
                     + " TFLOP/s.")
        parts.append("")
        parts.append(_table(["method", "stage", "size", "precision", "batch", "GFLOPs / image-step", "img/s",
                             "achieved TFLOP/s", "fraction of peak", "status"],
                            [[r["method"], r["stage"], r["size"], r["precision"], r["batch_size"],
                              None if r["flops_per_image"] is None else r["flops_per_image"] / 1e9,
                              r["images_per_s_median"], r["achieved_tflops"], r["peak_fraction"],
                              r["status"] if r["status"] == "ok" else f"skipped: {r['reason']}"] for r in flops]))
        parts.append("")
    skipped = [r for r in rows if r["status"] != "ok" and r["kind"] in ("train", "infer", "loader")]
    if skipped:
        parts += ["## Skipped combinations", ""]
        parts.append(_table(["kind", "method", "stage", "size", "precision", "channels_last", "compile", "reason"],
                            [[r["kind"], r["method"], r["stage"], r["size"], *combo(r), r["reason"]] for r in skipped]))
        parts.append("")
    return "\n".join(parts)


def write_results(result: dict[str, Any], out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``OUT/NAME.csv`` and ``OUT/NAME.md`` atomically; return their paths."""
    out_dir = Path(out_dir)
    csv_path, md_path = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    atomic_write_text(csv_path, to_csv(result["rows"]))
    atomic_write_text(md_path, to_markdown(result))
    return csv_path, md_path


__all__ = [
    "CSV_COLUMNS", "PAPER_EPOCHS", "PAPER_TRAIN_IMAGES", "PEAK_BF16_TFLOPS", "PerfConfig", "count_training_flops",
    "hardware_info", "measure_loader", "paper_cost_rows", "peak_bf16_tflops", "run_benchmark", "summarize",
    "to_csv", "to_markdown", "write_results",
]
