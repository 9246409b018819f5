"""Issue 21: the one-hot label map's memory layout is a decision (contiguous NCHW unless the
protocol's ``channels_last`` converts it), and Adam is fused wherever the installed torch
supports it (CPU included), recorded in the run, with a fallback that is recorded and said."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from synthbench import Batch, one_hot
from synthbench.engine import loop, train
from synthbench.engine.loop import fused_adam_unsupported, plan_stages, resolve_fused_adam
from synthbench.errors import SynthbenchError
from synthbench.plugins import get_registry
from synthbench.synthesizer import OptimizerSpec

TINY = {"ngf": 4, "ndf": 4}  # pix2pix at tiny widths


def _label(b=2, s=8, c=4):
    return torch.randint(0, c, (b, s, s), generator=torch.Generator().manual_seed(0))


def test_one_hot_is_contiguous_nchw():
    """Old code: ``F.one_hot(...).permute(0, 3, 1, 2)`` kept channels-last strides (C, 1, ...)."""
    x = one_hot(_label(), 4)
    assert x.shape == (2, 4, 8, 8) and x.dtype == torch.float32
    assert x.is_contiguous()
    assert x.stride() == (4 * 8 * 8, 8 * 8, 8, 1)
    assert torch.equal(x.argmax(1), _label())


def test_batch_onehot_follows_the_batch_memory_format():
    label = _label()
    batch = Batch(torch.zeros(2, 1, 8, 8), label, 4)
    assert batch.onehot.is_contiguous()
    moved = batch.to("cpu", torch.channels_last)
    assert moved.onehot.is_contiguous(memory_format=torch.channels_last)
    assert moved.image.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(moved.onehot, batch.onehot)
    assert batch.to("cpu").onehot.is_contiguous()


@pytest.mark.parametrize("channels_last", [False, True])
def test_engine_gives_the_protocol_layout_to_the_synthesizer(monkeypatch, phantom_dir, tmp_path, channels_last):
    """What ``training_step`` reads: channels-last one-hot maps only when the protocol asks."""
    seen = []
    original = loop._iteration

    def spy(synth, stage, batch, *args):
        seen.append((batch.onehot.is_contiguous(), batch.onehot.is_contiguous(memory_format=torch.channels_last)))
        return original(synth, stage, batch, *args)

    monkeypatch.setattr(loop, "_iteration", spy)
    train("pix2pix", phantom_dir, tmp_path / "run", protocol="smoke", options=TINY, show_progress=False,
          overrides={"max_steps": 1, "sample_every_epoch": False, "channels_last": channels_last})
    assert seen == [(False, True)] if channels_last else seen == [(True, False)]


def test_adam_is_fused_on_cpu_and_recorded(monkeypatch, phantom_dir, tmp_path):
    if fused_adam_unsupported([torch.zeros(1)]) is not None:
        pytest.skip(f"this torch has no fused Adam on CPU ({torch.__version__})")
    fused_flags = []
    original = loop._iteration

    def spy(synth, stage, batch, optimizers, *args):
        fused_flags.extend(g["fused"] for o in optimizers.values() for g in o.param_groups)
        return original(synth, stage, batch, optimizers, *args)

    monkeypatch.setattr(loop, "_iteration", spy)
    out = tmp_path / "run"
    train("pix2pix", phantom_dir, out, protocol="smoke", options=TINY, show_progress=False,
          overrides={"max_steps": 1, "sample_every_epoch": False})
    assert fused_flags and all(f is True for f in fused_flags)
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert resolved["fused_adam"] is True and resolved["fused_adam_off_reason"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["optimizer"] == {"fused_adam": True, "fused_adam_off_reason": None}


def test_fused_adam_off_in_the_protocol_is_recorded(phantom_dir, tmp_path):
    out = tmp_path / "run"
    train("pix2pix", phantom_dir, out, protocol="smoke", options=TINY, show_progress=False,
          overrides={"max_steps": 1, "sample_every_epoch": False, "fused_adam": False})
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert resolved["fused_adam"] is False and resolved["fused_adam_off_reason"] == "off in the protocol"


def test_fallback_where_torch_has_no_fused_kernels_is_recorded_and_said(monkeypatch, phantom_dir, tmp_path, capsys):
    """A torch without CPU fused kernels (before 2.4): auto falls back, says so, records why."""
    import torch.utils._foreach_utils as foreach_utils

    monkeypatch.setattr(foreach_utils, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    out = tmp_path / "run"
    train("pix2pix", phantom_dir, out, protocol="smoke", options=TINY, show_progress=False,
          overrides={"max_steps": 1, "sample_every_epoch": False})
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert resolved["fused_adam"] is False
    assert resolved["fused_adam_off_reason"] == f"torch {torch.__version__} has no fused Adam on cpu"
    assert "Adam not fused" in capsys.readouterr().err
    with pytest.raises(SynthbenchError, match="fused_adam = true, but torch .* has no fused Adam on cpu"):
        train("pix2pix", phantom_dir, tmp_path / "insist", protocol="smoke", options=TINY, show_progress=False,
              overrides={"max_steps": 1, "sample_every_epoch": False, "fused_adam": True})


class _ComplexParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.z = nn.Parameter(torch.zeros(3, dtype=torch.complex64))


def test_a_parameter_fused_adam_cannot_update_means_fallback():
    """torch itself checks only at the first step (a crash mid-run); the engine decides up front."""
    complex_param = _ComplexParam().z
    assert fused_adam_unsupported([torch.zeros(2), complex_param]) == \
        "fused Adam needs floating-point parameters, got torch.complex64"

    class Synth:
        def optimizers(self, stage):
            return {"G": OptimizerSpec(params=(complex_param,))}

    plans = plan_stages(get_registry().synthesizer("pix2pix").stages, 1, 1, None)
    assert resolve_fused_adam("auto", Synth(), plans) == (False, "fused Adam needs floating-point parameters, "
                                                                  "got torch.complex64")
    with pytest.raises(SynthbenchError, match="fused_adam = true"):
        resolve_fused_adam(True, Synth(), plans)
    assert resolve_fused_adam(False, Synth(), plans) == (False, "off in the protocol")
