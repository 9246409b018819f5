"""The U-Net's memory layout is a recorded decision (issue 21): channels_last on the CPU by default
(the quick U-Net trains ~15% faster), contiguous when asked, shown in the report's settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthbench.downstream import UNetProtocol, predict, train_unet
from synthbench.errors import SynthbenchError


def _data(n=8, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (n, size, size)).astype(np.float32)
    targets = (images > 0.6).astype(np.int64)
    return images, targets


@pytest.mark.parametrize(("asked", "layout"), [("auto", "channels_last"), ("contiguous", "contiguous"),
                                               ("channels_last", "channels_last")])
def test_training_uses_and_records_the_layout(asked, layout):
    images, targets = _data()
    protocol = UNetProtocol.quick(steps=2, log_every=1, memory_format=asked)
    model, log = train_unet(images, targets, 2, protocol, device="cpu")
    assert log["memory_format"] == layout
    weight = model.down[0][3].weight  # a 3x3 convolution with 8 input channels
    assert weight.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert weight.is_contiguous() == (layout == "contiguous")
    pred = predict(model, images, 4, "cpu", layout)
    assert pred.shape == targets.shape and pred.dtype == torch.int64


def test_both_layouts_compute_the_same_network():
    """The layout changes only how tensors are stored: one model's logits agree across layouts to
    float rounding (a training differs only by that rounding, amplified over its steps)."""
    images, targets = _data()
    model, _ = train_unet(images, targets, 2, UNetProtocol.quick(steps=2, memory_format="contiguous"), device="cpu")
    x = torch.from_numpy(images[:4]).unsqueeze(1)
    with torch.no_grad():
        ref = model(x)
        other = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(other, ref, rtol=1e-4, atol=1e-5)


def test_an_unknown_layout_is_refused():
    with pytest.raises(SynthbenchError, match="memory_format must be auto or one of"):
        UNetProtocol.quick(memory_format="nhwc")


def test_the_report_settings_show_the_resolved_layout():
    from synthbench.report.settings import UNET_FIELDS, _fields

    record = UNetProtocol.quick().to_dict(device="cpu")
    assert record["memory_format"] == "channels_last (auto on cpu)"
    assert "memory_format channels_last (auto on cpu)" in _fields(record, UNET_FIELDS)
    assert UNetProtocol.quick().to_dict()["memory_format"] == "auto"  # the recorded protocol itself
    assert UNetProtocol.quick().to_dict(device="cuda")["memory_format"] == "contiguous (auto on cuda)"
