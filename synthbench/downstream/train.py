"""The one fixed U-Net training protocol of the downstream experiment (paper Tables III/IV).

The paper does not state how its U-Net was trained; synthbench fixes one protocol and applies it
unchanged whatever the synthetic images' source, ratio or experiment (it is recorded with every
result): Adam (``lr``, ``betas``), ``steps`` optimizer steps of ``batch_size`` slices drawn from
seeded reshuffled passes over the training set, no augmentation (or a fixed seeded horizontal
flip), the loss cross-entropy + soft Dice over the lesion classes (the Dice term counters the
small lesion area), one seed for weights and batch order. A fixed number of steps (not epochs)
gives every training set of the ``add`` experiment the same amount of optimization.

Targets: label 0 is "background or non-lesion" (outside the lungs and the lung parenchyma
alike, i.e. the lung class is not a target), label ``k`` is the ``k``-th lesion class of the
data set (``spec.lesion_ids`` in order). The U-Net sees the image only, never the label map.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from synthbench.cli.console import progress
from synthbench.downstream.unet import UNet
from synthbench.errors import NonFiniteLossError, SynthbenchError

AUGMENTATIONS = ("none", "flip")
#: U-Net tensor layouts; "auto" is channels_last on the CPU (the quick U-Net's 8-64 channel
#: convolutions train about 15% faster there, measured; the default size is unchanged) and
#: contiguous elsewhere (not measured on CUDA).
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


@dataclass(frozen=True)
class UNetProtocol:
    """Architecture and training settings, identical for every method (recorded per result)."""

    depth: int = 4
    width: int = 64
    batch_norm: bool = True
    steps: int = 4000
    batch_size: int = 8
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    dice_weight: float = 1.0
    augment: str = "none"
    seed: int = 0
    eval_batch_size: int = 16
    log_every: int = 50
    memory_format: str = "auto"

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise SynthbenchError(f"U-Net protocol: augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        if self.memory_format != "auto" and self.memory_format not in MEMORY_FORMATS:
            raise SynthbenchError(f"U-Net protocol: memory_format must be auto or one of {tuple(MEMORY_FORMATS)}, "
                                  f"got {self.memory_format!r}")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise SynthbenchError(f"U-Net protocol: steps, batch_size and lr must be positive (got {self.steps}, {self.batch_size}, {self.lr})")

    @classmethod
    def quick(cls, **overrides: Any) -> UNetProtocol:
        """Small U-Net (depth 3, width 8), 300 steps at lr 3e-3: CPU smoke runs and tests (64-128 px).

        On the 64 px phantom this reaches an infection Dice of about 0.6 on held-out patients.
        """
        return replace(cls(depth=3, width=8, steps=300, batch_size=8, lr=3e-3), **overrides)

    @classmethod
    def named(cls, name: str, **overrides: Any) -> UNetProtocol:
        """``"default"`` (the original U-Net size) or ``"quick"``."""
        if name == "quick":
            return cls.quick(**overrides)
        if name == "default":
            return replace(cls(), **overrides)
        raise SynthbenchError(f"unknown U-Net protocol {name!r} (use 'default' or 'quick')")

    def to_dict(self, device: str | torch.device | None = None) -> dict[str, Any]:
        """The fields (recorded with every result); with ``device``, an "auto" memory format shows
        the layout it resolves to there (for reports)."""
        d = asdict(self)
        if device is not None and self.memory_format == "auto":
            d["memory_format"] = f"{memory_format(self, device)} (auto on {torch.device(device).type})"
        d["betas"] = list(self.betas)
        d["optimizer"] = "adam"
        d["loss"] = f"cross_entropy + {self.dice_weight} * soft_dice(lesion classes)"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetProtocol:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "betas" in known:
            known["betas"] = tuple(known["betas"])
        return cls(**known)


def memory_format(protocol: UNetProtocol, device: str | torch.device) -> str:
    """The layout ``protocol`` trains and predicts in on ``device`` ("auto" resolved)."""
    if protocol.memory_format != "auto":
        return protocol.memory_format
    return "channels_last" if torch.device(device).type == "cpu" else "contiguous"


def lesion_targets(label: np.ndarray, lesion_ids: tuple[int, ...], num_classes: int) -> np.ndarray:
    """Class ids -> U-Net targets: 0 background/non-lesion (lung included), k for lesion_ids[k-1]."""
    lut = np.zeros(max(num_classes, int(label.max(initial=0)) + 1), dtype=np.int64)
    for k, cid in enumerate(lesion_ids, start=1):
        lut[cid] = k
    return lut[np.asarray(label, dtype=np.int64)]


class Take:
    """Rows ``indices`` of ``array`` (a memory map stays on disk until a batch reads its rows)."""

    def __init__(self, array, indices):
        self.array, self.indices = array, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, rows) -> np.ndarray:
        return np.asarray(self.array[self.indices[rows]])


class Rows:
    """Several ``[n_i, H, W]`` arrays read as one, a batch of rows at a time (memory-mapped parts
    stay on disk: the paper's 10,220-image sets at 512 px never sit in memory as float32);
    ``transform`` is applied to each block read (e.g. :func:`lesion_targets`)."""

    def __init__(self, parts, transform=None):
        self.parts = [p for p in parts if len(p)]
        self.transform = transform
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.atleast_1d(np.arange(len(self))[idx] if isinstance(idx, slice) else np.asarray(idx, dtype=np.int64))
        part = np.searchsorted(self.offsets[1:], idx, side="right")
        blocks, where = [], []
        for p in np.unique(part):
            mask = part == p
            block = np.asarray(self.parts[p][idx[mask] - self.offsets[p]])
            blocks.append(self.transform(block) if self.transform else block)
            where.append(mask)
        out = np.empty((len(idx),) + blocks[0].shape[1:], dtype=blocks[0].dtype)
        for block, mask in zip(blocks, where, strict=True):
            out[mask] = block
        return out


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the lesion classes (channels 1..K), pooled over the batch."""
    prob = logits.softmax(dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(prob.dtype)
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """Index batches from seeded reshuffled passes over ``n`` items (a batch never repeats an item)."""
    bs = min(batch_size, n)
    order = torch.randperm(n, generator=generator)
    pos = 0
    for _ in range(steps):
        if pos + bs > n:
            order, pos = torch.randperm(n, generator=generator), 0
        yield order[pos : pos + bs]
        pos += bs


def train_unet(
    images: np.ndarray,
    targets: np.ndarray,
    num_targets: int,
    protocol: UNetProtocol,
    device: str = "cpu",
    description: str = "U-Net",
) -> tuple[UNet, dict[str, Any]]:
    """Train a U-Net on ``images`` float ``[N, H, W]`` in [-1, 1] and ``targets`` int ``[N, H, W]``
    (arrays, memory maps or :class:`Rows`; only the rows of each batch are read).

    Returns the model (eval mode) and a log ``{"loss": [[step, loss], ...], "seconds": ...}``.
    A non-finite loss stops training with :class:`NonFiniteLossError`.
    """
    if len(images) == 0:
        raise SynthbenchError("U-Net training set is empty")
    if len(images) != len(targets):
        raise SynthbenchError(f"U-Net training set: {len(images)} images but {len(targets)} targets")
    torch.manual_seed(protocol.seed)
    layout = memory_format(protocol, device)
    model = UNet(num_targets, 1, protocol.depth, protocol.width, protocol.batch_norm)
    model = model.to(device, memory_format=MEMORY_FORMATS[layout])
    opt = torch.optim.Adam(model.parameters(), lr=protocol.lr, betas=protocol.betas, weight_decay=protocol.weight_decay)
    gen = torch.Generator().manual_seed(protocol.seed)
    log: list[list[float]] = []
    start = time.perf_counter()
    model.train()
    running = 0.0
    with progress() as bar:
        task = bar.add_task(description, total=protocol.steps)
        for step, idx in enumerate(_batches(len(images), protocol.batch_size, protocol.steps, gen), start=1):
            rows = idx.numpy()
            x = torch.from_numpy(np.asarray(images[rows], dtype=np.float32)).unsqueeze(1)
            y = torch.from_numpy(np.asarray(targets[rows], dtype=np.int64))
            if protocol.augment == "flip":
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                y = torch.where(flip[:, None, None], y.flip(-1), y)
            x, y = x.to(device).contiguous(memory_format=MEMORY_FORMATS[layout]), y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if protocol.dice_weight:
                loss = loss + protocol.dice_weight * soft_dice_loss(logits, y)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(f"U-Net loss became {value} at step {step} ({description})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += value
            if step % protocol.log_every == 0 or step == protocol.steps:
                count = protocol.log_every if step % protocol.log_every == 0 else step % protocol.log_every
                log.append([step, running / count])
                running = 0.0
            bar.advance(task)
    model.eval()
    return model, {"loss": log, "seconds": time.perf_counter() - start, "train_images": int(len(images)),
                   "memory_format": layout}


@torch.no_grad()
def predict(model: UNet, images: np.ndarray, batch_size: int = 16, device: str = "cpu",
            memory_format: str = "contiguous") -> torch.Tensor:
    """Arg-max segmentation int64 ``[N, H, W]`` (softmax over background + lesion classes); the input
    in ``memory_format``, the layout the model was trained in (:func:`train_unet`'s log)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.asarray(images[i : i + batch_size], dtype=np.float32)).unsqueeze(1).to(device)
        x = x.contiguous(memory_format=MEMORY_FORMATS[memory_format])
        out.append(model(x).argmax(dim=1).cpu())
    return torch.cat(out) if out else torch.empty((0,) + tuple(images.shape[1:]), dtype=torch.int64)
