"""The shared training engine: protocols, the one training loop, checkpoints, run directory, DDP.

Python API (every method trains through exactly this)::

    from synthbench.engine import Protocol, get_protocol, train, load_synthesizer, RunResult

    result = train("pix2pix", data_dir, out_dir, protocol="quick", seed=None, variant=None,
                   options=None, overrides=None, resume=False, show_progress=True)
    # RunResult(run_dir, steps, epochs, wall_time_s, images_per_second, final_losses, status)
    synth = load_synthesizer(run_dir, device="cpu")   # final weights, else the latest checkpoint

* ``protocol``: ``"paper"``, ``"quick"``, ``"smoke"`` or a :class:`Protocol`; ``overrides`` set
  any protocol field (e.g. ``{"epochs": 2, "max_steps": 50, "deterministic": True}``).
  ``seed`` None means the protocol's seed. ``options`` / ``variant`` go to the synthesizer
  (defaults -> ``reduced_options`` when the protocol has ``reduced_networks`` (quick, smoke)
  -> variant -> protocol ``method_options`` -> explicit options: a variant's own keys win over
  the reduced build; values are type-checked, :mod:`synthbench.options`).
* Stages: ``synthesizer.stages`` in order, stage i gets ``round(fraction_i * epochs)`` epochs
  (at least one step); per stage, one Adam per ``synthesizer.optimizers(stage)`` entry with
  ``lr = protocol.lr * lr_scale`` and the spec's betas (or ``protocol.method_betas[method]``),
  and one ``LambdaLR`` each: constant for the first half of the stage's steps, then linearly to
  0 (paper Sec. "Implementation details").
* Each ``Update`` yielded by ``training_step`` is produced under autocast (``next()`` runs inside
  the autocast context), its loss checked with ``torch.isfinite`` (a non-finite loss raises
  :class:`synthbench.errors.NonFiniteLossError` naming method, stage, step and optimizer; the
  last good checkpoint is left intact), then ``zero_grad`` / ``backward`` (scaled for fp16) /
  ``step`` on the named optimizer.
* CUDA defaults (each a protocol field; set it to turn the feature off): ``precision="auto"``
  -> bf16 autocast (``"fp32"`` off, ``"fp16"`` uses a GradScaler); ``channels_last="auto"``
  (False off; the batch's image and one-hot label map follow it, ``Batch.memory_format``);
  ``fused_adam="auto"`` (also on CPU where the installed torch has fused kernels, else the
  reason is printed and recorded as ``resolved.fused_adam_off_reason``; False off);
  ``cudnn_benchmark="auto"`` (on unless ``deterministic``; False off). ``deterministic=True`` sets
  ``torch.use_deterministic_algorithms(True)``, cudnn deterministic and
  ``CUBLAS_WORKSPACE_CONFIG``; the previous global settings are restored when ``train`` returns.
* Data: split ``train_aug`` if the prepared set has it, else ``train`` (``train_split``
  overrides). The order of every epoch comes from a ``DistributedSampler`` seeded with the run
  seed and the epoch number (also in single-process runs), so a resumed run sees the same order
  and skips the batches already done. The data set is identified by its content hash.
* Resume (``resume=True``, CLI ``--resume``): the recorded configuration is reloaded; the newest
  readable checkpoint (an unreadable newer one, cut by a host crash, is skipped and said so)
  restores networks, optimizers, schedulers, grad scaler, RNG states (torch, numpy, python,
  CUDA) and the position (stage, epoch, batch, step). A checkpoint taken at the end of a stage
  points at the next stage; its optimizer/scheduler states belong to the finished stage
  (``optimizer_stage``) and are not loaded: the next stage starts with new optimizers, exactly
  as an uninterrupted run does. A run stopped before its first checkpoint restarts from step 0.
  On CPU in deterministic mode the weights at the end equal an uninterrupted run's exactly
  (also after ``kill -9``, SIGINT or SIGTERM at a stage boundary; tested). Only runtime fields
  (``stop_after_steps``, ``device``, ``workers``, ``checkpoint_every``, ``keep_last_n``) may
  change; ``stop_after_steps`` applies to one invocation and is never recorded.
* Interrupts (:mod:`synthbench.engine.interrupts`): the first SIGINT/SIGTERM finishes the step,
  writes a checkpoint, records ``interrupted`` and raises ``RunInterrupted`` (CLI: exit 130 with
  the resume command); a second Ctrl-C stops at once.
* One writer: the run directory is locked (``RUN/.synthbench.lock``, :mod:`synthbench.locking`)
  for the whole call; a second process is refused at once naming the holder's pid and host.
  Temporary files of a killed writer are removed at the next start.
* Divergence (:mod:`synthbench.engine.health`): at every checkpoint (before writing it) and at the
  end (before ``final.pt``) every parameter and buffer and the generator's output on the sample
  batch must be finite, and so must every sample grid; otherwise ``DivergenceError`` (a
  ``NonFiniteLossError``) names the tensor and the last good checkpoint.
* Data: ``train`` compares the prepared files' sizes and fingerprints with their manifest first
  (:meth:`synthbench.data.prepared.PreparedDataset.check_files`).
* Distributed: under torchrun see :mod:`synthbench.engine.distributed`; only rank 0 writes.
  ``torchrun --nnodes N --nproc-per-node G -m synthbench train ...`` (README, "Several GPUs in
  one run"; tested with gloo: 2 processes, and 2 nodes of one process on localhost).

Run directory layout::

    RUN/config.json             resolved config: method, variant, options used, explicit options,
                                protocol fields, seed, data dir + content hash + split, resolved
                                device/precision/fused Adam (and why not)/batch/stage plan,
                                optimizers (lr, betas) per stage
    RUN/manifest.json           seed, versions (python, torch, synthbench, ...), git commit, hardware,
                                plugin (name, distribution, version), data hash, pretrained weights
                                (sha256), parameter counts, this invocation's optimizer
                                (fused Adam or why not), start/end time, resumed_at, status
                                (running / finished / stopped / interrupted / failed), steps,
                                wall time (all invocations together), images/s
    RUN/log.jsonl               one line per step: step, stage, epoch, batch, loss/<optimizer>,
                                the plugin's logs, lr/<optimizer>, images_per_second, time
    RUN/events.out.tfevents.*   TensorBoard event files: the log's scalars (loss/, lr/, speed/,
                                progress/, <method>/<key>) and each sample grid
                                (:mod:`synthbench.engine.tensorboard`; rewritten without the steps
                                after the checkpoint on resume)
    RUN/mlflow_run.json         only with SYNTHBENCH_MLFLOW: the MLflow run this run logs to
    RUN/samples/epoch_NNN.png   per epoch: rows of fixed training samples, columns label (class
                                colours), real, fake
    RUN/checkpoints/ckpt_NNNNNNN.pt   every ``checkpoint_every`` steps, on a stop or an interrupt
                                and at the end (atomic, fsynced; the newest ``keep_last_n`` kept):
                                nets, optimizer_stage, optimizers, schedulers, scaler, rng,
                                position, elapsed_s
    RUN/final.pt                {"format", "method", "nets"}: the final weights (atomic, fsynced)
    RUN/.synthbench.lock        the lock of the process writing the run (pid, host, since)

``log.jsonl`` is appended and flushed every step (on resume, records after the checkpoint are
dropped); every other file is written atomically through :mod:`synthbench.io`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from synthbench.engine.loop import RunResult, plan_stages, train
from synthbench.engine.protocol import PROTOCOLS, Protocol, get_protocol
from synthbench.errors import SynthbenchError


def load_synthesizer(run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str | Path | None = None):
    """The run's synthesizer with its final weights (else the newest readable checkpoint), in eval mode.

    Weights that do not fit the networks, or hold NaN/inf (a diverged run of an older
    version), are a :class:`SynthbenchError` naming the file.
    """
    from synthbench.engine import health, rundir
    from synthbench.plugins import get_registry

    run_dir = Path(run_dir)
    config = rundir.read_json(run_dir / "config.json")
    cls = get_registry().synthesizer(config["method"])
    synth = cls(num_classes=config["num_classes"], image_size=config["image_size"],
                options=config.get("options"), variant=None)
    synth.variant = config.get("variant")
    if checkpoint is None and (run_dir / rundir.FINAL).is_file():
        checkpoint = run_dir / rundir.FINAL
    if checkpoint is None:
        from synthbench.cli.console import err_console

        checkpoint, state = rundir.load_latest_checkpoint(
            run_dir, say=lambda m: err_console.print(m, markup=False, soft_wrap=True))
        if checkpoint is None:
            raise SynthbenchError("run has no final weights and no checkpoint", run_dir)
    else:
        state = rundir.load_checkpoint(Path(checkpoint), map_location="cpu")
    if state.get("method", config["method"]) != config["method"]:
        raise SynthbenchError(f"weights are for {state.get('method')!r}, the run is {config['method']!r}", checkpoint)
    rundir.load_nets(synth, state["nets"], Path(checkpoint))
    if (problem := health.non_finite_tensor(synth)) is not None:
        raise SynthbenchError(f"the weights hold non-finite values ({problem}): the run diverged", checkpoint)
    synth.to(device)
    synth.train(False)
    synth.run_dir = run_dir
    synth.run_config = config
    synth.weights_path = Path(checkpoint)
    return synth


__all__ = ["PROTOCOLS", "Protocol", "RunResult", "get_protocol", "load_synthesizer", "plan_stages", "train"]
