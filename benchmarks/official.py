"""Side by side with the official code: one training iteration of pix2pixHD, SPADE and SEAN.

``benchmarks/perf.py official --official-dir DIR`` (DIR from ``benchmarks/fetch_official.py``)
runs, per method and image size, one fresh worker process (the official repositories share
top-level package names such as ``models`` and ``options``) that builds

* the **official** model exactly as its ``train.py`` does (its own option parser with its
  defaults: full widths, its discriminator, losses and Adam settings), on the CPU, and times one
  iteration of its training loop (pix2pixHD ``train.py``: the model's forward, ``loss_G``
  backward and step, ``loss_D`` backward and step; SPADE/SEAN: ``Pix2PixTrainer``'s generator step
  then discriminator step);
* the **synthbench** synthesizer with its default (full-width) options, and times one iteration
  of the shared engine (:func:`synthbench.perf.make_train_step`: every update of
  ``training_step`` with the engine's backward and optimizer steps);

on the same batch (``batch`` phantom slices in ``[-1, 1]``, the official code gets them as its
RGB input: the gray slice in three channels; label ids as its ``label`` tensor), in fp32, with
the same thread count. Repetitions are interleaved (official, synthbench, then synthbench,
official, ...) after warm-up iterations, and each is measured as the process's CPU time (user
+ system of every thread) and wall time. The ratio is median official / median synthbench.

CPU shims for the official code, applied in the worker only (the official files are not
edited): ``Tensor.cuda`` / ``Module.cuda`` return the object unchanged, ``torch.cuda.FloatTensor``
is the CPU ``torch.FloatTensor`` (pix2pixHD builds its one-hot map with it), and
``torchvision.models.vgg19(pretrained=True)`` returns synthbench's resolved VGG19 weights
(:func:`synthbench.pretrained.resolve_vgg19`), so both sides run the same VGG19 weights;
without ``dill`` installed, ``pickle`` stands in for it (SPADE/SEAN pickle option files with it);
SEAN's Adam ``betas=(0, 0.9)`` are passed as floats (a current torch refuses the int 0).
Known differences in the configuration, both in the official code's favour or neutral: the
official generators write three output channels (SPADE/SEAN hard-code RGB; pix2pixHD's VGG loss
needs three), synthbench's one; the discriminators see label + 3 instead of label + 1 channels.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

METHODS = ("pix2pixhd", "spade", "sean")
NUM_CLASSES = 4  # the phantom's classes: background, lung, ground glass, consolidation


def official_argv(method: str, size: int, batch: int, scratch: Path) -> list[str]:
    """The official ``train.py`` command line of this benchmark: CPU, no instance maps, our
    classes and size, batch ``batch``; every other option at the official default."""
    common = ["--gpu_ids", "-1", "--checkpoints_dir", str(scratch), "--name", method, "--label_nc", str(NUM_CLASSES),
              "--no_instance", "--batchSize", str(batch)]
    if method == "pix2pixhd":
        return [*common, "--loadSize", str(size), "--fineSize", str(size), "--output_nc", "3"]
    return [*common, "--dataset_mode", "custom", "--label_dir", str(scratch), "--image_dir", str(scratch),
            "--load_size", str(size), "--crop_size", str(size), "--aspect_ratio", "1"]


def _cpu_shims() -> None:
    """Let the official code run on the CPU without editing it (module docstring)."""
    import torch
    import torchvision
    from torch import nn

    from synthbench.pretrained import load_vgg19_features, resolve_vgg19

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.cuda.FloatTensor = torch.FloatTensor
    torch.cuda.ByteTensor = torch.ByteTensor
    record = resolve_vgg19()

    def vgg19(*args, **kwargs):
        return types.SimpleNamespace(features=load_vgg19_features(record, last_index=29))

    torchvision.models.vgg19 = vgg19
    try:  # SPADE/SEAN's util imports dill only to pickle option files, never during training
        import dill  # noqa: F401
    except ImportError:
        import pickle

        sys.modules["dill"] = pickle


@contextlib.contextmanager
def _float_betas():
    """SEAN passes Adam ``betas=(0, 0.9)``; torch >= 2.6 refuses an int beta. Same values as floats."""
    import torch

    adam = torch.optim.Adam

    class Adam(adam):
        def __init__(self, params, *args, betas=(0.9, 0.999), **kwargs):
            super().__init__(params, *args, betas=tuple(float(b) for b in betas), **kwargs)

    torch.optim.Adam = Adam
    try:
        yield
    finally:
        torch.optim.Adam = adam


def _phantom_batch(size: int, batch: int):
    """``batch`` central phantom slices: (image [B,1,H,W] in [-1, 1], label int64 [B,H,W])."""
    import torch

    from synthbench.data.phantom import generate_patient, phantom_spec
    from synthbench.data.preprocess import to_unit

    slices = generate_patient(0, 0, batch + 4, size)
    image = to_unit(slices.image[2:2 + batch], phantom_spec())
    return torch.from_numpy(image).unsqueeze(1).float(), torch.from_numpy(slices.label[2:2 + batch].astype("int64"))


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def build_official(method: str, root: Path, size: int, image, label, scratch: Path):
    """(one training iteration of the official code, {network: parameter count})."""
    import torch

    sys.path.insert(0, str(root))
    sys.argv = ["train.py", *official_argv(method, size, len(label), scratch)]
    rgb = image.expand(-1, 3, -1, -1).contiguous()
    ids = label.unsqueeze(1).float()
    with _quiet(), _float_betas():
        from options.train_options import TrainOptions

        if method == "pix2pixhd":
            from models.models import create_model

            opt = TrainOptions().parse(save=False)
            model = create_model(opt)
            zero = torch.zeros(1)

            def step() -> None:  # train.py's loop body (fp32, no DataParallel on the CPU)
                losses, _ = model(ids, zero, rgb, zero, infer=False)
                losses = [torch.mean(x) if not isinstance(x, int) else x for x in losses]
                loss = dict(zip(model.loss_names, losses, strict=True))
                loss_d = (loss["D_fake"] + loss["D_real"]) * 0.5
                loss_g = loss["G_GAN"] + loss.get("G_GAN_Feat", 0) + loss.get("G_VGG", 0)
                model.optimizer_G.zero_grad()
                loss_g.backward()
                model.optimizer_G.step()
                model.optimizer_D.zero_grad()
                loss_d.backward()
                model.optimizer_D.step()

            nets = {"G": model.netG, "D": model.netD}
        else:
            from trainers.pix2pix_trainer import Pix2PixTrainer

            opt = TrainOptions().parse()
            trainer = Pix2PixTrainer(opt)

            def step() -> None:  # train.py's loop body
                data = {"label": ids.clone(), "instance": torch.zeros(1), "image": rgb.clone(), "path": [""] * len(ids)}
                trainer.run_generator_one_step(data)
                trainer.run_discriminator_one_step(data)

            model = trainer.pix2pix_model_on_one_gpu
            nets = {"G": model.netG, "D": model.netD}
    return step, {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()}


def build_synthbench(method: str, size: int, image, label):
    """(one iteration of the shared engine on the synthesizer with default options, parameter counts)."""
    import torch

    from synthbench.data.phantom import phantom_spec
    from synthbench.perf import build_synthesizer, make_train_step
    from synthbench.synthesizer import Batch

    device = torch.device("cpu")
    synth = build_synthesizer(method, NUM_CLASSES, size, device, channels_last=False, compile_nets=False, seed=0)
    lung_ids = torch.tensor(sorted(phantom_spec().lung_region_ids))
    batch = Batch(image, label, NUM_CLASSES, torch.isin(label, lung_ids).unsqueeze(1))
    step = make_train_step(synth, method, synth.stages[0].name, batch, device, "fp32", total_steps=1000)
    counts = {k: sum(p.numel() for p in v.parameters()) for k, v in synth.nets.items() if k in ("G", "D")}
    return step, counts


def _timed(step) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    step()
    return time.process_time() - c0, time.perf_counter() - w0


def worker(method: str, root: Path, size: int, batch: int, warmup: int, reps: int, threads: int) -> dict:
    """One method at one size, in this process (see the module docstring)."""
    import torch

    torch.set_num_threads(threads)
    _cpu_shims()
    image, label = _phantom_batch(size, batch)
    with tempfile.TemporaryDirectory(prefix="synthbench-official-") as scratch:
        torch.manual_seed(0)
        official, official_params = build_official(method, root, size, image, label, Path(scratch))
        torch.manual_seed(0)
        ours, ours_params = build_synthbench(method, size, image, label)
        for _ in range(warmup):
            official()
            ours()
        times: dict[str, list[tuple[float, float]]] = {"official": [], "synthbench": []}
        for r in range(reps):
            order = ("official", "synthbench") if r % 2 == 0 else ("synthbench", "official")
            for side in order:
                times[side].append(_timed(official if side == "official" else ours))
    cpu = {side: [c for c, _ in t] for side, t in times.items()}
    wall = {side: [w for _, w in t] for side, t in times.items()}
    return {
        "method": method, "size": size, "batch_size": batch, "threads": threads, "warmup": warmup, "reps": reps,
        "official_cpu_s": cpu["official"], "synthbench_cpu_s": cpu["synthbench"],
        "official_wall_s": wall["official"], "synthbench_wall_s": wall["synthbench"],
        "cpu_ratio": statistics.median(cpu["official"]) / statistics.median(cpu["synthbench"]),
        "wall_ratio": statistics.median(wall["official"]) / statistics.median(wall["synthbench"]),
        "official_parameters": official_params, "synthbench_parameters": ours_params,
    }


def read_official_dir(official_dir: Path) -> dict:
    """``official.json`` written by ``fetch_official.py`` (which methods are present, at which commit)."""
    from synthbench.errors import SynthbenchError

    path = official_dir / "official.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SynthbenchError(f"not a fetch_official.py folder ({exc}); run benchmarks/fetch_official.py "
                              "--out DIR first", path) from exc
    return record


def failure_reason(returncode: int, stderr: str) -> str:
    """One line: the signal that stopped a worker, or the exception it ended with (its stderr also
    holds the official code's warnings, so the last line alone may be one of them)."""
    if returncode < 0:
        return f"worker stopped by signal {-returncode}"
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", line)]
    return (errors or lines or [f"exit code {returncode}, no output"])[-1]


def run(official_dir: Path, methods, sizes, batch: int, warmup: int, reps: int, threads: int,
        progress=print) -> list[dict]:
    """Every present method at every size, one worker process each; a failing worker is a row
    with its reason (the others still run)."""
    record = read_official_dir(official_dir)
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for method in methods:
        if method not in record:
            rows.append({"method": method, "status": "absent", "reason": f"not in {official_dir / 'official.json'}"})
            continue
        for size in sizes:
            progress(f"{method} at {size}px: official vs synthbench, {warmup} warm-up + {reps} interleaved reps")
            cmd = [sys.executable, __file__, "worker", "--method", method, "--root", record[method]["dir"],
                   "--size", str(size), "--batch-size", str(batch), "--warmup", str(warmup), "--reps", str(reps),
                   "--threads", str(threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                reason = failure_reason(proc.returncode, proc.stderr)
                rows.append({"method": method, "size": size, "status": "failed", "reason": reason})
                progress(f"  failed: {reason}")
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row.update(status="ok", commit=record[method]["commit"])
            rows.append(row)
            progress(f"  CPU time ratio official/synthbench {row['cpu_ratio']:.2f}x")
    return rows


def markdown(rows: list[dict], hardware: dict) -> str:
    """The side-by-side table (one row per method and size)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    first = ok[0] if ok else {}
    lines = [
        "# Side by side with the official code (CPU, fp32)",
        "",
        f"One training iteration (G and D updates), batch {first.get('batch_size', '?')}, full widths, "
        f"{first.get('threads', '?')} thread(s), {first.get('warmup', '?')} warm-up + {first.get('reps', '?')} "
        "interleaved repetitions per side, phantom slices; CPU time = user + system of the process. "
        "Ratio = median official / median synthbench (> 1: synthbench is faster). "
        "Produced by `benchmarks/perf.py official` (method: `benchmarks/official.py`).",
        "",
        f"Machine: {hardware.get('cpu', '?')}, {hardware.get('cpu_cores', '?')} CPUs, torch {hardware.get('torch', '?')}, "
        f"load average {hardware.get('load_before', '?')} before / {hardware.get('load_after', '?')} after.",
        "",
        "| method | size | official CPU s/it | synthbench CPU s/it | CPU ratio | wall ratio | params G / D official | params G / D synthbench | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def med(values):
        return f"{statistics.median(values):.2f}"

    def params(p):
        return f"{p.get('G', 0) / 1e6:.1f}M / {p.get('D', 0) / 1e6:.2f}M"

    def reps_note(r):  # a row measured with other repetitions than the header states
        same = (r["warmup"], r["reps"]) == (first.get("warmup"), first.get("reps"))
        return "" if same else f"; {r['warmup']} warm-up + {r['reps']} rep(s) per side"

    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['method']} | {r.get('size', '')} | | | | | | | {r['status']}: {r.get('reason', '')} |")
            continue
        lines.append(
            f"| {r['method']} | {r['size']} | {med(r['official_cpu_s'])} | {med(r['synthbench_cpu_s'])} | "
            f"**{r['cpu_ratio']:.2f}x** | {r['wall_ratio']:.2f}x | {params(r['official_parameters'])} | "
            f"{params(r['synthbench_parameters'])} | ok (official @ {r['commit'][:10]}{reps_note(r)}) |")
    lines += [
        "",
        "Configuration notes (see `benchmarks/official.py`): the official generators write three channels "
        "(the gray slice as RGB) and their discriminators see label + 3 channels, synthbench's one and label + 1 "
        "(a few thousand parameters, visible in the counts). SEAN's official ACE blocks build 19 per-class style "
        "layers (CelebAMask-HQ's classes) and use the first label_nc of them; synthbench builds one per class "
        "(option style_layers=19 reproduces the published build). The unused layers get no gradient and Adam "
        "skips them, so the iteration computes the same; only the parameter count differs. Adam: the official "
        "code's own (not fused), synthbench's engine fuses it on the CPU where torch supports it.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="worker of benchmarks/perf.py official (one method, one size)")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--method", choices=METHODS, required=True)
    w.add_argument("--root", type=Path, required=True)
    w.add_argument("--size", type=int, required=True)
    w.add_argument("--batch-size", type=int, default=4)
    w.add_argument("--warmup", type=int, default=1)
    w.add_argument("--reps", type=int, default=3)
    w.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    row = worker(args.method, args.root.resolve(), args.size, args.batch_size, args.warmup, args.reps, args.threads)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
