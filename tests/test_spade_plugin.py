"""SPADE plugin: reference parameter counts, shapes, normalization, TTUR, VAE, training steps."""

from __future__ import annotations

import json

import pytest
import torch
from synthbench_spade import SPADESynthesizer
from synthbench_spade.networks import SPADE, SPADEGenerator
from synthbench_spade.synthesizer import build_spade_discriminator
from torch import nn
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.synthesizer import Batch, SynthesizerConfigError


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def toy_batch(n: int = 2, size: int = 64, classes: int = 4, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(n, size, size, dtype=torch.long)
    label[:, size // 4: 3 * size // 4, size // 8: size // 2] = 1
    label[:, size // 4: 3 * size // 4, size // 2: 7 * size // 8] = 2
    label[:, size // 3: size // 2, size // 4: size // 3] = 3
    image = torch.where(label == 0, -0.8, 0.3) + 0.05 * torch.randn(n, size, size, generator=g)
    image = torch.where(label == 3, 0.9, image).clamp(-1, 1)
    return Batch(image.unsqueeze(1).float(), label, classes)


def adam(synth):
    return {name: torch.optim.Adam(spec.params, lr=2e-4 * spec.lr_scale, betas=spec.betas)
            for name, spec in synth.optimizers("main").items()}


def run_step(synth, batch, opts):
    logs = {}
    snapshots = []
    for update in synth.training_step("main", batch):
        assert torch.isfinite(update.loss)
        opts[update.optimizer].zero_grad(set_to_none=True)
        update.loss.backward()
        opts[update.optimizer].step()
        logs.update({k: float(v) for k, v in update.logs.items()})
        snapshots.append((update.optimizer, {n: p.detach().clone() for n, p in synth.nets["G"].named_parameters()}))
    return logs, snapshots


def test_info_cli_prints_reference_counts():
    result = CliRunner().invoke(build_app(), ["info", "spade", "--classes", "4", "--size", "256", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["parameters"] == {"G": 92_088_385, "D": 5_531_778}
    assert "92,088,385" in info["notes"]["reference counts"]


def test_generator_counts_and_cross_checks():
    with torch.device("meta"):
        assert count(SPADEGenerator(4, 512)) == 92_088_385  # same at 256 and 512
        assert count(SPADEGenerator(184, 256, out_channels=3)) == 97_480_899  # COCO
        assert count(SPADEGenerator(151, 256, out_channels=3)) == 96_492_483  # ADE20K
        d = build_spade_discriminator(5)
    assert count(d) == 5_531_778


def test_discriminator_output_shapes_at_256():
    d = build_spade_discriminator(5)
    out = d(torch.zeros(1, 5, 256, 256))
    assert len(out) == 2 and all(len(scale) == 5 for scale in out)
    assert out[0][-1].shape == (1, 1, 35, 35) and out[1][-1].shape == (1, 1, 19, 19)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert sum(hasattr(m, "weight_orig") for m in convs) == 2 * 3  # spectral norm on the middle convs
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in d.modules()) == 2 * 3


def test_generator_shapes_at_64_full_width():
    torch.manual_seed(0)
    synth = SPADESynthesizer(4, 64)
    batch = toy_batch(1)
    out = synth.generate(batch.onehot)
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all() and out.abs().max() <= 1
    assert synth.nets["G"].sw == 2


@pytest.mark.parametrize("mode,size,sw", [("more", 64, 1), ("most", 128, 1)])
def test_more_and_most_upsampling(mode, size, sw):
    g = SPADEGenerator(3, size, ngf=8, num_upsampling_layers=mode)
    assert g.sw == sw and hasattr(g, "up_4") == (mode == "most")
    seg = nn.functional.one_hot(torch.randint(0, 3, (2, size, size)), 3).permute(0, 3, 1, 2).float()
    assert g(seg).shape == (2, 1, size, size)


def test_impossible_size_is_a_config_error():
    with pytest.raises(SynthesizerConfigError, match="multiple of 32"):
        SPADESynthesizer(4, 48)
    result = CliRunner().invoke(build_app(), ["info", "spade", "--size", "48"])
    assert result.exit_code == 2 and "multiple of 32" in result.output


def test_spade_norm_is_plain_batchnorm_so_ddp_conversion_applies():
    g = SPADEGenerator(4, 64, ngf=8)
    norms = [m for m in g.modules() if isinstance(m, SPADE)]
    assert len(norms) == 3 * 2 + 4 * 3  # head + 2 middle: 2 each; up_0..up_3: 3 each (learned shortcut)
    assert all(type(m.param_free_norm) is nn.BatchNorm2d and not m.param_free_norm.affine for m in norms)
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in g.modules())
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(g)
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) == len(norms)
    assert not any(type(m) is nn.BatchNorm2d for m in synced.modules())


def test_spade_norm_equation():
    """out = BN(x) * (1 + gamma) + beta with gamma/beta from the nearest-resized label map."""
    torch.manual_seed(0)
    norm = SPADE(6, 3)
    x = torch.randn(2, 6, 8, 8)
    seg = nn.functional.one_hot(torch.randint(0, 3, (2, 16, 16)), 3).permute(0, 3, 1, 2).float()
    small = nn.functional.interpolate(seg, size=(8, 8), mode="nearest")
    actv = norm.modulation.mlp_shared(small)
    gamma, beta = norm.modulation.mlp_gamma(actv), norm.modulation.mlp_beta(actv)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * (1 + gamma) + beta
    torch.testing.assert_close(norm(x, seg), expected, atol=1e-5, rtol=1e-4)


def test_ttur_and_no_ttur_optimizers():
    synth = SPADESynthesizer(4, 64, {"ngf": 8})
    specs = synth.optimizers("main")
    assert (specs["G"].lr_scale, specs["G"].betas) == (0.5, (0.0, 0.9))
    assert (specs["D"].lr_scale, specs["D"].betas) == (2.0, (0.0, 0.9))
    assert len(specs["G"].params) == len(list(synth.nets["G"].parameters()))
    plain = SPADESynthesizer(4, 64, {"ngf": 8}, variant="no_ttur").optimizers("main")
    assert (plain["G"].lr_scale, plain["G"].betas) == (1.0, (0.5, 0.999))
    assert (plain["D"].lr_scale, plain["D"].betas) == (1.0, (0.5, 0.999))


def test_two_step_manual_training_loop():
    torch.manual_seed(0)
    synth = SPADESynthesizer(4, 64, {"ngf": 16})
    batch = toy_batch(2)
    opts = adam(synth)
    before = {n: p.detach().clone() for n, p in synth.nets["G"].named_parameters()}
    d_before = [p.detach().clone() for p in synth.nets["D"].parameters()]
    for _ in range(2):
        logs, snaps = run_step(synth, batch, opts)
        assert [name for name, _ in snaps] == ["D", "G"]
        assert set(logs) == {"D_fake", "D_real", "G_GAN", "G_feat", "G_VGG"}
        assert all(map(lambda v: v == v, logs.values()))  # no NaN
    # the D step leaves G alone; the G step moves it; D moved too
    d_snap = snaps[0][1]
    g_now = dict(synth.nets["G"].named_parameters())
    assert any(not torch.equal(d_snap[n], g_now[n]) for n in d_snap)
    assert any(not torch.equal(before[n], g_now[n].detach()) for n in before)
    assert any(not torch.equal(a, b) for a, b in zip(d_before, synth.nets["D"].parameters(), strict=False))
    assert synth.pretrained_weights()[0]["sha256"]


def test_vae_option_builds_and_trains_a_step():
    torch.manual_seed(0)
    synth = SPADESynthesizer(4, 64, {"ngf": 16}, variant="vae")
    assert synth.uses_style and set(synth.nets) == {"G", "D", "E"}
    assert isinstance(synth.nets["G"].fc, nn.Linear) and synth.nets["G"].fc.in_features == 256
    e_params = set(map(id, synth.nets["E"].parameters()))
    assert e_params <= set(map(id, synth.optimizers("main")["G"].params))  # E trains with G
    e_before = [p.detach().clone() for p in synth.nets["E"].parameters()]
    logs, _ = run_step(synth, toy_batch(2), adam(synth))
    assert "KLD" in logs and logs["KLD"] >= 0
    assert any(not torch.equal(a, b) for a, b in zip(e_before, synth.nets["E"].parameters(), strict=False))
    batch = toy_batch(2)
    torch.manual_seed(1)
    a = synth.generate(batch.onehot)
    torch.manual_seed(2)
    b = synth.generate(batch.onehot)
    assert a.shape == (2, 1, 64, 64) and not torch.equal(a, b)  # multi-modal: random z
    guided = synth.generate(batch.onehot, style=batch.image)
    assert guided.shape == (2, 1, 64, 64) and torch.isfinite(guided).all()
