"""Issue 21: Inception runs channels_last on the CPU (faster); the layout is an explicit, recorded
choice and gives the contiguous layout's features (same weights) to float32 rounding."""

import numpy as np
import pytest
import torch

from synthbench.errors import SynthbenchError
from synthbench.metrics.inception import InceptionFeatures


def test_channels_last_features_equal_contiguous_and_layout_is_recorded():
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.uniform(-1, 1, (3, 1, 64, 64)).astype(np.float32))
    fast = InceptionFeatures("cpu")  # the CPU default
    plain = InceptionFeatures("cpu", memory_format="contiguous")
    assert fast.memory_format == "channels_last"
    assert fast.convention()["memory_format"] == "channels_last"
    assert plain.convention()["memory_format"] == "contiguous"
    # one network per layout (the cached model is converted once, never shared across layouts)
    assert fast.model is not plain.model and fast.model is InceptionFeatures("cpu").model
    conv = next(m for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d)).weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    a, b = fast(images), plain(images)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    # the cache keys differ by layout: a contiguous run never reads channels_last features
    assert fast.cache_id() != plain.cache_id()


def test_unknown_memory_format_is_refused():
    with pytest.raises(SynthbenchError, match="memory format"):
        InceptionFeatures("cpu", memory_format="nhwc")


def test_folded_batch_norms_give_pytorch_fids_own_features():
    """Issue 21: every conv -> bn pair of the network is folded into one convolution (fewer
    operations per image); the features equal those of pytorch-fid's unmodified network."""
    from synthbench.metrics.inception import fold_batch_norms
    from synthbench.pretrained import load_fid_inception

    extractor = InceptionFeatures("cpu", memory_format="contiguous")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in extractor.model.modules())
    assert "folded" in extractor.convention()["batch_norm"]
    record = {"path": extractor.record["path"], "sha256": extractor.record["sha256"]}
    original = load_fid_inception(record, resize_input=True, normalize_input=True).eval()
    rng = np.random.default_rng(5)
    images = torch.from_numpy(rng.uniform(-1, 1, (2, 1, 64, 64)).astype(np.float32))
    folded = extractor(images)
    extractor.model = original  # the same preprocessing, pytorch-fid's network as published
    reference = extractor(images)
    torch.testing.assert_close(folded, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))
    assert fold_batch_norms(load_fid_inception(record, resize_input=True, normalize_input=True).eval()) == 94
