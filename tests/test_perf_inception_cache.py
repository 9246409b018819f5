"""Issue 21: a comparison scores every method against the same real images; their Inception
features are computed once per process (the real side of ``evaluate_folders``), never per method."""

from __future__ import annotations

import torch

from synthbench.metrics import inception


class _CountingNet(torch.nn.Module):
    """Stands in for pytorch-fid's network: a deterministic per-image feature, counts images seen."""

    def __init__(self):
        super().__init__()
        self.images = 0

    def forward(self, x):
        self.images += len(x)
        return [x.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).expand(-1, inception.FEATURE_DIM, 1, 1)]


def _extractor(sha="a" * 64):
    ext = object.__new__(inception.InceptionFeatures)
    ext.device, ext.record, ext.model = torch.device("cpu"), {"sha256": sha}, _CountingNet()
    ext.memory_format = "contiguous"
    return ext


def test_cached_real_features_are_computed_once_and_equal(monkeypatch):
    monkeypatch.setattr(inception, "_cache", type(inception._cache)())
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ext = _extractor()
    first = ext(images, cache=True)
    assert ext.model.images == 6
    again = ext(images, cache=True)
    assert ext.model.images == 6  # old code: every evaluation ran the network on the reals again
    assert torch.equal(first, again) and torch.equal(first, ext(images))
    # a batch with one new image runs only that image
    mixed = torch.cat([images[:3], -images[:1]])
    out = ext(mixed, cache=True)
    assert ext.model.images == 6 + 6 + 1  # (the uncached call above ran 6)
    assert torch.equal(out[:3], first[:3]) and torch.equal(out[3], ext(-images[:1])[0])


def test_cache_is_keyed_by_weights_and_bounded(monkeypatch):
    monkeypatch.setattr(inception, "_cache", type(inception._cache)())
    monkeypatch.setattr(inception, "CACHE_IMAGES", 4)
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    a, b = _extractor("a" * 64), _extractor("b" * 64)
    a(images, cache=True)
    b(images, cache=True)
    assert b.model.images == 3  # other weights: other features, not a cache hit
    assert len(inception._cache) == 4
