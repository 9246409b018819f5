"""SEAN plugin: reference counts (published 19-layer and per-dataset builds), D shapes, style
codes per class, SEAN normalization, mean style codes, generate modes, training steps."""

from __future__ import annotations

import json

import torch
from synthbench_sean import SEANSynthesizer
from synthbench_sean.networks import SEANGenerator, SEANNorm, StyleEncoder, region_average
from synthbench_sean.synthesizer import build_sean_discriminator
from torch import nn
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.synthesizer import Batch


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def toy_batch(n: int = 2, size: int = 64, classes: int = 4, drop_class3_in_first: bool = False) -> Batch:
    g = torch.Generator().manual_seed(0)
    label = torch.zeros(n, size, size, dtype=torch.long)
    label[:, size // 4: 3 * size // 4, size // 8: size // 2] = 1
    label[:, size // 4: 3 * size // 4, size // 2: 7 * size // 8] = 2
    label[:, size // 3: size // 2, size // 4: size // 3] = 3
    if drop_class3_in_first:
        label[0][label[0] == 3] = 1
    image = torch.where(label == 0, -0.8, 0.3) + 0.05 * torch.randn(n, size, size, generator=g)
    return Batch(image.clamp(-1, 1).unsqueeze(1).float(), label, classes)


def test_info_cli_reports_both_generator_counts():
    result = CliRunner().invoke(build_app(), ["info", "sean", "--classes", "4", "--size", "256", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["parameters"] == {"G": 207_358_757, "D": 1_329_282}
    notes = info["notes"]
    assert notes["G, published 19-layer build"].startswith("266,458,087")
    assert notes["G, per-dataset build"].startswith("207,358,757")
    assert "fc_mu" in notes["difference"] and "up_3" in notes["blocks"]


def test_published_counts_and_celebamask_cross_check():
    with torch.device("meta"):
        published = SEANGenerator(4, 256, out_channels=3, style_channels=3, style_layers=19)
        celeba = SEANGenerator(19, 256, out_channels=3, style_channels=3, style_layers=19)
        per_dataset = SEANGenerator(4, 256)
        d = build_sean_discriminator(5)
    assert count(published) == 266_458_087
    assert count(celeba) == 266_907_367
    # 15 SEAN norms x 15 extra 512x512 fc layers, plus RGB first style conv and output conv
    assert count(published) - count(per_dataset) == 15 * 15 * (512 * 512 + 512) + 2 * 32 * 9 + 2 * (64 * 9 + 1)
    assert count(d) == 1_329_282


def test_discriminator_output_shapes_at_256():
    d = build_sean_discriminator(5)
    out = d(torch.zeros(1, 5, 256, 256))
    assert [scale[-1].shape for scale in out] == [(1, 1, 34, 34), (1, 1, 18, 18)]
    assert not hasattr(d.scales[0].blocks[0][0], "weight_orig")  # first conv: no norm
    assert hasattr(d.scales[0].blocks[1][0], "weight_orig")


def test_style_codes_per_class_absent_class_is_zero_not_nan():
    torch.manual_seed(0)
    enc = StyleEncoder(1, 512)
    batch = toy_batch(2, drop_class3_in_first=True)
    codes, present = enc(batch.image, batch.onehot, return_present=True)
    assert codes.shape == (2, 4, 512) and torch.isfinite(codes).all()
    assert present.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert torch.count_nonzero(codes[0, 3]) == 0
    # equals the masked mean of the feature map at its own resolution
    feats = enc.model(batch.image)
    mask = nn.functional.interpolate(batch.onehot, size=feats.shape[-2:], mode="nearest")[1, 2].bool()
    torch.testing.assert_close(codes[1, 2], feats[1][:, mask].mean(1), atol=1e-5, rtol=1e-4)
    empty, flags = region_average(torch.randn(1, 8, 4, 4), torch.zeros(1, 2, 4, 4))
    assert torch.equal(empty, torch.zeros(1, 2, 8)) and not flags.any()


def test_sean_norm_blend_and_batchnorm():
    torch.manual_seed(0)
    norm = SEANNorm(8, 3, style_layers=3, style_dim=16)
    assert type(norm.param_free_norm) is nn.BatchNorm2d and not norm.param_free_norm.affine
    assert norm.blending_gamma.item() == 0.0 and torch.count_nonzero(norm.noise_var) == 0
    x = torch.randn(2, 8, 8, 8)
    seg = nn.functional.one_hot(torch.randint(0, 3, (2, 8, 8)), 3).permute(0, 3, 1, 2).float()
    style = torch.randn(2, 3, 16)
    # style branch by hand: relu(fc_j(style_j)) scattered into class j's mask
    middle = torch.zeros(2, 16, 8, 8)
    for i in range(2):
        for j in range(3):
            m = seg[i, j].bool()
            middle[i][:, m] = torch.relu(norm.fc_mu[j](style[i, j])).unsqueeze(1)
    gs, bs = norm.conv_gamma(middle), norm.conv_beta(middle)
    gp, bp = norm.spade(seg, (8, 8))
    bn = (x - x.mean((0, 2, 3), keepdim=True)) / torch.sqrt(x.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    expected = bn * (1 + 0.5 * gs + 0.5 * gp) + 0.5 * bs + 0.5 * bp
    torch.testing.assert_close(norm(x, seg, style), expected, atol=1e-5, rtol=1e-4)
    plain = SEANNorm(8, 3, style_layers=3, style_dim=16, use_style=False)
    assert not hasattr(plain, "fc_mu") and not plain.blending_gamma.requires_grad


def test_last_block_is_plain_spade_and_ddp_conversion_applies():
    g = SEANGenerator(4, 64, ngf=8, style_dim=32)
    styled = [n for n, m in g.named_modules() if isinstance(m, SEANNorm) and m.use_style]
    plain = [n for n, m in g.named_modules() if isinstance(m, SEANNorm) and not m.use_style]
    assert len(styled) == 15 and all(n.startswith("up_3.") for n in plain) and len(plain) == 3
    bns = sum(type(m) is nn.BatchNorm2d for m in g.modules())
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in nn.SyncBatchNorm.convert_sync_batchnorm(g).modules()) == bns


def test_generate_with_and_without_style_and_mean_codes():
    torch.manual_seed(0)
    synth = SEANSynthesizer(4, 64, {"ngf": 16, "style_dim": 64})
    batch = toy_batch(2, drop_class3_in_first=True)
    assert torch.equal(synth.mean_styles(), torch.zeros(4, 64))  # nothing seen yet
    style = torch.arange(2 * 4 * 64, dtype=torch.float32).view(2, 4, 64) / 512
    present = torch.tensor([[True, True, False, False], [True, False, False, False]])
    synth.update_mean_styles(style, present, decay=0.5)
    means = synth.mean_styles()
    torch.testing.assert_close(means[0], style[:, 0].mean(0))
    torch.testing.assert_close(means[1], style[0, 1])
    assert torch.equal(means[2:], torch.zeros(2, 64))
    out = synth.generate(batch.onehot)
    assert synth.last_style_mode == "mean" and out.shape == (2, 1, 64, 64) and torch.isfinite(out).all()
    rec = synth.generate(batch.onehot, style=batch.image)
    assert synth.last_style_mode == "reconstruction" and rec.shape == (2, 1, 64, 64)
    assert not torch.allclose(out, rec)
    state = synth.state_dict()["G"]
    assert torch.equal(state["mean_style_weight"], synth.nets["G"].mean_style_weight)


def test_two_step_manual_training_loop_updates_mean_styles():
    torch.manual_seed(0)
    synth = SEANSynthesizer(4, 64, {"ngf": 16, "style_dim": 64})
    assert synth.uses_style
    opts = {n: torch.optim.Adam(s.params, lr=2e-4 * s.lr_scale, betas=s.betas)
            for n, s in synth.optimizers("main").items()}
    batch = toy_batch(2, drop_class3_in_first=True)
    g_before = {n: p.detach().clone() for n, p in synth.nets["G"].named_parameters()}
    for _ in range(2):
        names = []
        for update in synth.training_step("main", batch):
            assert torch.isfinite(update.loss)
            opts[update.optimizer].zero_grad(set_to_none=True)
            update.loss.backward()
            opts[update.optimizer].step()
            names.append(update.optimizer)
        assert names == ["D", "G"] and set(update.logs) == {"G_GAN", "G_feat", "G_VGG"}
    g_now = dict(synth.nets["G"].named_parameters())
    assert not torch.equal(g_before["Zencoder.model.1.weight"], g_now["Zencoder.model.1.weight"].detach())
    assert torch.equal(g_before["up_3.ace_0.blending_gamma"], g_now["up_3.ace_0.blending_gamma"].detach())
    assert torch.all(synth.nets["G"].mean_style_weight > 0)  # every class was seen
    assert torch.isfinite(synth.mean_styles()).all()
    exact = synth.fit_mean_styles([batch])
    assert exact.shape == (4, 64) and torch.isfinite(exact).all()
