"""Test time as fair as training (issue 13): SEAN synthesizes from its mean style codes unless the
real-image mode is asked for (recorded and marked), pix2pix runs as the official test.py
(dropout on, per-image batch statistics) unless eval mode is asked for, and synthesis repeats."""

from __future__ import annotations

import json

import pytest
import torch
from synthbench_pix2pix import Pix2Pix
from synthbench_sean import SEANSynthesizer
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.data.prepared import PreparedDataset
from synthbench.errors import SynthbenchError
from synthbench.synthesis import synthesize

SEAN_TINY = {"ngf": 2, "ndf": 4, "style_dim": 8, "no_vgg_loss": True}


@pytest.fixture
def sean(phantom_dir):
    ds = PreparedDataset(phantom_dir)
    torch.manual_seed(0)
    synth = SEANSynthesizer(ds.num_classes, ds.size, options=SEAN_TINY)
    batch = ds.collate([ds.torch_dataset("train")[i] for i in range(4)])
    g = synth.nets["G"]
    with torch.no_grad():  # mean style codes as training leaves them (one batch of codes)
        _, style, present = g(batch.onehot, style_image=batch.image, return_style=True)
        synth.update_mean_styles(style, present, decay=0.0)
    return synth


def test_sean_synthesis_uses_mean_codes_by_default(sean, phantom_dir, tmp_path, monkeypatch):
    seen = []
    original = SEANSynthesizer.generate

    def spy(self, onehot, style=None):
        seen.append(style)
        return original(self, onehot, style)

    monkeypatch.setattr(SEANSynthesizer, "generate", spy)
    record = synthesize(None, phantom_dir, tmp_path / "mean", split="test", synth=sean, show_progress=False)
    assert seen and all(s is None for s in seen)  # only the label map
    assert record["style"] == "none" and record["style_mode"] == "mean" and record["uses_real_image"] is False
    assert "mean" in record["test_time"]
    seen.clear()
    real = synthesize(None, phantom_dir, tmp_path / "real", split="test", synth=sean, style="real", show_progress=False)
    assert seen and all(s is not None for s in seen)
    assert real["style_mode"] == "real" and real["uses_real_image"] is True and "sees the answer" in real["test_time"]
    on_disk = json.loads((tmp_path / "real" / "synthesis.json").read_text())
    assert on_disk["uses_real_image"] is True and on_disk["seed"] == 0


def test_style_real_is_refused_for_methods_without_style(phantom_dir, tmp_path):
    synth = Pix2Pix(4, 64, options={"ngf": 4, "ndf": 4})
    with pytest.raises(SynthbenchError, match="--style real: pix2pix takes no style image"):
        synthesize(None, phantom_dir, tmp_path / "x", synth=synth, style="real", show_progress=False)
    with pytest.raises(SynthbenchError, match="--style must be one of none, real"):
        synthesize(None, phantom_dir, tmp_path / "x", synth=synth, style="own", show_progress=False)
    with pytest.raises(SynthbenchError, match="no test-time mode 'norm'"):
        synthesize(None, phantom_dir, tmp_path / "x", synth=synth, test_mode={"norm": "eval"}, show_progress=False)
    assert not (tmp_path / "x").exists()


def _onehot(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.one_hot(torch.randint(0, 4, (n, 64, 64), generator=g), 4).permute(0, 3, 1, 2).float()


def test_pix2pix_official_test_mode_batch_statistics_per_image():
    torch.manual_seed(0)
    synth = Pix2Pix(4, 64, options={"ngf": 4, "ndf": 4, "dropout": False})
    g = synth.nets["G"]
    with torch.no_grad():  # running statistics that differ from any single image's
        g.train()
        g(_onehot(8, seed=5) * 3)
    running = {k: v.clone() for k, v in g.state_dict().items() if "running" in k or "num_batches" in k}
    x = _onehot()
    assert synth.test_mode == {"mode": "official"}
    official = synth.generate(x)
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in running.items())  # running statistics untouched
    assert torch.allclose(official[1:2], synth.generate(x[1:2]), atol=1e-6)  # per image: batch-independent
    synth.set_test_mode(mode="eval")
    evaluated = synth.generate(x)
    assert (official - evaluated).abs().max() > 1e-3
    with torch.no_grad():
        g.eval()
        assert torch.equal(evaluated, g(x))


def test_pix2pix_official_mode_keeps_dropout_on_and_synthesis_repeats(phantom_dir, tmp_path):
    torch.manual_seed(0)
    synth = Pix2Pix(4, 64, options={"ngf": 4, "ndf": 4})
    x = _onehot()
    torch.manual_seed(1)
    a = synth.generate(x)
    torch.manual_seed(2)
    b = synth.generate(x)
    assert (a - b).abs().max() > 1e-4  # dropout is on
    first = synthesize(None, phantom_dir, tmp_path / "a", split="test", synth=synth, show_progress=False)
    synthesize(None, phantom_dir, tmp_path / "b", split="test", synth=synth, show_progress=False)
    assert first["test_mode"] == {"mode": "official"} and "dropout on" in first["test_time"]
    for name in sorted(p.name for p in (tmp_path / "a" / "fake").iterdir()):
        assert (tmp_path / "a" / "fake" / name).read_bytes() == (tmp_path / "b" / "fake" / name).read_bytes()
    evaluated = synthesize(None, phantom_dir, tmp_path / "e", split="test", synth=synth, test_mode={"mode": "eval"},
                           show_progress=False)
    assert evaluated["test_mode"] == {"mode": "eval"}


def test_synthesize_cli_options(phantom_dir, tmp_path):
    from synthbench.engine import train

    run = train("pix2pix", phantom_dir, tmp_path / "run", protocol="smoke", options={"ngf": 4, "ndf": 4},
                overrides={"max_steps": 1, "sample_every_epoch": False}, show_progress=False).run_dir
    runner, app = CliRunner(), build_app()
    ok = runner.invoke(app, ["synthesize", str(run), "--data", str(phantom_dir), "--out", str(tmp_path / "o"),
                             "--test-mode", "mode=eval", "--seed", "3"])
    assert ok.exit_code == 0, ok.output
    record = json.loads((tmp_path / "o" / "synthesis.json").read_text())
    assert record["test_mode"] == {"mode": "eval"} and record["seed"] == 3
    bad = runner.invoke(app, ["synthesize", str(run), "--data", str(phantom_dir), "--out", str(tmp_path / "p"),
                              "--test-mode", "mode=train"])
    assert bad.exit_code == 2 and "test-time mode mode='train' not one of official, eval" in bad.output
    bad = runner.invoke(app, ["synthesize", str(run), "--data", str(phantom_dir), "--out", str(tmp_path / "p"),
                              "--style", "real"])
    assert bad.exit_code == 2 and "takes no style image" in bad.output
