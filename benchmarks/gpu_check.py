"""GPU check (issue 18): everything a lent GPU should confirm, in one script of under 8 minutes
on one H100/H200, written to ``benchmarks/perf_results/gpu.md`` (and ``gpu.json``).

    python benchmarks/gpu_check.py                       # on the GPU machine
    python benchmarks/gpu_check.py --budget 300          # a shorter time budget
    OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --cpu-rehearsal --out /tmp/rehearsal
                                                         # the same code path on a CPU, tiny sizes

Sections, in this order (each one checks the time left first; what does not fit the budget is
listed as skipped with the reason, never left out silently):

1. One training step of every method (ours, pix2pix, pix2pixhd, spade, sean, sdm) at the paper's
   network sizes, 256 px, batch 4, channels_last, in fp32, bf16 (autocast) and fp16 (autocast and
   a GradScaler): the losses and every weight afterwards must be finite. The step is the engine's
   own (``synthbench.engine.loop._iteration``) on the method's last stage (ours: joint, every
   network).
2. FID feature extraction on the GPU: the Inception features of 16 phantom slices against the
   CPU's, and the GPU's images/s (TF32 convolutions are cuDNN's default: the difference is shown).
3. A 2-process NCCL DDP run (``torchrun --nproc-per-node 2 -m synthbench train ours``, 2 steps),
   when two GPUs are visible.
4. The throughput table of ``benchmarks/perf.py`` (:func:`synthbench.perf.run_benchmark`) at
   256 px, then 512 px, bf16 (the paper protocol's CUDA precision; ``--perf-precisions
   fp32,bf16`` adds fp32 at about twice the time) with channels_last, batch 16, with the FLOPs and the
   model-FLOPs utilisation (MFU: achieved / data-sheet bf16 peak) of ours at 512 px. SDM samples
   with 10 DDIM steps here (recorded in its rows; its images/s scale with 1 / steps), so that its
   inference rows fit the budget.
5. The same training step with ``torch.compile`` (bf16), as far as the budget allows.

Exit status: 0 when every check that ran passed (also on a machine without CUDA, after the line
``gpu_check: skipped: ...``), 1 when a check failed (the table says which), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "perf_results"
METHODS = ("ours", "pix2pix", "pix2pixhd", "spade", "sean", "sdm")
PRECISIONS = ("fp32", "bf16", "fp16")
SDM_FAST = {"sampler": "ddim", "sampling_steps": 10}
#: Seconds the 512 px table takes relative to the 256 px one (4x the pixels, better occupancy).
SIZE_512_FACTOR = 3.0


@dataclass
class Check:
    section: str
    name: str
    status: str  # ok / failed / skipped
    seconds: float | None = None
    detail: str = ""


class Budget:
    """Wall-clock budget of the whole check; sections ask whether an estimated cost still fits."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic):
        self.total_s, self.clock, self.start = total_s, clock, clock()

    def left(self) -> float:
        return self.total_s - (self.clock() - self.start)

    def allows(self, needed_s: float) -> bool:
        return self.left() >= needed_s


def skip_line(out: Path) -> str | None:
    """The one line printed (exit 0) when no CUDA GPU is visible; None when one is."""
    import torch

    if torch.cuda.is_available():
        return None
    why = f"torch {torch.__version__}, built with CUDA {torch.version.cuda or 'none'}, torch.cuda.is_available() is False"
    return f"gpu_check: skipped: no CUDA GPU is visible ({why}); nothing was measured and {out / 'gpu.md'} was not written"


def step_plan(methods, precisions, compile_precisions=("bf16",)) -> list[tuple[str, str, bool]]:
    """(method, precision, compile) of every training-step check: all eager ones first, then the
    compiled ones (the slowest, run with what is left of the budget)."""
    eager = [(m, p, False) for m in methods for p in precisions]
    compiled = [(m, p, True) for m in methods for p in precisions if p in compile_precisions]
    return eager + compiled


def overall_status(checks: list[Check]) -> int:
    return 1 if any(c.status == "failed" for c in checks) else 0


def markdown_checks(checks: list[Check]) -> str:
    lines = ["| section | check | status | seconds | detail |", "|---|---|---|---|---|"]
    for c in checks:
        seconds = "" if c.seconds is None else f"{c.seconds:.2f}"
        detail = c.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {c.section} | {c.name} | {c.status} | {seconds} | {detail} |")
    return "\n".join(lines)


def _short(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


# ----------------------------------------------------------------------------- 1 and 5: one training step
def train_step_check(method, precision, compiled, ds, device, batch_size, options) -> Check:
    """Two engine iterations of ``method``'s last stage; losses and weights must stay finite."""
    import torch

    from synthbench import perf
    from synthbench.engine import health
    from synthbench.engine.loop import _iteration

    name = f"{method} {precision} channels_last{' compile' if compiled else ''}"
    section = "train step (compile)" if compiled else "train step"
    synth = None
    try:
        synth = perf.build_synthesizer(method, ds.num_classes, ds.size, device, True, compiled, 0, options)
        stage = synth.stage_names()[-1]
        batch = perf.fixed_batch(ds, perf._split_name(ds, "auto"), batch_size, device, True)
        optimizers, _ = perf.build_optimizers(synth, stage, device, 10)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        meter = perf.MemoryMeter(device)
        meter.reset()
        times, losses = [], {}
        for i in range(2):  # the first includes cuDNN autotuning / compilation
            t0 = time.perf_counter()
            losses, _ = _iteration(synth, stage, batch, optimizers, scaler, autocast, method, i)
            _sync(device)
            times.append(time.perf_counter() - t0)
        problem = health.non_finite_tensor(synth)
        loss_text = ", ".join(f"{k} {v:.3g}" for k, v in losses.items())
        detail = (f"stage {stage}; losses {loss_text}; first step {times[0]:.2f} s, second {times[1]:.3f} s; "
                  f"peak {meter.peak_mb():.0f} MB")
        if problem is not None:
            return Check(section, name, "failed", sum(times), f"non-finite weight after the step: {problem}; {detail}")
        return Check(section, name, "ok", sum(times), detail)
    except Exception as exc:  # noqa: BLE001 - recorded in the table, the check goes on
        return Check(section, name, "failed", None, _short(exc))
    finally:
        del synth
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- 2: FID features on the GPU
def fid_check(ds, device, n_speed: int = 512) -> Check:
    """Inception features of 16 slices on ``device`` against the CPU's (relative difference at most
    1e-2 of the largest feature); images/s on ``device`` over ``n_speed`` images, batches of 64."""
    import torch

    from synthbench.metrics.inception import InceptionFeatures

    try:
        images = torch.from_numpy(ds.split(perf_split(ds)).image[:16].astype("float32")).unsqueeze(1)
        gpu, cpu = InceptionFeatures(device), InceptionFeatures("cpu")
        f_gpu, f_cpu = gpu(images), cpu(images)
        diff = float((f_gpu - f_cpu).abs().max())
        scale = float(f_cpu.abs().max())
        batch = images.repeat(max(1, min(n_speed, 64) // len(images)), 1, 1, 1).to(device)
        calls = max(1, n_speed // len(batch))
        gpu(batch)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            gpu(batch)
        _sync(device)
        seconds = time.perf_counter() - t0
        rate = calls * len(batch) / seconds
        tf32 = torch.backends.cudnn.allow_tf32
        detail = (f"max |{device.type} - cpu| {diff:.2e} of max |feature| {scale:.2f} (cuDNN TF32 {'on' if tf32 else 'off'}); "
                  f"{rate:.0f} images/s at {ds.size} px, batch {len(batch)}; weights sha256 {gpu.record['sha256'][:12]}")
        status = "ok" if diff <= 1e-2 * max(scale, 1e-6) else "failed"
        return Check("FID features", f"Inception on {device}", status, seconds, detail)
    except Exception as exc:  # noqa: BLE001
        return Check("FID features", f"Inception on {device}", "failed", None, _short(exc))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def perf_split(ds) -> str:
    return "test" if ds.has_split("test") else "train"


# ----------------------------------------------------------------------------- 3: NCCL DDP
def ddp_check(data_dir: Path, work: Path, budget: Budget) -> Check:
    """``torchrun --nproc-per-node 2 -m synthbench train ours`` for 2 steps on 2 GPUs (NCCL)."""
    import torch

    name = "torchrun --nproc-per-node 2, NCCL, ours 2 steps"
    if torch.cuda.device_count() < 2:
        return Check("DDP", name, "skipped", None, f"{torch.cuda.device_count()} GPU visible; needs 2")
    out = work / "ddp_run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "synthbench", "train", "ours", "--data", str(data_dir), "--out", str(out), "--protocol", "smoke",
           "--device", "cuda", "--max-steps", "2", "--quiet"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30.0, min(180.0, budget.left())),
                              env={**os.environ, "SYNTHBENCH_PROGRESS": "off"})
    except subprocess.TimeoutExpired:
        return Check("DDP", name, "failed", time.perf_counter() - t0, "timed out")
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return Check("DDP", name, "failed", seconds, f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-400:]}")
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    status = json.loads((out / "manifest.json").read_text())["status"]
    ok = resolved["world_size"] == 2 and status == "finished"
    return Check("DDP", name, "ok" if ok else "failed", seconds,
                 f"world size {resolved['world_size']}, batch per rank {resolved['batch_size_per_rank']}, "
                 f"device {resolved['device']}, precision {resolved['precision']}, status {status}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- 4: the perf.py table
def perf_tables(methods, sizes, budget: Budget, device: str, options, precisions, batch_size, checks: list[Check]):
    """:func:`synthbench.perf.run_benchmark` per size (FLOPs/MFU of ours at the largest), merged
    as ``benchmarks/perf.py combine`` does; a size that would not fit the budget is skipped."""
    from synthbench import perf

    rows, hardware, config, last_seconds = [], None, None, None
    for i, size in enumerate(sizes):
        estimate = 0.0 if last_seconds is None else last_seconds * SIZE_512_FACTOR ** math.log2(size / sizes[i - 1])
        if not budget.allows(estimate):
            checks.append(Check("perf table", f"{size} px", "skipped", None,
                                f"time budget: about {estimate:.0f} s needed, {budget.left():.0f} s left"))
            continue
        cfg = perf.PerfConfig(
            methods=list(methods), sizes=[size], batch_size=batch_size, precisions=list(precisions),
            channels_last=[True], compile=[False], warmup=1, reps=3, steps_per_rep=2, device=device,
            loader_batches=5, flops=size == max(sizes), flops_method="ours", flops_size=size,
            flops_precision="bf16" if "bf16" in precisions else precisions[0], method_options=options)
        t0 = time.perf_counter()
        try:
            result = perf.run_benchmark(cfg, show_progress=False, log=lambda s: print(f"  perf: {s}", flush=True))
        except Exception as exc:  # noqa: BLE001
            checks.append(Check("perf table", f"{size} px", "failed", time.perf_counter() - t0, _short(exc)))
            continue
        last_seconds = time.perf_counter() - t0
        failed = [r for r in result["rows"] if r["status"] != "ok"]
        detail = f"{len(result['rows'])} rows, {len(failed)} skipped by perf (listed in its table)"
        checks.append(Check("perf table", f"{size} px", "ok", last_seconds, detail))
        rows.extend(result["rows"])
        hardware, config = result["hardware"], result["config"]
    if not rows:
        return None
    flops = [r for r in rows if r["kind"] == "flops"]
    perf.attach_flops_throughput(flops, rows, hardware.get("gpu"))
    config = {**config, "sizes": [s for s in sizes if any(r["size"] == s for r in rows)]}
    return {"hardware": hardware, "config": config, "rows": rows}


# ----------------------------------------------------------------------------- the whole check
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--name", default=None, help="output stem (default: gpu; cpu-rehearsal with --cpu-rehearsal)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check (default 450)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--step-size", type=int, default=256, help="image size of the training-step checks")
    parser.add_argument("--step-batch", type=int, default=4)
    parser.add_argument("--perf-sizes", default="256,512")
    parser.add_argument("--perf-batch", type=int, default=16)
    parser.add_argument("--perf-precisions", default="bf16", help="comma list of fp32, bf16 (default bf16)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile checks")
    parser.add_argument("--cpu-rehearsal", action="store_true",
                        help="run every section on the CPU at tiny sizes with reduced networks (tests the script, "
                             "measures nothing about a GPU)")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        args.perf_sizes = sorted(int(s) for s in args.perf_sizes.split(",") if s.strip())
    except ValueError:
        parser.error(f"--perf-sizes: expected a comma list of integers, got {args.perf_sizes!r}")
    args.perf_precisions = [p.strip() for p in args.perf_precisions.split(",") if p.strip()]
    if not args.methods or not args.perf_sizes or args.budget <= 0:
        parser.error("--methods and --perf-sizes must not be empty and --budget must be positive")
    if not set(args.perf_precisions) <= {"fp32", "bf16"} or not args.perf_precisions:
        parser.error(f"--perf-precisions: fp32 and/or bf16, got {args.perf_precisions}")
    if args.cpu_rehearsal:
        args.step_size, args.step_batch, args.perf_batch = 64, 2, 2
        args.perf_sizes = [64]
    args.name = args.name or ("cpu-rehearsal" if args.cpu_rehearsal else "gpu")
    return args


def method_options(methods, reduced: bool) -> dict[str, dict]:
    """Per-method options: the paper's networks on a GPU (SDM with 50 DDIM steps for the tables);
    each method's ``reduced_options`` in the CPU rehearsal."""
    from synthbench.plugins import get_registry

    registry = get_registry()
    out = {}
    for m in methods:
        opts = dict(registry.synthesizer(m).reduced_options) if reduced else {}
        if m == "sdm":
            opts = {**opts, **SDM_FAST}
        out[m] = opts
    return out


def run(args) -> int:
    import torch

    from synthbench.data.prepare import prepare_phantom
    from synthbench.data.prepared import PreparedDataset
    from synthbench.perf import hardware_info, to_markdown

    device = torch.device("cpu" if args.cpu_rehearsal else "cuda")
    budget = Budget(args.budget)
    checks: list[Check] = []
    options = method_options(args.methods, args.cpu_rehearsal)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the engine's default outside deterministic mode
    with tempfile.TemporaryDirectory(prefix="synthbench-gpu-check-") as tmp:
        work = Path(tmp)
        data = work / f"phantom_{args.step_size}"
        prepare_phantom(data, size=args.step_size, patients=4, slices_per_patient=4, seed=0, train_factor=2,
                        test_factor=1, keep_all_slices=True)
        ds = PreparedDataset(data)
        plan = step_plan(args.methods, PRECISIONS, () if args.no_compile else ("bf16",))
        eager = [p for p in plan if not p[2]]
        compiled = [p for p in plan if p[2]]
        for method, precision, _ in eager:
            checks.append(train_step_check(method, precision, False, ds, device, args.step_batch, options[method]))
            print(f"{checks[-1].section}: {checks[-1].name}: {checks[-1].status} {checks[-1].detail}", flush=True)
        if device.type == "cuda":
            checks.append(fid_check(ds, device))
            small = work / "phantom_64"
            prepare_phantom(small, size=64, patients=4, slices_per_patient=4, seed=0, train_factor=2, test_factor=1,
                            keep_all_slices=True)
            checks.append(ddp_check(small, work, budget))
        else:
            checks.append(Check("FID features", "Inception on the GPU", "skipped", None, "CPU rehearsal"))
            checks.append(Check("DDP", "NCCL", "skipped", None, "CPU rehearsal"))
        for c in checks[-2:]:
            print(f"{c.section}: {c.name}: {c.status} {c.detail}", flush=True)
        perf_result = perf_tables(args.methods, args.perf_sizes, budget, str(device), options, args.perf_precisions,
                                  args.perf_batch, checks)
        for method, precision, _ in compiled:
            if not budget.allows(60):
                checks.append(Check("train step (compile)", f"{method} {precision} channels_last compile", "skipped",
                                    None, f"time budget: {budget.left():.0f} s left"))
                continue
            checks.append(train_step_check(method, precision, True, ds, device, args.step_batch, options[method]))
            print(f"{checks[-1].section}: {checks[-1].name}: {checks[-1].status} {checks[-1].detail}", flush=True)
    hardware = hardware_info(device)
    write_report(args, hardware, checks, perf_result, to_markdown, budget)
    return overall_status(checks)


def write_report(args, hardware, checks, perf_result, to_markdown, budget) -> None:
    import torch

    from synthbench.io import atomic_write_json, atomic_write_text

    spent = args.budget - budget.left()
    gpu_count = torch.cuda.device_count() if hardware.get("gpu") else 0
    head = [
        "# synthbench GPU check" + (" (CPU rehearsal: nothing here is about a GPU)" if args.cpu_rehearsal else ""),
        "",
        f"Written by `benchmarks/gpu_check.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"GPU **{hardware.get('gpu') or 'none'}** ({gpu_count} visible), torch {hardware['torch']}"
        + (f", CUDA {hardware.get('cuda')}" if hardware.get("gpu") else "")
        + f"; {spent:.0f} s of a {args.budget:.0f} s budget.",
        "",
        f"Training steps: {args.step_size} px, batch {args.step_batch}, channels_last, the paper's networks"
        + (" (reduced networks in this rehearsal)" if args.cpu_rehearsal else "")
        + "; fp16 with a GradScaler. A failed row is a defect to fix before a GPU run is trusted.",
        "",
        "## Checks",
        "",
        markdown_checks(checks),
        "",
    ]
    body = ""
    if perf_result is not None:
        body = "## Throughput (benchmarks/perf.py)\n\n" + to_markdown(perf_result).split("\n", 1)[1]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{args.name}.md", "\n".join(head) + "\n" + body)
    atomic_write_json(args.out / f"{args.name}.json",
                      {"hardware": hardware, "checks": [asdict(c) for c in checks], "perf": perf_result})
    print(f"wrote {args.out / (args.name + '.md')} and {args.out / (args.name + '.json')}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.cpu_rehearsal and (line := skip_line(args.out)) is not None:
        print(line)
        return 0
    try:
        return run(args)
    except Exception:  # a defect of the script itself: shown whole
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
