"""pix2pix plugin: reference parameter counts, architecture facts, sizes, and that it learns."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.data.prepared import PreparedDataset
from synthbench.engine import load_synthesizer, train
from synthbench.plugins import get_registry
from synthbench.synthesis import mean_l1_to_real
from synthbench.synthesizer import SynthesizerConfigError


def test_info_prints_reference_counts():
    result = CliRunner().invoke(build_app(), ["info", "pix2pix", "--classes", "4", "--size", "256"])
    assert result.exit_code == 0, result.output
    assert "54,410,881" in result.output and "2,767,681" in result.output
    table = {line.split()[1]: line.split()[3] for line in result.output.splitlines() if line.strip()[:3] in ("│ G", "│ D")}
    assert table == {"G": "54,410,881", "D": "2,767,681"}


def test_architecture_facts():
    cls = get_registry().synthesizer("pix2pix")
    synth = cls(num_classes=4, image_size=64, options={"ngf": 8, "ndf": 8})
    assert synth.num_downs == 6  # log2(64)
    G, D = synth.nets["G"], synth.nets["D"]
    dropouts = [m for m in G.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.5  # num_downs - 5 inner 8*ngf blocks
    convs = [m for m in G.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and all(c.bias is None for c in convs) and convs[0].in_channels == 4
    assert isinstance(list(G.modules())[-1], torch.nn.Tanh)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 64, 64)), 4).permute(0, 3, 1, 2).float()
    out = synth.generate(x)
    assert out.shape == (2, 1, 64, 64) and out.abs().max() <= 1
    assert D(torch.cat([x, out], 1)).shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6 patch logits
    assert abs(float(convs[1].weight.detach().std()) - 0.02) < 0.005  # N(0, 0.02) init
    # 512 px: 8 levels by default (2x2 bottleneck), 9 as an option; sizes must divide 2**levels
    big = cls(num_classes=4, image_size=512, options={"ngf": 4, "ndf": 4})
    nine = cls(num_classes=4, image_size=512, options={"ngf": 4, "ndf": 4, "num_downs": 9})
    assert big.num_downs == 8 and nine.num_downs == 9
    assert nine.parameter_counts()["G"] > big.parameter_counts()["G"]
    assert cls(num_classes=3, image_size=96, options={"ngf": 4, "ndf": 4}).num_downs == 5
    with pytest.raises(SynthesizerConfigError, match="divisible"):
        cls(num_classes=4, image_size=64, options={"num_downs": 7})
    with pytest.raises(SynthesizerConfigError, match="too small"):
        cls(num_classes=4, image_size=16)


def test_training_step_freezes_d_and_yields_d_then_g(phantom_dir):
    ds = PreparedDataset(phantom_dir)
    synth = get_registry().synthesizer("pix2pix")(4, 64, {"ngf": 8, "ndf": 8})
    batch = ds.collate([ds.torch_dataset("train")[i] for i in range(2)])
    steps = synth.training_step("main", batch)
    d = next(steps)
    assert d.optimizer == "D" and set(d.logs) == {"D_real", "D_fake"}
    g = next(steps)
    assert g.optimizer == "G" and not any(p.requires_grad for p in synth.nets["D"].parameters())
    assert float(g.logs["G_L1"]) == pytest.approx(100 * float((synth.nets["G"](batch.onehot) - batch.image).abs().mean()), rel=0.5)
    with pytest.raises(StopIteration):
        next(steps)
    assert all(p.requires_grad for p in synth.nets["D"].parameters())


def test_pix2pix_learns(phantom_dir, tmp_path):
    """~100 steps on the 64 px phantom bring generate() clearly closer to the real slices."""
    ds = PreparedDataset(phantom_dir)
    options = {"ngf": 16, "ndf": 16}
    torch.manual_seed(0)
    untrained = get_registry().synthesizer("pix2pix")(ds.num_classes, ds.size, options)
    before = mean_l1_to_real(untrained, ds, "test")
    train("pix2pix", phantom_dir, tmp_path / "run", "quick", options=options,
          overrides={"max_steps": 100, "checkpoint_every": 1000, "sample_every_epoch": False}, show_progress=False)
    after = mean_l1_to_real(load_synthesizer(tmp_path / "run"), ds, "test")
    print(f"mean L1 to real: untrained {before:.4f}, trained {after:.4f}")
    assert after < 0.7 * before, (before, after)
