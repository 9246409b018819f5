"""synthbench plugin: pix2pix (Isola et al., CVPR 2017) as the official code builds it.

Facts from ``shared/reference/baselines.md`` ("pix2pix"):

* G: U-Net, ngf 64, encoder 64-128-256-512-512-512-512-512 (4x4 stride-2 convs, LeakyReLU 0.2),
  no norm on the outermost down conv nor on the innermost block, decoder of 4x4 stride-2
  transposed convs with ReLU, skip connections by concatenation, Tanh output, BatchNorm with
  bias-free convs where BatchNorm follows, dropout 0.5 in the inner 512-channel decoder blocks
  (``num_downs - 5`` of them, three for the 8-level U-Net, as the official code builds them).
* D: 70x70 PatchGAN on ``cat(label one-hot, image)`` (:class:`synthbench.nn.NLayerDiscriminator`,
  3 layers, padding 1, BatchNorm), no sigmoid.
* Loss (Eq. 4 of the pix2pix paper): vanilla GAN (BCE with logits) + 100 x L1; D loss
  ``0.5 * (real + fake)``. Init N(0, 0.02). Adam betas (0.5, 0.999).

Test time (``test_modes["mode"]``): by default as the official ``test.py`` without ``--eval``,
which the Jiang et al. comparison used: the generator stays in train mode, so dropout is on and
BatchNorm normalises with the statistics of the image itself (test.py runs batch size 1; here
each image is generated alone, so the result does not depend on the synthesis batch, and the
running statistics are left untouched). ``mode=eval`` (``synthbench synthesize --test-mode
mode=eval``) is ``test.py --eval``: dropout off, running statistics.

Image sizes: the number of downsamplings is ``log2(size)`` capped at 8 (the official
``unet_256``); at 512 the default keeps 8 (a 2x2 bottleneck, which the official code allows);
option ``num_downs=9`` builds the 9-level U-Net instead. Any size divisible by ``2**num_downs``
works (sizes with fewer factors of 2 get fewer levels). Departures from the official code: one
gray output channel and a ``num_classes``-channel one-hot input (no RGB).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from synthbench import OptimizerSpec, Synthesizer, SynthesizerConfigError, Update
from synthbench.nn.blocks import init_weights
from synthbench.nn.discriminators import NLayerDiscriminator
from synthbench.nn.losses import gan_loss
from synthbench.synthesizer import Batch, set_requires_grad


class UnetBlock(nn.Module):
    """One U-Net level: ``x -> [down, submodule, up]`` concatenated with ``x`` (skip), except outermost."""

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None, submodule: nn.Module | None = None,
                 outermost: bool = False, innermost: bool = False, dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=False)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=False)
            layers = [downrelu, downconv, uprelu, upconv, nn.BatchNorm2d(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=False)
            layers = [downrelu, downconv, nn.BatchNorm2d(inner_nc), submodule, uprelu, upconv, nn.BatchNorm2d(outer_nc)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net generator with ``num_downs`` stride-2 levels (baselines.md "pix2pix", G)."""

    def __init__(self, input_nc: int, output_nc: int = 1, num_downs: int = 8, ngf: int = 64, dropout: bool = True):
        super().__init__()

        def ch(level: int) -> int:
            return ngf * min(2**level, 8)

        block = UnetBlock(ch(num_downs - 2), ch(num_downs - 1), innermost=True)
        for level in range(num_downs - 2, 0, -1):
            drop = dropout and level >= 4  # the inner 512->512 levels (num_downs - 5 of them)
            block = UnetBlock(ch(level - 1), ch(level), submodule=block, dropout=drop)
        self.model = UnetBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def default_num_downs(size: int) -> int:
    """``log2(size)`` capped at 8; only as many levels as ``size`` has factors of 2."""
    twos = 0
    while size % 2 == 0 and size > 1:
        size //= 2
        twos += 1
    return min(twos, 8)


class Pix2Pix(Synthesizer):
    """pix2pix: U-Net G + 70x70 PatchGAN D, vanilla GAN + 100 x L1 (Isola et al. 2017, Eq. 4)."""

    name = "pix2pix"
    #: CPU-sized protocols (quick, smoke) train this narrower build; the paper protocol never does.
    reduced_options = {"ngf": 16, "ndf": 16}
    summary = "U-Net generator, 70x70 PatchGAN, vanilla GAN + L1 (Isola et al. 2017)"
    citation = "Isola, Zhu, Zhou, Efros. Image-to-Image Translation with Conditional Adversarial Networks. CVPR 2017."
    test_modes = {
        "mode": {
            "official": "dropout on, batch statistics of each image (official test.py without --eval, batch 1)",
            "eval": "dropout off, running BatchNorm statistics (test.py --eval)",
        }
    }
    paper_options = {
        "ngf": 64, "ndf": 64, "n_layers_D": 3, "num_downs": 8, "lambda_l1": 100.0, "dropout": True,
        "init_gain": 0.02, "betas": (0.5, 0.999),
    }

    @classmethod
    def default_options(cls):
        return {
            "ngf": 64,
            "ndf": 64,
            "n_layers_D": 3,
            "num_downs": None,  # None: log2(size) capped at 8; 9 gives the 9-level U-Net at 512
            "lambda_l1": 100.0,
            "dropout": True,
            "init_gain": 0.02,
            "betas": (0.5, 0.999),
        }

    def build_networks(self):
        o = self.options
        num_downs = o["num_downs"] if o["num_downs"] is not None else default_num_downs(self.image_size)
        if num_downs < 2 or self.image_size % (2**num_downs) != 0:
            raise SynthesizerConfigError(
                f"pix2pix: image size {self.image_size} must be divisible by 2**num_downs "
                f"(num_downs={num_downs}, at least 2)"
            )
        # PatchGAN: n stride-2 convs then two stride-1 convs with kernel 4, padding 1 (-1 px each)
        d_out = self.image_size // 2 ** o["n_layers_D"] - 2
        if d_out < 1:
            raise SynthesizerConfigError(
                f"pix2pix: image size {self.image_size} too small for the {o['n_layers_D']}-layer PatchGAN "
                f"(needs at least {2 ** o['n_layers_D'] * 3} px)"
            )
        self.num_downs = num_downs
        G = UnetGenerator(self.num_classes, 1, num_downs=num_downs, ngf=o["ngf"], dropout=o["dropout"])
        D = NLayerDiscriminator(self.num_classes + 1, ndf=o["ndf"], n_layers=o["n_layers_D"], padding=1, norm="batch")
        return {"G": init_weights(G, "normal", o["init_gain"]), "D": init_weights(D, "normal", o["init_gain"])}

    def optimizers(self, stage):
        betas = tuple(self.options["betas"])
        return {
            "D": OptimizerSpec(tuple(self.nets["D"].parameters()), 1.0, betas),
            "G": OptimizerSpec(tuple(self.nets["G"].parameters()), 1.0, betas),
        }

    def training_step(self, stage: str, batch: Batch) -> Iterator[Update]:
        """One pix2pix iteration: D on (real, G(x).detach()), then G on GAN + L1 (pix2pix Eq. 4)."""
        G, D = self.train_nets["G"], self.train_nets["D"]
        onehot, real = batch.onehot, batch.image
        fake = G(onehot)

        set_requires_grad(self.nets["D"], True)
        pred_fake = D(torch.cat([onehot, fake.detach()], 1))
        pred_real = D(torch.cat([onehot, real], 1))
        loss_d_fake = gan_loss(pred_fake, False, mode="vanilla")
        loss_d_real = gan_loss(pred_real, True, mode="vanilla")
        loss_d = 0.5 * (loss_d_fake + loss_d_real)
        yield Update("D", loss_d, {"D_real": loss_d_real.detach(), "D_fake": loss_d_fake.detach()})

        # G step: D is frozen and called unwrapped (no DDP gradient sync for a net not stepped here).
        set_requires_grad(self.nets["D"], False)
        try:
            pred = self.nets["D"](torch.cat([onehot, fake], 1))
            loss_gan = gan_loss(pred, True, mode="vanilla", for_discriminator=False)
            loss_l1 = F.l1_loss(fake, real) * self.options["lambda_l1"]
            yield Update("G", loss_gan + loss_l1, {"G_GAN": loss_gan.detach(), "G_L1": loss_l1.detach()})
        finally:
            set_requires_grad(self.nets["D"], True)

    @torch.no_grad()
    def generate(self, onehot: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """G's image; see the module docstring for the two test-time modes."""
        if self.test_mode["mode"] == "eval":
            return super().generate(onehot, style)
        self.check_input(onehot)
        net = self.nets["G"]
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        was, tracked = net.training, [m.track_running_stats for m in norms]
        net.train(True)
        for m in norms:  # train mode without touching the running statistics
            m.track_running_stats = False
        try:
            return torch.cat([net(onehot[i:i + 1]) for i in range(onehot.shape[0])])
        finally:
            for m, flag in zip(norms, tracked, strict=True):
                m.track_running_stats = flag
            net.train(was)

    @classmethod
    def departures(cls, options):
        from synthbench.departures import Departure

        rows = [
            Departure("input and output", "RGB photo in, RGB image out (3 channels each)",
                      "one-hot label map in, one gray channel out", "label-map-to-CT synthesis (baselines.md)"),
            Departure("U-Net levels (num_downs)", "8 (unet_256)",
                      "log2(size) capped at 8: 8 at 256 and 512 px, fewer below 256 px where 8 levels do not fit",
                      "the official U-Net needs a side of at least 256", "num_downs"),
            Departure("batch size and schedule", "batch 1, 100 + 100 epochs (pix2pix paper)",
                      "the shared protocol of Jiang et al. (batch 16, 20 epochs, 2e-4 then linear decay)",
                      "every method of the comparison trains under the same settings", "protocol"),
        ]
        return rows

    def describe(self):
        notes = {
            "U-Net levels": f"{self.num_downs} downsamplings (bottleneck {self.image_size // 2 ** self.num_downs}px)",
            "reference counts": "G 54,410,881 / D 2,767,681 at 4 classes, 256 px (baselines.md)",
            "test time": self.describe_test_mode(),
        }
        if self.image_size >= 512 and self.options["num_downs"] is None:
            notes["512 px"] = "8 downsamplings (2x2 bottleneck, as the official code allows); num_downs=9 for 9 levels"
        return notes


__all__ = ["Pix2Pix", "UnetGenerator", "default_num_downs"]
