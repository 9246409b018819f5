"""Inception pool features for FID and KID, in pytorch-fid's convention.

Convention (recorded in every result by :func:`inception_convention`):

* network: pytorch-fid's ``InceptionV3(output_blocks=[3])`` (``FIDInceptionV3``, 2015-12-05
  TensorFlow weights), resolved offline by :func:`synthbench.pretrained.resolve_fid_inception`;
  its sha256 is recorded;
* input: gray ``[B, 1, H, W]`` in ``[-1, 1]`` -> ``(x + 1) / 2`` in ``[0, 1]`` -> the gray
  channel repeated to three channels (as PIL's ``convert('RGB')`` does for a gray PNG in
  ``python -m pytorch_fid``) -> pytorch-fid's ``resize_input`` (bilinear to 299x299,
  ``align_corners=False``) and ``normalize_input`` (back to ``[-1, 1]``);
* output: 2048-d average-pool features, kept as float32 per image (streamed, nothing else);
* memory layout: on the CPU the network and its input are ``torch.channels_last`` (about 1.6x
  faster per image with one thread; features equal the contiguous ones to ~1e-6 relative,
  tests/test_metrics_inception_layout.py); elsewhere contiguous. The layout is recorded.

``InceptionFeatures(images, cache=True)`` (the real side in ``evaluate_folders``) keeps each
image's features in a process-wide cache keyed by the image's bytes and the extractor's
convention (weights sha256, layout) and device: a comparison scores every method against the
same real images, which then go through the network once per process (at most
:data:`CACHE_IMAGES` images are kept, least recently used first out). With ``cache_dir`` the
features are also kept on disk, one verified file per image (:func:`read_cached`), so that
evaluations in other processes (a comparison's parallel jobs) compute them once in all.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthbench.errors import SynthbenchError
from synthbench.io import atomic_path

FEATURE_DIM = 2048
#: Below this many images the 2048x2048 feature covariance is rank-deficient.
FID_MIN_IMAGES = 2048

_LOCK = threading.Lock()
#: Real-image features kept across evaluations (8 KiB each: at most about 256 MiB).
CACHE_IMAGES = 32_768
_cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
#: One on-disk entry: the float32 features (little-endian), then sha256(key + those bytes).
_ENTRY_BYTES = FEATURE_DIM * 4 + 32


def default_memory_format(device: torch.device) -> str:
    """channels_last on the CPU (measured faster, same features); CUDA and other devices keep the
    contiguous layout: channels_last is untested there (no GPU was available to measure it)."""
    return "channels_last" if device.type == "cpu" else "contiguous"


def resolve_weights(weights: str | None = None) -> dict[str, str]:
    """The manifest record of the FID weights (explicit path, env, hub cache, fid-helper...)."""
    from synthbench.pretrained import resolve_fid_inception

    return resolve_fid_inception(weights)


@lru_cache(maxsize=4)
def _model(path: str, sha256: str, device: str, memory_format: str) -> torch.nn.Module:
    """One network per weights, device and layout (converted here, once; never shared across layouts)."""
    from synthbench.pretrained import load_fid_inception

    model = load_fid_inception({"path": path, "sha256": sha256}, resize_input=True, normalize_input=True).eval()
    fold_batch_norms(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(torch.device(device), memory_format=MEMORY_FORMATS[memory_format]).eval()


def fold_batch_norms(model: torch.nn.Module) -> int:
    """Fold the eval-mode BatchNorm of every torchvision ``BasicConv2d`` (conv -> bn -> relu; all
    94 convolutions of pytorch-fid's network) into its convolution
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``): the same affine map computed once instead of
    twice (about 18% less CPU time per image; features equal to ~2e-6 relative, tested).
    Returns how many were folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    from torchvision.models.inception import BasicConv2d

    folded = 0
    for module in model.modules():
        if isinstance(module, BasicConv2d) and isinstance(module.bn, torch.nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = torch.nn.Identity()
            folded += 1
    return folded


def _entry_path(folder: Path, key: bytes) -> Path:
    name = key.hex()
    return folder / name[:2] / name[2:4] / f"{name}.f32"


def read_cached(folder: Path, key: bytes) -> torch.Tensor | None:
    """The features stored under ``key``, or None when absent or not exactly a valid entry
    (unreadable, truncated, altered or another key's: its checksum covers the key)."""
    try:
        data = _entry_path(folder, key).read_bytes()
    except OSError:
        return None
    payload, digest = data[: FEATURE_DIM * 4], data[FEATURE_DIM * 4 :]
    if len(data) != _ENTRY_BYTES or hashlib.sha256(key + payload).digest() != digest:
        return None
    return torch.from_numpy(np.frombuffer(payload, dtype="<f4").astype(np.float32))


def write_cached(folder: Path, key: bytes, features: torch.Tensor) -> None:
    """Store one image's features atomically (a temporary file in the same folder, then
    ``os.replace``): concurrent writers of one key each replace it with a whole, equal entry."""
    payload = features.detach().to("cpu", torch.float32).numpy().astype("<f4").tobytes()
    if len(payload) != FEATURE_DIM * 4:
        raise ValueError(f"expected {FEATURE_DIM} features, got {len(payload) // 4}")
    with atomic_path(_entry_path(folder, key)) as tmp:
        tmp.write_bytes(payload + hashlib.sha256(key + payload).digest())


class InceptionFeatures:
    """Callable ``images [B, 1, H, W] in [-1, 1] -> float32 [B, 2048]`` (pytorch-fid features).

    ``memory_format``: ``"channels_last"`` or ``"contiguous"``; by default channels_last on the
    CPU, contiguous elsewhere (:func:`default_memory_format`). Recorded in :meth:`convention`.
    """

    def __init__(self, device: torch.device | str = "cpu", weights: str | None = None,
                 memory_format: str | None = None):
        self.device = torch.device(device)
        self.memory_format = memory_format or default_memory_format(self.device)
        if self.memory_format not in MEMORY_FORMATS:
            raise SynthbenchError(f"Inception memory format must be one of {', '.join(MEMORY_FORMATS)}, "
                                  f"got {self.memory_format!r}")
        self.record = resolve_weights(weights)
        with _LOCK:
            self.model = _model(self.record["path"], self.record["sha256"], str(self.device), self.memory_format)

    def cache_id(self) -> bytes:
        """What features depend on besides the image: the convention (weights sha256, layout,
        preprocessing) and the device."""
        return json.dumps([self.convention(), str(self.device)], sort_keys=True).encode()

    def __call__(self, images: torch.Tensor, cache: bool = False,
                 cache_dir: str | Path | None = None) -> torch.Tensor:
        """Features of ``images``; ``cache``: keep them in memory (module docstring);
        ``cache_dir`` (with ``cache``): also look them up in, and write them to, that folder."""
        if not cache:
            return self._features(images)
        model_id = self.cache_id()
        keys = [hashlib.sha256(model_id + str(tuple(img.shape)).encode() + img.numpy().tobytes()).digest()
                for img in images.detach().to("cpu", torch.float32).contiguous()]
        with _LOCK:
            missing = [i for i, k in enumerate(keys) if k not in _cache]
            for k in keys:  # this batch's hits become the newest, so inserting below never evicts them
                if k in _cache:
                    _cache.move_to_end(k)
        found: dict[int, torch.Tensor] = {}
        if cache_dir is not None and missing:
            folder = Path(cache_dir)
            found = {i: f for i in missing if (f := read_cached(folder, keys[i])) is not None}
            missing = [i for i in missing if i not in found]
        if missing:
            feats = self._features(images[missing])
            for i, f in zip(missing, feats, strict=True):
                found[i] = f.clone()
                if cache_dir is not None:
                    write_cached(Path(cache_dir), keys[i], found[i])
        with _LOCK:
            for i, f in found.items():
                _cache[keys[i]] = f
                _cache.move_to_end(keys[i])
                while len(_cache) > CACHE_IMAGES:
                    _cache.popitem(last=False)
            return torch.stack([_cache[k] for k in keys])

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images.to(self.device, torch.float32) + 1.0) * 0.5).clamp(0.0, 1.0)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        feats = self.model(x.contiguous(memory_format=MEMORY_FORMATS[self.memory_format]))[0]
        if feats.shape[2:] != (1, 1):  # pytorch-fid pools when a block other than the last is used
            feats = torch.nn.functional.adaptive_avg_pool2d(feats, (1, 1))
        return feats.flatten(1).float().cpu()

    def convention(self) -> dict[str, Any]:
        return inception_convention(self.record, self.memory_format)


def inception_convention(record: dict[str, str], memory_format: str) -> dict[str, Any]:
    return {
        "network": "pytorch_fid.inception.InceptionV3 (FIDInceptionV3, TF 2015-12-05 weights)",
        "weights": {k: record.get(k) for k in ("name", "source", "path", "sha256")},
        "gray_to_rgb": "repeat the gray channel three times",
        "resize": "bilinear to 299x299, align_corners=False (pytorch-fid resize_input)",
        "input_range": "images in [-1, 1] mapped to [0, 1] by (x + 1) / 2, then pytorch-fid normalize_input",
        "features": f"{FEATURE_DIM}-d pool3",
        "memory_format": memory_format,
        "batch_norm": "folded into the convolutions (torch.nn.utils.fusion.fuse_conv_bn_eval)",
    }
