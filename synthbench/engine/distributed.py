"""Distributed data parallel (torchrun): process group, SyncBatchNorm, DDP wrapping.

Under ``torchrun`` (env ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) the engine initialises the
process group (nccl on CUDA, gloo on CPU), shards data with a ``DistributedSampler`` and wraps
every trainable network in ``DistributedDataParallel``; the wrapper goes into
``synthesizer.train_nets[name]`` while ``synthesizer.nets`` keeps the plain module. BatchNorm is
converted to ``SyncBatchNorm`` on CUDA only: SyncBatchNorm's forward needs CUDA, so on CPU/gloo
each rank keeps plain BatchNorm (batch statistics per rank, running buffers broadcast from rank
0 by DDP). Only rank 0 writes to the run directory.

Multi-phase GAN steps: a network that is used but not stepped in an update (D inside the G
update) should be called through ``synthesizer.nets`` (plain) with ``requires_grad`` off, so DDP
does not wait for gradients that never come; ``find_unused_parameters`` (protocol field
``ddp_find_unused_parameters``, default True) additionally tolerates plugins that call the
wrapped D there, at the cost of a graph traversal per forward.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def from_env(device_type: str) -> DistContext:
    """Read torchrun's environment; initialise the process group if it is a multi-process run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    initialized_here = False
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        initialized_here = True
    return DistContext(rank, world, local_rank, initialized_here)


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (a stop decision all ranks must share,
    or the ranks still in the loop would wait for the others forever)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def sync_buffers(synth, ctx: DistContext) -> None:
    """Broadcast rank 0's buffers (BatchNorm running statistics) so every rank ends identical.

    DDP broadcasts buffers at the start of each forward; after the last step each rank still
    holds the statistics of its own last batch.
    """
    if not ctx.enabled:
        return
    for buf in synth.nets.buffers():
        dist.broadcast(buf.data, src=0)


def wrap(synth, ctx: DistContext, device: torch.device, find_unused: bool) -> None:
    """SyncBatchNorm (CUDA only) on ``synth.nets``, then DDP wrappers into ``synth.train_nets``."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    for name in list(synth.nets.keys()):
        net = synth.nets[name]
        if device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            synth.nets[name] = net
        if any(p.requires_grad for p in net.parameters()):
            synth.train_nets[name] = DDP(
                net,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=find_unused,
            )
        else:
            synth.train_nets[name] = net
