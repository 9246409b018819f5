"""Issue 21: the real images' Inception features kept on disk (``feature_cache``), so that
evaluations in different processes compute them once per comparison, never trusting a bad entry."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from test_perf_inception_cache import _extractor

from synthbench.metrics import evaluate_folders, inception

N = 4


@pytest.fixture
def counted(monkeypatch):
    """A fresh in-memory cache (as in a new process) and the number of images the network saw."""
    monkeypatch.setattr(inception, "_cache", type(inception._cache)())
    seen = []
    original = inception.InceptionFeatures._features

    def counting(self, images):
        seen.append(len(images))
        return original(self, images)

    monkeypatch.setattr(inception.InceptionFeatures, "_features", counting)
    return seen


def _folders(root):
    rng = np.random.default_rng(5)
    for d in ("real", "fake"):
        (root / d).mkdir()
        for i in range(N):
            Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(root / d / f"{i}.png")
    return root / "real", root / "fake"


def _evaluate(real, fake, cache_dir):
    inception._cache.clear()  # each evaluation as in its own worker process
    return evaluate_folders(real, fake, metrics=["fid", "kid"], folds=2, show_progress=False,
                            feature_cache=cache_dir)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_second_evaluation_reads_real_features_from_disk(tmp_path, counted):
    real, fake = _folders(tmp_path)
    cache = tmp_path / "cache"
    first = _evaluate(real, fake, cache)
    assert sum(counted) == 2 * N  # reals and fakes
    assert len(list(cache.rglob("*.f32"))) == N
    counted.clear()
    second = _evaluate(real, fake, cache)
    assert sum(counted) == N  # only the fakes: old code ran the network on the reals in every process
    assert first["all_images"].tolist() == second["all_images"].tolist()  # bit-identical
    assert first["value"].tolist() == second["value"].tolist()
    counted.clear()
    plain = _evaluate(real, fake, None)  # no feature_cache: memory only, as before
    assert sum(counted) == 2 * N and plain["all_images"].tolist() == first["all_images"].tolist()


def test_bad_entries_are_recomputed_never_trusted(tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "_cache", type(inception._cache)())
    images = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    ext = _extractor()
    cache = tmp_path / "cache"
    expected = ext(images, cache=True, cache_dir=cache)
    entries = sorted(cache.rglob("*.f32"))
    assert ext.model.images == 5 and len(entries) == 5
    entries[0].write_bytes(entries[0].read_bytes()[:-100])  # truncated
    data = bytearray(entries[1].read_bytes())
    data[10] ^= 0x01  # one bit of a feature flipped
    entries[1].write_bytes(bytes(data))
    entries[2].write_bytes(entries[3].read_bytes())  # another image's (whole, valid) entry
    entries[4].write_bytes(np.zeros(1000, np.float32).tobytes())  # wrong shape
    inception._cache.clear()
    again = ext(images, cache=True, cache_dir=cache)
    assert ext.model.images == 5 + 4  # the four bad entries recomputed, the good one read
    assert torch.equal(again, expected)
    inception._cache.clear()
    ext(images, cache=True, cache_dir=cache)  # the recomputed entries were written back whole
    assert ext.model.images == 9
    assert not [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".f32"]  # no temporary files left


def test_disk_keys_depend_on_weights_and_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "_cache", type(inception._cache)())
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    a, b = _extractor("a" * 64), _extractor("b" * 64)
    a(images, cache=True, cache_dir=tmp_path)
    b(images, cache=True, cache_dir=tmp_path)
    assert b.model.images == 2  # other weights: not a hit
    c = _extractor("a" * 64)
    c.memory_format = "channels_last"
    c(images, cache=True, cache_dir=tmp_path)
    assert c.model.images == 2  # other layout: not a hit
    assert len(list(tmp_path.rglob("*.f32"))) == 6


def test_concurrent_writers_of_one_key_leave_a_whole_entry(tmp_path):
    key = b"k" * 32
    values = [torch.full((inception.FEATURE_DIM,), float(i)) for i in range(4)]
    bad: list[int] = []

    def writer(i):
        for _ in range(25):
            inception.write_cached(tmp_path, key, values[i])
            got = inception.read_cached(tmp_path, key)
            if got is None or not any(torch.equal(got, v) for v in values):
                bad.append(i)  # a reader saw a partial or mixed entry

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{key.hex()}.f32"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_comparison_evaluations_share_the_cache_in_the_comparison_folder(tmp_path, counted):
    from synthbench.compare import CompareConfig, evaluate_job, parse_methods

    test_dir = tmp_path / "synthesis"
    test_dir.mkdir()
    _folders(test_dir)
    (test_dir / "fake").rename(test_dir / "complete")
    cfg = CompareConfig(methods=parse_methods("pix2pix"), out_dir=tmp_path / "cmp", metrics=("fid",), device="cpu",
                        show_progress=False)
    first = evaluate_job(cfg, str(test_dir), None, 2)
    assert len(list((tmp_path / "cmp" / "jobs" / "inception-cache").rglob("*.f32"))) == N
    inception._cache.clear()  # another method's evaluation job, in another worker process
    counted.clear()
    second = evaluate_job(cfg, str(test_dir), None, 2)
    assert sum(counted) == N  # only that method's images
    assert first["rows"] == second["rows"]  # bit-identical values
