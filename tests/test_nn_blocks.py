"""synthbench.nn: discriminator counts/shapes of the four baselines, GAN / feature-matching losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synthbench.nn import (
    MultiscaleDiscriminator,
    NLayerDiscriminator,
    ResnetBlock,
    discriminator_loss,
    feature_matching_loss,
    gan_loss,
    init_weights,
    padding_for,
)
from synthbench.synthesizer import count_parameters


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda: NLayerDiscriminator(5, n_layers=3, padding=1, norm="batch"), 2_767_681),  # pix2pix
        (lambda: NLayerDiscriminator(6, n_layers=3, padding=1, norm="batch"), 2_768_705),  # pix2pix RGB
        (lambda: MultiscaleDiscriminator(5, 2, n_layers=3, padding=2, norm="instance"), 5_533_570),
        (lambda: MultiscaleDiscriminator(5, 3, n_layers=3, padding=2, norm="instance"), 8_300_355),
        (lambda: MultiscaleDiscriminator(5, 2, n_layers=3, padding=2, norm="instance", spectral=True, bias=False), 5_531_778),
        (lambda: MultiscaleDiscriminator(5, 2, n_layers=2, padding=2, norm="instance", spectral=True, bias=False,
                                         all_stride2=True), 1_329_282),
    ],
    ids=["pix2pix", "pix2pix-rgb", "pix2pixhd-2", "pix2pixhd-3", "spade", "sean"],
)
def test_reference_discriminator_counts(build, expected):
    with torch.device("meta"):
        assert count_parameters(build()) == expected


def test_patchgan_output_shapes_at_256():
    x = torch.zeros(1, 5, 256, 256)
    assert NLayerDiscriminator(5, ndf=4, n_layers=3, padding=1)(x).shape[-2:] == (30, 30)
    hd = MultiscaleDiscriminator(5, 2, ndf=4, n_layers=3, padding=padding_for(4), norm="instance")(x)
    assert [tuple(s[-1].shape) for s in hd] == [(1, 1, 35, 35), (1, 1, 19, 19)]
    assert len(hd[0]) == 5  # four intermediate features + the logit map
    sean = MultiscaleDiscriminator(5, 2, ndf=4, n_layers=2, padding=2, norm="instance", spectral=True,
                                   bias=False, all_stride2=True)(x)
    assert [tuple(s[-1].shape[-2:]) for s in sean] == [(34, 34), (18, 18)]


def test_multiscale_downsampling_and_first_scale():
    D = MultiscaleDiscriminator(2, 2, ndf=4, n_layers=1, padding=2, norm="none")
    x = torch.randn(1, 2, 32, 32)
    full = D(x)
    half = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    assert torch.allclose(full[1][-1], D.scales[1](half)[-1])
    skipped = D(half, first_scale=1)
    assert len(skipped) == 1 and torch.allclose(skipped[0][-1], full[1][-1])


def test_gan_losses_match_definitions():
    a, b = torch.randn(2, 1, 5, 5), torch.randn(2, 1, 3, 3)
    multi = [[torch.zeros(1), a], [torch.zeros(1), b]]
    assert torch.allclose(gan_loss(multi, True, "lsgan"), F.mse_loss(a, torch.ones_like(a)) + F.mse_loss(b, torch.ones_like(b)))
    assert torch.allclose(gan_loss(multi, False, "lsgan", reduce_scales="mean"),
                          0.5 * (F.mse_loss(a, torch.zeros_like(a)) + F.mse_loss(b, torch.zeros_like(b))))
    assert torch.allclose(gan_loss(a, True, "vanilla"), F.binary_cross_entropy_with_logits(a, torch.ones_like(a)))
    assert torch.allclose(gan_loss(a, True, "hinge"), F.relu(1 - a).mean())
    assert torch.allclose(gan_loss(a, False, "hinge"), F.relu(1 + a).mean())
    assert torch.allclose(gan_loss(a, True, "hinge", for_discriminator=False), -a.mean())
    total, parts = discriminator_loss(a, b, "lsgan")
    assert torch.allclose(total, 0.5 * (parts["D_real"] + parts["D_fake"]))
    with pytest.raises(ValueError):
        gan_loss(a, True, "wgan")


def test_feature_matching_weights_and_detach():
    fake = [[torch.ones(2, 3, requires_grad=True), torch.zeros(2, 3), torch.full((1,), 9.0)] for _ in range(2)]
    real = [[torch.zeros(2, 3, requires_grad=True), torch.full((2, 3), 2.0), torch.zeros(1)] for _ in range(2)]
    # per scale: |1-0| + |0-2| = 3 (logit map excluded); 2 scales, layer weight 4/(3+1) = 1, 1/num_D
    loss = feature_matching_loss(fake, real, layer_weight=4 / (3 + 1))
    assert loss.item() == pytest.approx(3.0)
    loss.backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None
    assert feature_matching_loss(fake, real, layer_weight=0.5).item() == pytest.approx(1.5)


def test_resnet_block_and_init():
    block = ResnetBlock(8, norm="instance", padding="reflect")
    x = torch.randn(2, 8, 6, 6)
    assert block(x).shape == x.shape
    assert count_parameters(block) == 2 * (8 * 8 * 9 + 8)
    init_weights(block, "normal", 0.02)
    w = block.conv_block[1].weight
    assert abs(w.std().item() - 0.02) < 0.005 and block.conv_block[1].bias.abs().sum() == 0
    sn = NLayerDiscriminator(3, ndf=8, n_layers=1, spectral=True)
    assert not hasattr(sn.blocks[0][0], "weight_orig")  # first conv: no normalisation at all
    before = sn.blocks[1][0].weight_orig.clone()
    init_weights(sn, "xavier", 0.02)
    assert not torch.equal(before, sn.blocks[1][0].weight_orig)
    assert sn.blocks[1][0].weight_orig.std().item() < 0.01
