"""Inception pool features for FID and KID, in pytorch-fid's convention.

Convention (recorded in every result by :func:`inception_convention`):

* network: pytorch-fid's ``InceptionV3(output_blocks=[3])`` (``FIDInceptionV3``, 2015-12-05
  TensorFlow weights), resolved offline by :func:`synthbench.pretrained.resolve_fid_inception`;
  its sha256 is recorded;
* input: gray ``[B, 1, H, W]`` in ``[-1, 1]`` -> ``(x + 1) / 2`` in ``[0, 1]`` -> the gray
  channel repeated to three channels (as PIL's ``convert('RGB')`` does for a gray PNG in
  ``python -m pytorch_fid``) -> pytorch-fid's ``resize_input`` (bilinear to 299x299,
  ``align_corners=False``) and ``normalize_input`` (back to ``[-1, 1]``);
* output: 2048-d average-pool features, kept as float32 per image (streamed, nothing else).

``InceptionFeatures(images, cache=True)`` (the real side in ``evaluate_folders``) keeps each
image's features in a process-wide cache keyed by the image's bytes and the network's weights:
a comparison scores every method against the same real images, which then go through the
network once (at most :data:`CACHE_IMAGES` images are kept, least recently used first out).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import torch

FEATURE_DIM = 2048
#: Below this many images the 2048x2048 feature covariance is rank-deficient.
FID_MIN_IMAGES = 2048

_LOCK = threading.Lock()
#: Real-image features kept across evaluations (8 KiB each: at most about 256 MiB).
CACHE_IMAGES = 32_768
_cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()


def resolve_weights(weights: str | None = None) -> dict[str, str]:
    """The manifest record of the FID weights (explicit path, env, hub cache, fid-helper...)."""
    from synthbench.pretrained import resolve_fid_inception

    return resolve_fid_inception(weights)


@lru_cache(maxsize=4)
def _model(path: str, sha256: str, device: str) -> torch.nn.Module:
    from synthbench.pretrained import load_fid_inception

    model = load_fid_inception({"path": path, "sha256": sha256}, resize_input=True, normalize_input=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(torch.device(device)).eval()


class InceptionFeatures:
    """Callable ``images [B, 1, H, W] in [-1, 1] -> float32 [B, 2048]`` (pytorch-fid features)."""

    def __init__(self, device: torch.device | str = "cpu", weights: str | None = None):
        self.device = torch.device(device)
        self.record = resolve_weights(weights)
        with _LOCK:
            self.model = _model(self.record["path"], self.record["sha256"], str(self.device))

    def __call__(self, images: torch.Tensor, cache: bool = False) -> torch.Tensor:
        if not cache:
            return self._features(images)
        model_id = f"{self.record['sha256']}/{self.device}".encode()
        keys = [hashlib.sha256(model_id + str(tuple(img.shape)).encode() + img.numpy().tobytes()).digest()
                for img in images.detach().to("cpu", torch.float32).contiguous()]
        with _LOCK:
            missing = [i for i, k in enumerate(keys) if k not in _cache]
            for k in keys:  # this batch's hits become the newest, so inserting below never evicts them
                if k in _cache:
                    _cache.move_to_end(k)
        if missing:
            feats = self._features(images[missing])
            with _LOCK:
                for i, f in zip(missing, feats, strict=True):
                    _cache[keys[i]] = f.clone()
                    while len(_cache) > CACHE_IMAGES:
                        _cache.popitem(last=False)
        with _LOCK:
            return torch.stack([_cache[k] for k in keys])

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images.to(self.device, torch.float32) + 1.0) * 0.5).clamp(0.0, 1.0)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        feats = self.model(x)[0]
        if feats.shape[2:] != (1, 1):  # pytorch-fid pools when a block other than the last is used
            feats = torch.nn.functional.adaptive_avg_pool2d(feats, (1, 1))
        return feats.flatten(1).float().cpu()

    def convention(self) -> dict[str, Any]:
        return inception_convention(self.record)


def inception_convention(record: dict[str, str]) -> dict[str, Any]:
    return {
        "network": "pytorch_fid.inception.InceptionV3 (FIDInceptionV3, TF 2015-12-05 weights)",
        "weights": {k: record.get(k) for k in ("name", "source", "path", "sha256")},
        "gray_to_rgb": "repeat the gray channel three times",
        "resize": "bilinear to 299x299, align_corners=False (pytorch-fid resize_input)",
        "input_range": "images in [-1, 1] mapped to [0, 1] by (x + 1) / 2, then pytorch-fid normalize_input",
        "features": f"{FEATURE_DIM}-d pool3",
    }
