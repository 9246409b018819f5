"""The SPADE synthesizer (Park et al. 2019) on synthbench's engine.

Training (paper Sec. 4 / appendix A, official ``pix2pix_model.py``): per iteration the
discriminator step (hinge loss, real + fake, each averaged over the 2 scales) then the generator
step (hinge generator loss averaged over scales + feature matching x ``lambda_feat`` / num_D +
VGG19 perceptual x ``lambda_vgg`` [+ KL x ``lambda_kld`` with the VAE encoder]). One generator
forward per iteration serves both steps (the D step sees it detached), which saves the second
no-grad forward the official trainer runs. TTUR: G lr 0.5x, D lr 2x the protocol's 2e-4 with
Adam betas (0, 0.9); ``no_ttur``: equal rates, betas (0.5, 0.999).

Departures from the official code (baselines.md asks to state them): one gray input/output
channel (VGG gets the gray image repeated to three channels); a one-hot label map without an
instance/edge channel; the parameter-free norm is ``nn.BatchNorm2d(affine=False)`` (the engine
converts it to ``SyncBatchNorm`` under DDP; the official code needs its own synchronized BN);
D and loss blocks come from :mod:`synthbench.nn`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from synthbench.departures import VGG_WEIGHTS_DEPARTURE, Departure
from synthbench.nn import (
    MultiscaleDiscriminator,
    VGGLoss,
    feature_matching_loss,
    gan_loss,
    init_weights,
)
from synthbench.synthesizer import Batch, OptimizerSpec, Synthesizer, SynthesizerConfigError, Update
from synthbench_spade.networks import (
    UPSAMPLINGS,
    ConvEncoder,
    SPADEGenerator,
    kl_divergence,
    reparameterize,
    spade_hidden_width,
)

#: Reference parameter counts (baselines.md; official NVlabs/SPADE classes).
REFERENCE_COUNTS = {
    "G (4 classes, 1-channel output, normal upsampling)": 92_088_385,
    "D (2 scales, 4 layers, 5-channel input)": 5_531_778,
    "G on COCO (184 classes, RGB)": 97_480_899,
    "G on ADE20K (151 classes, RGB)": 96_492_483,
}


def build_spade_discriminator(
    in_channels: int, ndf: int = 64, num_D: int = 2, n_layers_D: int = 4, gain: float = 0.02
) -> nn.Module:
    """SPADE's multiscale D (baselines.md): per scale ``n_layers_D`` convs 64 (s2, no norm), 128,
    256 (s2), 512 (s1), then 1 (s1); kernel 4, padding 2; spectral norm + InstanceNorm (no bias)
    on the middle convs; xavier init gain 0.02. Outputs 35x35 / 19x19 at 256 input."""
    disc = MultiscaleDiscriminator(
        in_channels, num_D=num_D, ndf=ndf, n_layers=n_layers_D - 1, padding=2,
        norm="instance", spectral=True, bias=False,
    )
    return init_weights(disc, "xavier", gain)


def spade_family_departures(method: str) -> list[Departure]:
    """Departures SPADE and SEAN share (both follow the official SPADE trainer)."""
    return [
        Departure("input and output", "label map + instance edge map in, RGB out",
                  "one-hot label map (the official --no_instance), one gray output channel",
                  "label-map-to-CT synthesis (baselines.md)"),
        Departure("update order", f"official {method} trainer: G step first (against the current D), then a "
                  "second, gradient-free G forward for the D step",
                  "D step first on a detached sample, then G against the updated D, one G forward serving both",
                  "one generator forward per iteration instead of two; the engine's D-then-G contract"),
        Departure("parameter-free norm", "synchronized BatchNorm (its own implementation)",
                  "nn.BatchNorm2d(affine=False), SyncBatchNorm under DDP", "the same normalisation on one device"),
        VGG_WEIGHTS_DEPARTURE,
    ]


class GANLossMixin:
    """The loss pieces SPADE and SEAN share (SPADE paper Sec. 4; SEAN Sec. 4 uses the same)."""

    options: dict[str, Any]
    _vgg: VGGLoss | None = None

    def vgg_loss(self) -> VGGLoss:
        """The VGG19 perceptual loss, built on first use (weights resolved offline)."""
        if self._vgg is None:
            self._vgg = VGGLoss()
        return self._vgg

    def discriminate(self, onehot, fake, real):
        """One D pass on ``[label|fake ; label|real]``; returns (pred_fake, pred_real) per scale."""
        disc = self.train_nets["D"]
        pred = disc(torch.cat([torch.cat([onehot, fake], 1), torch.cat([onehot, real], 1)], 0))
        n = fake.shape[0]
        pred_fake = [[f[:n] for f in scale] for scale in pred]
        pred_real = [[f[n:] for f in scale] for scale in pred]
        return pred_fake, pred_real

    def d_update(self, onehot, fake, real) -> Update:
        """Hinge D loss: ``mean_scales relu(1 - D(real)) + mean_scales relu(1 + D(fake))``."""
        pred_fake, pred_real = self.discriminate(onehot, fake.detach(), real)
        d_fake = gan_loss(pred_fake, False, "hinge", True, "mean")
        d_real = gan_loss(pred_real, True, "hinge", True, "mean")
        return Update("D", d_fake + d_real, {"D_fake": d_fake.detach(), "D_real": d_real.detach()})

    def g_losses(self, onehot, fake, real) -> dict[str, torch.Tensor]:
        """Hinge G loss (mean over scales), FM x lambda_feat / num_D, VGG x lambda_vgg."""
        opts = self.options
        pred_fake, pred_real = self.discriminate(onehot, fake, real)
        losses = {"G_GAN": gan_loss(pred_fake, True, "hinge", False, "mean")}
        if not opts["no_ganFeat_loss"]:
            losses["G_feat"] = feature_matching_loss(pred_fake, pred_real, 1.0) * opts["lambda_feat"]
        if not opts["no_vgg_loss"]:
            vgg = self.vgg_loss().to(fake.device)
            losses["G_VGG"] = vgg(fake.float(), real.float()) * opts["lambda_vgg"]
        return losses

    def ttur(self, g_params, d_params) -> dict[str, OptimizerSpec]:
        """Two time-scale update rule (SPADE Sec. 4): G 0.5x, D 2x base lr, betas (0, 0.9)."""
        if self.options["no_ttur"]:
            return {
                "G": OptimizerSpec(tuple(g_params), 1.0, (0.5, 0.999)),
                "D": OptimizerSpec(tuple(d_params), 1.0, (0.5, 0.999)),
            }
        return {
            "G": OptimizerSpec(tuple(g_params), 0.5, (0.0, 0.9)),
            "D": OptimizerSpec(tuple(d_params), 2.0, (0.0, 0.9)),
        }

    def pretrained_weights(self) -> list[dict[str, str]]:
        if self.options["no_vgg_loss"]:
            return []
        from synthbench.pretrained import resolve_vgg19

        record = self._vgg.record if self._vgg is not None else resolve_vgg19()
        return [dict(record)]


class SPADESynthesizer(GANLossMixin, Synthesizer):
    """SPADE (Park et al., CVPR 2019): SPADE-ResBlk generator, 2-scale hinge PatchGAN, TTUR."""

    name = "spade"
    #: CPU-sized protocols (quick, smoke) train this narrower build; the paper protocol never does.
    #: spade_hidden scales with ngf (64 -> 16 is 1/4; 128 -> 32): at 64 px the full-width modulation
    #: convs were a third of a quick step.
    reduced_options = {"ngf": 16, "ndf": 16, "spade_hidden": 32}
    summary = "SPADE: spatially-adaptive normalization generator, multiscale hinge PatchGAN (Park et al. 2019)"
    citation = (
        "T. Park, M.-Y. Liu, T.-C. Wang, J.-Y. Zhu. Semantic Image Synthesis with "
        "Spatially-Adaptive Normalization. CVPR 2019."
    )
    #: "normal" upsampling: 5 nearest 2x upsamplings from size / 32 (other options check their own).
    min_size = 32
    size_multiple = 32
    variants = {
        "vae": {"use_vae": True},
        "no_ttur": {"no_ttur": True},
    }
    #: What the VAE variant uses without a style image (recorded by synthesis as its style mode).
    styleless_mode = "random z ~ N(0, I)"
    paper_options = {
        "ngf": 64, "ndf": 64, "spade_hidden": 128, "num_D": 2, "n_layers_D": 4, "num_upsampling_layers": "normal",
        "use_vae": False, "z_dim": 256, "lambda_feat": 10.0, "lambda_vgg": 10.0, "lambda_kld": 0.05, "no_ganFeat_loss": False,
        "no_vgg_loss": False, "no_ttur": False, "init_gain": 0.02,
    }

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {
            "ngf": 64,  # generator base width nf (16 * nf = 1024 at the head)
            "ndf": 64,
            "spade_hidden": 128,  # width of each SPADE's shared modulation conv (official nhidden)
            "num_D": 2,
            "n_layers_D": 4,
            "num_upsampling_layers": "normal",  # normal | more | most
            "use_vae": False,
            "z_dim": 256,
            "lambda_feat": 10.0,
            "lambda_vgg": 10.0,
            "lambda_kld": 0.05,
            "no_ganFeat_loss": False,
            "no_vgg_loss": False,
            "no_ttur": False,
            "init_gain": 0.02,
        }

    @property
    def uses_style(self) -> bool:
        """Only the VAE variant uses a style image (its encoder gives z); synthesis records it."""
        return bool(self.options["use_vae"])

    def build_networks(self) -> dict[str, nn.Module]:
        o = self.options
        if o["num_upsampling_layers"] not in UPSAMPLINGS:
            raise SynthesizerConfigError(
                f"spade: num_upsampling_layers must be one of {sorted(UPSAMPLINGS)}, got {o['num_upsampling_layers']!r}"
            )
        g = SPADEGenerator(
            self.num_classes, self.image_size, out_channels=1, ngf=int(o["ngf"]),
            num_upsampling_layers=o["num_upsampling_layers"], use_vae=bool(o["use_vae"]), z_dim=int(o["z_dim"]),
            spade_hidden=spade_hidden_width(o["spade_hidden"]),
        )
        init_weights(g, "xavier", float(o["init_gain"]))
        nets: dict[str, nn.Module] = {
            "G": g,
            "D": build_spade_discriminator(
                self.num_classes + 1, int(o["ndf"]), int(o["num_D"]), int(o["n_layers_D"]), float(o["init_gain"])
            ),
        }
        if o["use_vae"]:
            nets["E"] = init_weights(ConvEncoder(1, int(o["ngf"]), int(o["z_dim"])), "xavier", float(o["init_gain"]))
        return nets

    def optimizers(self, stage: str) -> dict[str, OptimizerSpec]:
        g_params = list(self.nets["G"].parameters())
        if "E" in self.nets:  # official: the encoder trains with G's optimizer
            g_params += list(self.nets["E"].parameters())
        return self.ttur(g_params, self.nets["D"].parameters())

    def _fake(self, onehot: torch.Tensor, image: torch.Tensor | None):
        """G forward; with the VAE, z is sampled from the encoder's posterior of ``image``."""
        if not self.options["use_vae"]:
            return self.train_nets["G"](onehot), None
        mu, logvar = self.train_nets["E"](image)
        return self.train_nets["G"](onehot, reparameterize(mu, logvar)), (mu, logvar)

    def training_step(self, stage: str, batch: Batch) -> Iterator[Update]:
        onehot, real = batch.onehot, batch.image
        fake, posterior = self._fake(onehot, real)
        yield self.d_update(onehot, fake, real)
        losses = self.g_losses(onehot, fake, real)
        if posterior is not None:
            losses["KLD"] = kl_divergence(*posterior) * self.options["lambda_kld"]
        total = sum(losses.values())
        yield Update("G", total, {k: v.detach() for k, v in losses.items()})

    @torch.no_grad()
    def generate(self, onehot: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """Image from a one-hot map. With ``use_vae``: z encoded from ``style`` when given
        (example-guided), else z ~ N(0, I) (multi-modal synthesis); otherwise ``style`` is ignored."""
        self.check_input(onehot)
        was = {name: net.training for name, net in self.nets.items()}
        self.nets.eval()
        try:
            z = None
            if self.options["use_vae"] and style is not None:
                z = reparameterize(*self.nets["E"](style))
            return self.nets["G"](onehot, z) if self.options["use_vae"] else self.nets["G"](onehot)
        finally:
            for name, net in self.nets.items():
                net.train(was[name])

    @classmethod
    def departures(cls, options) -> list[Departure]:
        return spade_family_departures("SPADE")

    def describe(self) -> dict[str, Any]:
        o = self.options
        notes = {
            "reference counts": ", ".join(f"{k}: {v:,}" for k, v in REFERENCE_COUNTS.items()),
            "upsampling": f"{o['num_upsampling_layers']} ({UPSAMPLINGS[o['num_upsampling_layers']]} nearest 2x upsamplings, "
            f"start {self.nets['G'].sw}x{self.nets['G'].sw})",
            "SPADE modulation": f"label map -> shared 3x3 conv to {o['spade_hidden']} + ReLU -> 3x3 convs to gamma, beta "
            f"(spade_hidden; official nhidden 128)",
            "losses": "hinge (mean over scales) + feature matching x {lambda_feat} / num_D + VGG19 x {lambda_vgg}".format(**o)
            + (f" + KL x {o['lambda_kld']} (VAE encoder, z {o['z_dim']}-d)" if o["use_vae"] else ""),
            "optimizers": "equal lr, betas (0.5, 0.999) (no_ttur)" if o["no_ttur"]
            else "TTUR: G 0.5x, D 2x base lr (1e-4 / 4e-4 at 2e-4), betas (0, 0.9)",
            "test time": self.describe_test_mode(),
        }
        if o["use_vae"]:
            notes["vae"] = "G starts from fc(z) (parameters then depend on the image size); E resizes its input to 256"
        return notes
