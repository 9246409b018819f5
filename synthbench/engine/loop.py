"""The one training loop every synthesizer runs through (see :mod:`synthbench.engine` for the API).

Schedule (paper Sec. "Implementation details": 20 epochs, 2e-4 for 10, then linearly to 0 over
10): Adam with ``lr = protocol.lr * lr_scale``, constant for the first ``decay_start`` fraction of
the steps, then linearly to 0 (``torch.optim.lr_scheduler.LambdaLR``, stepped once per
iteration). With ``protocol.lr_scope = "run"`` (default) the steps are those of the whole run, so
a multi-stage method (ours: global, local, joint) follows one schedule over its stages
concatenated; ``"stage"`` restarts it in every stage. Each stage's optimizers hold exactly the
parameters its :meth:`Synthesizer.optimizers` names (:func:`build_optimizers`).

Batch: ``protocol.batch_size`` is the global batch; each process of a distributed run takes
``batch_size / world_size`` (:func:`per_rank_batch_size`).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from synthbench.data.prepared import PreparedDataset
from synthbench.engine import distributed, health, interrupts, rundir
from synthbench.engine.protocol import RUNTIME_FIELDS, Protocol, get_protocol
from synthbench.engine.samples import sample_grid, save_png
from synthbench.engine.tensorboard import RunEvents, preflight_mlflow
from synthbench.errors import NonFiniteLossError, SynthbenchError
from synthbench.io import atomic_write_json, find_user_os_error
from synthbench.locking import lock_directory
from synthbench.options import build_options
from synthbench.output_check import check_generated
from synthbench.plugins import get_registry
from synthbench.synthesizer import Synthesizer, SynthesizerConfigError


@dataclass
class RunResult:
    """What :func:`train` returns. ``steps``: optimizer iterations done in total (all invocations)."""

    run_dir: Path
    steps: int
    epochs: int
    wall_time_s: float
    images_per_second: float
    final_losses: dict[str, float] = field(default_factory=dict)
    status: str = "finished"
    #: The trained synthesizer as this process holds it (plain modules in ``nets``).
    synthesizer: Any = field(default=None, repr=False, compare=False)


@dataclass
class StagePlan:
    name: str
    epochs: int
    steps: int


class _ListSampler(Sampler):
    """Yields a precomputed index list (one epoch's shard, minus the batches already done)."""

    def __init__(self, indices: list[int]):
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _seed_worker(worker_id: int) -> None:
    import random

    interrupts.ignore_in_worker()
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _resolve_device(requested: str, ctx_local_rank: int) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SynthbenchError(f"device {requested!r} requested but CUDA is not available")
        if requested == "cuda":
            return torch.device("cuda", ctx_local_rank)
    return torch.device(requested)


def _auto(value: Any, on_cuda: bool) -> bool:
    return on_cuda if value == "auto" else bool(value)


def plan_stages(stages, epochs: int, steps_per_epoch: int, max_steps: int | None) -> list[StagePlan]:
    """Split the run's steps (``epochs x steps_per_epoch``, capped at ``max_steps``) over the stages
    by their fractions, largest remainder first, at least one step each: every method gets the same
    number of steps whatever its stages (per-stage rounding of epochs gave ``ours`` 149 of 150).
    A stage's ``epochs`` is the number of (possibly partial) epochs its steps touch."""
    total = epochs * steps_per_epoch
    if max_steps is not None:
        total = min(total, max_steps)
    weights = [max(0.0, float(stage.fraction)) for stage in stages]
    scale = total / (sum(weights) or 1.0)
    exact = [w * scale for w in weights]
    steps = [int(math.floor(x)) for x in exact]
    for i in sorted(range(len(steps)), key=lambda i: (steps[i] - exact[i], i))[: total - sum(steps)]:
        steps[i] += 1
    for i in range(len(steps)):  # at least one step per stage, taken from the longest one
        if steps[i] == 0:
            longest = max(range(len(steps)), key=lambda j: steps[j])
            if steps[longest] > 1:
                steps[longest] -= 1
            steps[i] = 1
    return [StagePlan(stage.name, math.ceil(n / steps_per_epoch), n) for stage, n in zip(stages, steps, strict=True)]


def lr_lambda(total_steps: int, schedule: str, decay_start: float):
    """Paper schedule: factor 1 for the first ``decay_start`` of the steps, then linearly to 0."""
    n_const = int(round(total_steps * decay_start))

    def factor(i: int) -> float:
        if schedule == "constant" or i < n_const:
            return 1.0
        return max(0.0, (total_steps - i) / max(1, total_steps - n_const))

    return factor


def stage_lr_lambda(plans: list[StagePlan], index: int, schedule: str, decay_start: float, scope: str = "run"):
    """LR factor of stage ``plans[index]`` at its i-th step: one schedule over the whole run
    (``scope="run"``, the stages concatenated) or one per stage (``"stage"``)."""
    if scope == "stage":
        return lr_lambda(plans[index].steps, schedule, decay_start)
    offset = sum(p.steps for p in plans[:index])
    whole = lr_lambda(sum(p.steps for p in plans), schedule, decay_start)
    return lambda i: whole(offset + i)


def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    """Each process's share of the protocol's global batch (paper: 16 across two GPUs, 8 each)."""
    if global_batch % world_size:
        raise SynthbenchError(
            f"batch_size {global_batch} is the global batch and must divide over the {world_size} processes "
            f"(use a multiple of {world_size})")
    return global_batch // world_size


def fused_adam_unsupported(params) -> str | None:
    """Why the installed torch's fused Adam cannot update ``params`` (None when it can).

    torch checks this only at the first ``step`` (``_device_dtype_check_for_fused``): every
    parameter must be floating point on a device with fused kernels (CPU since torch 2.4).
    """
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # an older torch: only CUDA had fused Adam
        devices = {"cuda"}
    for p in params:
        if p.device.type not in devices:
            return f"torch {torch.__version__} has no fused Adam on {p.device.type}"
        if not torch.is_floating_point(p):
            return f"fused Adam needs floating-point parameters, got {p.dtype}"
    return None


def resolve_fused_adam(setting: Any, synth: Synthesizer, plans: list[StagePlan]) -> tuple[bool, str | None]:
    """The protocol's ``fused_adam`` for this run: (fused, why not). ``"auto"`` fuses wherever the
    installed torch supports every parameter of every stage's optimizers, else falls back to the
    default implementation with the reason (recorded in the run and said); ``True`` that cannot be
    honoured is an error; ``False`` is off."""
    if setting is False:
        return False, "off in the protocol"
    reason = next((r for plan in plans for spec in synth.optimizers(plan.name).values()
                   if (r := fused_adam_unsupported(spec.params)) is not None), None)
    if reason is None:
        return True, None
    if setting is True:
        raise SynthbenchError(f"protocol fused_adam = true, but {reason} (set it to auto or false)")
    return False, reason


def build_optimizers(synth: Synthesizer, plans: list[StagePlan], index: int, proto: Protocol, fused: bool,
                     betas_override=None) -> tuple[dict[str, torch.optim.Optimizer], dict[str, Any]]:
    """Adam + LambdaLR for every optimizer of stage ``plans[index]``, over exactly the parameters the
    synthesizer names (whatever their ``requires_grad`` is at this moment: a network frozen in the
    previous stage still trains in this one if this stage names it)."""
    optimizers, schedulers = {}, {}
    factor = stage_lr_lambda(plans, index, proto.lr_schedule, proto.decay_start, proto.lr_scope)
    for name, spec in synth.optimizers(plans[index].name).items():
        params = list(dict.fromkeys(spec.params))
        kwargs = {"fused": True} if fused else {}
        optimizers[name] = torch.optim.Adam(params, lr=proto.lr * spec.lr_scale,
                                            betas=tuple(betas_override or spec.betas), **kwargs)
        schedulers[name] = torch.optim.lr_scheduler.LambdaLR(optimizers[name], factor)
    return optimizers, schedulers


def _build_synthesizer(method: str, ds: PreparedDataset, protocol: Protocol, variant, options) -> Synthesizer:
    cls = get_registry().synthesizer(method)
    merged = build_options(cls, variant, protocol.reduced_networks, protocol.method_options.get(method), options)
    try:
        return cls(num_classes=ds.num_classes, image_size=ds.size, options=merged, variant=variant)
    except SynthbenchError:
        raise
    except (ValueError, RuntimeError, TypeError) as exc:
        raise SynthbenchError(f"{method}: cannot build for {ds.num_classes} classes at {ds.size}px: {exc}") from exc


def _plugin_record(method: str) -> dict[str, Any]:
    return get_registry().provenance("synthesizers", method)


def _say(message: str) -> None:
    from synthbench.cli.console import err_console

    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def train(
    method: str,
    data_dir: str | Path,
    out_dir: str | Path,
    protocol: str | Protocol = "smoke",
    seed: int | None = None,
    variant: str | None = None,
    options: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> RunResult:
    """Train ``method`` on the prepared data set ``data_dir`` into the run directory ``out_dir``.

    The run directory is locked for the whole call (:mod:`synthbench.locking`); a second process
    is refused at once. A SIGINT/SIGTERM writes a checkpoint and raises
    :class:`synthbench.engine.interrupts.RunInterrupted`.
    """
    out_dir = Path(out_dir)
    ds = PreparedDataset(data_dir)
    writer = int(os.environ.get("RANK", "0")) == 0  # torchrun: rank 0 owns the directory
    if writer:
        preflight_mlflow()  # an unusable SYNTHBENCH_MLFLOW store is refused before anything is written
    created = not out_dir.exists()
    lock = lock_directory(out_dir) if writer else None
    try:
        return _locked_train(method, ds, out_dir, protocol, seed, variant, options, overrides, resume, show_progress, writer)
    except BaseException:
        if created and writer and rundir.is_unstarted(out_dir):
            shutil.rmtree(out_dir, ignore_errors=True)  # refused before writing anything: leave no trace
        raise
    finally:
        if lock is not None:
            lock.release()


def _locked_train(method, ds, out_dir, protocol, seed, variant, options, overrides, resume, show_progress, writer):
    config_path = out_dir / "config.json"
    if writer and (removed := rundir.remove_run_leftovers(out_dir)):
        _say(f"removed {len(removed)} temporary file(s) left by an interrupted run: {', '.join(p.name for p in removed)}")
    if resume:
        if not config_path.is_file() and rundir.is_unstarted(out_dir):
            raise SynthbenchError("nothing to resume: the run was stopped before it wrote its configuration "
                                  "(start it again without --resume)", out_dir)
        config = rundir.read_json(config_path)
        if config.get("method") != method:
            raise SynthbenchError(f"run was trained with method {config.get('method')!r}, not {method!r}", config_path)
        plan_changes = {k: v for k, v in (overrides or {}).items() if k not in RUNTIME_FIELDS}
        if plan_changes or (options and options != (config.get("explicit_options") or {})) or (
            variant is not None and variant != config.get("variant")) or (
            seed is not None and seed != config["protocol"]["seed"]
        ):
            raise SynthbenchError(
                "--resume continues the recorded configuration; only "
                f"{', '.join(RUNTIME_FIELDS)} may change (got {sorted(plan_changes) or 'options/variant/seed'})",
                config_path,
            )
        if ds.content_hash != config["data"]["content_hash"]:
            raise SynthbenchError(
                f"data set content hash {ds.content_hash[:12]} differs from the run's {config['data']['content_hash'][:12]}",
                ds.root,
            )
        # stop_after_steps belongs to one invocation (configs of older versions recorded it)
        proto = Protocol.from_dict(config["protocol"]).replace({"stop_after_steps": None, **(overrides or {})}).validate()
        variant, options = config.get("variant"), config.get("explicit_options") or {}
        ckpt_path, state = rundir.load_latest_checkpoint(out_dir, say=_say if writer else None)
        if ckpt_path is None and writer:
            _say(f"{out_dir}: no checkpoint yet (stopped before the first one): training from step 0 "
                 "with the recorded configuration")
    else:
        if writer and not rundir.is_unstarted(out_dir):
            raise SynthbenchError("run directory is not empty (use --resume to continue it, or another --out)", out_dir)
        proto = get_protocol(protocol, overrides)
        if seed is not None:
            proto.seed = int(seed)
        ckpt_path, state = None, None
    if not ds.check_files() and writer:  # sizes and fingerprints of the prepared arrays
        _say(f"{ds.root}: prepared by an older synthbench without file records: not checked "
             f"(run 'synthbench data verify {ds.root}' to recompute its content hash)")

    device_type = "cuda" if (proto.device == "auto" and torch.cuda.is_available()) or proto.device.startswith("cuda") else "cpu"
    ctx = distributed.from_env(device_type)
    det_before = torch.are_deterministic_algorithms_enabled()
    cudnn_before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        return _train(method, ds, out_dir, proto, variant, options, (ckpt_path, state) if resume else None,
                      show_progress, ctx)
    finally:
        torch.use_deterministic_algorithms(det_before)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_before
        ctx.close()


def _train(method, ds, out_dir, proto, variant, options, resume_from, show_progress, ctx) -> RunResult:
    """``resume_from``: None for a new run, else (checkpoint path, its state), both None when a
    resumed run had not written its first checkpoint (it restarts from step 0)."""
    ckpt_path, state = resume_from if resume_from is not None else (None, None)
    device = _resolve_device(proto.device, ctx.local_rank)
    on_cuda = device.type == "cuda"
    # ---------------------------------------------------------------- determinism and speed knobs
    if proto.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = _auto(proto.cudnn_benchmark, on_cuda)
    precision = proto.precision if proto.precision != "auto" else ("bf16" if on_cuda else "fp32")
    channels_last = _auto(proto.channels_last, on_cuda)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    # ---------------------------------------------------------------- data and model
    split = proto.train_split
    if split == "auto":
        split = "train_aug" if ds.has_split("train_aug") else "train"
    dataset = ds.torch_dataset(split)
    if len(dataset) == 0:
        raise SynthbenchError(f"split {split!r} is empty", ds.root)
    _seed_everything(proto.seed)
    synth = _build_synthesizer(method, ds, proto, variant, options)
    synth.to(device, memory_format=memory_format)
    if ctx.enabled:
        distributed.wrap(synth, ctx, device, proto.ddp_find_unused_parameters)
    if proto.compile:
        for name, net in list(synth.train_nets.items()):
            synth.train_nets[name] = torch.compile(net)

    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=proto.seed, drop_last=ctx.world_size > 1)
    per_rank = len(sampler)
    batch_size = min(per_rank_batch_size(proto.batch_size, ctx.world_size), per_rank)
    steps_per_epoch = per_rank // batch_size
    plans = plan_stages(synth.stages, proto.epochs, steps_per_epoch, proto.max_steps)
    total_steps = sum(p.steps for p in plans)
    betas_override = proto.method_betas.get(method)
    fused, fused_off_reason = resolve_fused_adam(proto.fused_adam, synth, plans)
    if not fused and proto.fused_adam == "auto":
        _say(f"{method}: Adam not fused ({fused_off_reason}); using torch's default implementation")

    sample_idx = list(range(min(proto.sample_count, len(dataset))))
    sample_batch = ds.collate([dataset[i] for i in sample_idx]).to(device, memory_format) if sample_idx else None
    probe = sample_batch if sample_batch is not None else (
        ds.collate([dataset[i] for i in range(min(2, len(dataset)))]).to(device, memory_format))
    with torch.random.fork_rng(devices=[device.index or 0] if on_cuda else []):  # the check leaves training's RNG as it was
        _generate_checked(synth, probe, "on the first sample batch (before training)", trained=False)

    # ---------------------------------------------------------------- run directory
    explicit_options = {**(options or {})}
    config = {
        "method": method,
        "variant": variant,
        "explicit_options": explicit_options,
        "options": synth.options,
        "num_classes": ds.num_classes,
        "image_size": ds.size,
        "protocol": {**proto.to_dict(), "stop_after_steps": None},  # --stop-after: this invocation only
        "seed": proto.seed,
        "data": {"dir": str(Path(ds.root).resolve()), "content_hash": ds.content_hash, "split": split,
                 "train_count": len(dataset), "spec": ds.spec.to_dict()},
        "resolved": {
            "device": str(device), "precision": precision, "channels_last": channels_last, "fused_adam": fused,
            "fused_adam_off_reason": fused_off_reason,
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark), "deterministic": proto.deterministic,
            "world_size": ctx.world_size, "batch_size_per_rank": batch_size,
            "global_batch_size": batch_size * ctx.world_size, "steps_per_epoch": steps_per_epoch,
            "stages": [vars(p) for p in plans], "total_steps": total_steps,
        },
        "optimizers": {},
    }
    for plan in plans:
        specs = synth.optimizers(plan.name)
        config["optimizers"][plan.name] = {
            n: {"lr": proto.lr * s.lr_scale, "lr_scale": s.lr_scale, "betas": list(betas_override or s.betas)}
            for n, s in specs.items()
        }
    writer = ctx.is_main
    started = rundir.now()
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "samples").mkdir(exist_ok=True)
        (out_dir / "checkpoints").mkdir(exist_ok=True)
        if resume_from is None or not (out_dir / "config.json").is_file():
            atomic_write_json(out_dir / "config.json", config)
        has_manifest = resume_from is not None and (out_dir / "manifest.json").is_file()
        manifest = rundir.read_json(out_dir / "manifest.json") if has_manifest else {}
        manifest.update({
            "method": method,
            "seed": proto.seed,
            "protocol": proto.name,
            "versions": rundir.versions(),
            "git_commit": rundir.git_commit(),
            "hardware": rundir.hardware(),
            "plugin": _plugin_record(method),
            "data_hash": ds.content_hash,
            "pretrained_weights": synth.pretrained_weights(),
            "parameters": synth.parameter_counts(),
            "optimizer": {"fused_adam": fused, "fused_adam_off_reason": fused_off_reason},  # this invocation
            "status": "running",
            "end_time": None,
        })
        manifest.setdefault("start_time", started)
        if resume_from is not None:
            manifest.setdefault("resumed_at", []).append(started)
        rundir.write_manifest(out_dir, manifest)

    # ---------------------------------------------------------------- resume state
    step, stage_index, epoch_in_stage, batch_in_epoch, global_epoch, elapsed_before = 0, 0, 0, 0, 0, 0.0
    if state is not None:
        rundir.load_nets(synth, state["nets"], ckpt_path)
        pos = state["position"]
        step, stage_index, epoch_in_stage = pos["step"], pos["stage_index"], pos["epoch_in_stage"]
        batch_in_epoch, global_epoch = pos["batch_in_epoch"], pos["global_epoch"]
        elapsed_before = float(state.get("elapsed_s", 0.0))
    if resume_from is not None and writer:
        rundir.StepLog.truncate_after(out_dir / "log.jsonl", step)
    log = rundir.StepLog(out_dir / "log.jsonl", enabled=writer)
    events = RunEvents(out_dir, method, enabled=writer, resume_step=step if resume_from is not None else None,
                       say=_say, params={"method": method, "variant": variant, "protocol": proto.name,
                                         "seed": proto.seed, "precision": precision,
                                         "global_batch_size": batch_size * ctx.world_size, "image_size": ds.size})

    scaler = torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    images_done, t_start, status, last_losses = 0, time.perf_counter(), "running", {}
    steps_this_call = 0
    last_ckpt: Path | None = ckpt_path

    def checkpoint_payload(position: dict[str, int], stage: str, optimizers, schedulers) -> dict[str, Any]:
        return {
            "format": "synthbench-checkpoint/1",
            "method": method,
            "nets": synth.state_dict(),
            # The optimizer and scheduler states belong to ``stage``; at a stage's end the position
            # already names the next stage, which starts with new optimizers (see resume below).
            "optimizer_stage": stage,
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": rundir.rng_state(),
            "position": position,
            "elapsed_s": elapsed_before + time.perf_counter() - t_start,
        }

    progress_cm = contextlib.nullcontext(None)
    if show_progress and writer:
        from rich.progress import TextColumn

        from synthbench.cli.console import progress

        progress_cm = progress(TextColumn("{task.fields[info]}"))
    stop = False
    interrupted: str | None = None
    failure: BaseException | None = None

    def check_health() -> None:
        problem = health.check_run(synth, sample_batch)
        if distributed.any_rank(problem is not None, ctx, device):
            raise health.divergence_error(method, step, problem or "non-finite values on another rank")

    try:
        with progress_cm as bar, interrupts.deferred_interrupts() as signal_flag:
            task = bar.add_task(method, total=total_steps, completed=step, info="") if bar is not None else None
            for si in range(stage_index, len(plans)):
                plan = plans[si]
                optimizers, schedulers = build_optimizers(synth, plans, si, proto, fused, betas_override)
                stage_start_step = sum(p.steps for p in plans[:si])
                if state is not None and si == stage_index:
                    # Optimizer/scheduler states are this stage's unless the checkpoint was taken at
                    # the end of the previous stage (older checkpoints do not name their stage: then
                    # a position at the stage's first step means the previous stage's states).
                    own = state.get("optimizer_stage", plan.name if step > stage_start_step else None) == plan.name
                    for name, opt in optimizers.items() if own else ():
                        opt.load_state_dict(state["optimizers"][name])
                        schedulers[name].load_state_dict(state["schedulers"][name])
                    if state.get("scaler"):
                        scaler.load_state_dict(state["scaler"])
                    rundir.set_rng_state(state["rng"])
                    start_epoch, skip = epoch_in_stage, batch_in_epoch
                    state = None
                else:
                    start_epoch, skip = 0, 0
                stage_step = step - stage_start_step
                for ep in range(start_epoch, plan.epochs):
                    if stage_step >= plan.steps or stop:
                        break
                    sampler.set_epoch(global_epoch)
                    indices = list(sampler)[: steps_per_epoch * batch_size][skip * batch_size:]
                    gen = torch.Generator().manual_seed(proto.seed * 1000003 + global_epoch)
                    loader = DataLoader(dataset, batch_size=batch_size, sampler=_ListSampler(indices),
                                        collate_fn=ds.collate, num_workers=proto.workers, drop_last=True,
                                        pin_memory=on_cuda, worker_init_fn=_seed_worker, generator=gen,
                                        persistent_workers=False)
                    b = skip
                    skip = 0
                    for batch in loader:
                        t0 = time.perf_counter()
                        batch = batch.to(device, memory_format)
                        synth.train(True)
                        losses, logs = _iteration(synth, plan.name, batch, optimizers, scaler, autocast, method, step)
                        for sch in schedulers.values():
                            sch.step()
                        step += 1
                        stage_step += 1
                        b += 1
                        steps_this_call += 1
                        n_img = len(batch) * ctx.world_size
                        images_done += n_img
                        dt = time.perf_counter() - t0
                        last_losses = losses
                        record = {"step": step, "stage": plan.name, "epoch": global_epoch + 1, "batch": b,
                                  "images_per_second": n_img / max(dt, 1e-9), "time": time.time()}
                        record.update({f"loss/{k}": v for k, v in losses.items()})
                        record.update(logs)
                        record.update({f"lr/{n}": o.param_groups[0]["lr"] for n, o in optimizers.items()})
                        log.write(record)
                        events.scalars(record)
                        if bar is not None:
                            info = " ".join(f"{k} {v:.3g}" for k, v in losses.items())
                            bar.update(task, advance=1, info=f"{info} {record['images_per_second']:.1f} img/s",
                                       description=f"{method} {plan.name} ep {global_epoch + 1}")
                        end_of_epoch = b >= steps_per_epoch
                        end_of_stage = stage_step >= plan.steps
                        pos_epoch, pos_b, pos_ge = ep, b, global_epoch
                        if end_of_epoch or end_of_stage:
                            pos_epoch, pos_b, pos_ge = ep + 1, 0, global_epoch + 1
                        if end_of_stage:
                            pos = {"step": step, "stage_index": si + 1, "epoch_in_stage": 0, "batch_in_epoch": 0,
                                   "global_epoch": pos_ge}
                        else:
                            pos = {"step": step, "stage_index": si, "epoch_in_stage": pos_epoch,
                                   "batch_in_epoch": pos_b, "global_epoch": pos_ge}
                        stop = proto.stop_after_steps is not None and steps_this_call >= proto.stop_after_steps
                        if distributed.any_rank(signal_flag.is_set, ctx, device) and step < total_steps:
                            interrupted = signal_flag.signal_name or "a signal on another rank"
                            stop = True
                        if end_of_epoch or end_of_stage:
                            if writer and proto.sample_every_epoch and sample_batch is not None:
                                grid = _write_samples(synth, sample_batch, ds, out_dir / "samples" / f"epoch_{global_epoch + 1:03d}.png")
                                events.image(grid, step)
                            global_epoch += 1
                        if step % proto.checkpoint_every == 0 or stop or step == total_steps:
                            check_health()  # a diverged state never becomes the newest checkpoint
                            if writer:
                                events.flush()  # events up to the checkpoint are on disk before it is
                                last_ckpt = rundir.save_checkpoint(
                                    out_dir, step, checkpoint_payload(pos, plan.name, optimizers, schedulers), proto.keep_last_n)
                        if end_of_stage or stop:
                            break
                    if stop:
                        break
                if stop:
                    break
        distributed.sync_buffers(synth, ctx)
        status = "interrupted" if interrupted else "stopped" if stop and step < total_steps else "finished"
        if status == "finished":
            check_health()
            if writer:
                rundir.save_final(out_dir, {"format": "synthbench-weights/1", "method": method, "nets": synth.state_dict()})
    except NonFiniteLossError as exc:
        status, failure = "failed", exc
        raise type(exc)(
            f"{exc}; last good checkpoint: {last_ckpt if last_ckpt else 'none written yet'}"
        ) from None
    except KeyboardInterrupt as exc:  # a second Ctrl-C: stopped at once, the newest checkpoint stays
        status, failure = "interrupted", exc
        raise
    except BaseException as exc:
        status, failure = "failed", exc
        raise
    finally:
        wall = time.perf_counter() - t_start
        try:
            log.close()
            events.close(status)
            if writer and (out_dir / "manifest.json").exists():
                manifest = rundir.read_json(out_dir / "manifest.json")
                manifest.update({"status": status, "end_time": rundir.now(), "steps": step,
                                 "wall_time_s": elapsed_before + wall, "images_per_second": images_done / max(wall, 1e-9)})
                rundir.write_manifest(out_dir, manifest)
        except OSError:
            if failure is None or find_user_os_error(failure) is None:
                raise  # else the disk is full or read-only: the first error is the one to report
        if status not in ("failed", "interrupted") or interrupted:
            ctx.barrier()
    if interrupted:
        raise interrupts.RunInterrupted(interrupted, out_dir, step, last_ckpt)
    return RunResult(out_dir, step, global_epoch, wall, images_done / max(wall, 1e-9), last_losses, status, synth)


def _iteration(synth, stage, batch, optimizers, scaler, autocast, method, step) -> tuple[dict[str, float], dict[str, float]]:
    """Run one ``training_step`` generator: each piece under autocast, then backward/step its optimizer."""
    losses: dict[str, float] = {}
    logs: dict[str, float] = {}
    updates = synth.training_step(stage, batch)
    while True:
        with autocast():
            try:
                update = next(updates)
            except StopIteration:
                break
        opt = optimizers.get(update.optimizer)
        if opt is None:
            raise SynthesizerConfigError(
                f"{method}: training_step yielded optimizer {update.optimizer!r}, stage {stage!r} has {sorted(optimizers)}")
        loss = update.loss
        if not bool(torch.isfinite(loss.detach()).all()):
            updates.close()
            raise NonFiniteLossError(
                f"{method}: non-finite loss ({float(loss.detach().float())}) for optimizer {update.optimizer!r} "
                f"in stage {stage!r} at step {step + 1}; training stopped")
        opt.zero_grad(set_to_none=True)
        if scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        losses[update.optimizer] = float(loss.detach().float())
        for key, value in update.logs.items():
            logs[key] = rundir.to_float(value)
    return losses, logs


@torch.no_grad()
def _generate_checked(synth: Synthesizer, batch, where: str, trained: bool = True) -> torch.Tensor:
    """``generate()`` on a batch, its output checked against the contract (:mod:`synthbench.output_check`)."""
    try:
        fake = synth.generate(batch.onehot.to(batch.image.dtype), style=batch.image)
    finally:
        synth.train(True)
    if trained and (problem := health.generated_problem(fake)) is not None:  # else: a contract problem
        raise health.DivergenceError(f"{synth.name}: the run diverged: {where}: {problem}; training stopped")
    check_generated(fake, synth.name, len(batch), batch.image.shape[-1], where)
    return fake


@torch.no_grad()
def _write_samples(synth: Synthesizer, batch, ds: PreparedDataset, path: Path) -> np.ndarray:
    """Write the sample grid PNG; returns the grid (``uint8 [H, W, 3]``)."""
    fake = _generate_checked(synth, batch, f"sample grid {path.name}")
    grid = sample_grid(batch.label, batch.image, fake, ds.spec)
    save_png(grid, path)
    return grid
