"""synthbench plugin: pix2pixHD (Wang et al., CVPR 2018), as NVIDIA/pix2pixHD builds it.

Networks (baselines.md "pix2pixHD"; paper Sec. 3.1-3.2):

* Global generator G1: c7s1-64, four 3x3 stride-2 convs (128, 256, 512, 1024), 9 residual
  blocks at 1024 (reflection padding), four 3x3 stride-2 transposed convs back to 64, c7s1-1,
  tanh; InstanceNorm without affine, convs with bias.
* Local enhancer G2 (variant ``local``): G1 built with ngf 64 runs on the input downsampled by
  AvgPool(3, 2, 1, count_include_pad=False), minus its last three layers; the local branch
  (c7s1-32, stride-2 conv to 64) is ADDED to those features, then 3 residual blocks, a
  transposed conv to 32, c7s1-1, tanh.
* Multiscale PatchGAN D: 2 scales (3 with the local enhancer), 64(s2)-128(s2)-256(s2)-512(s1)-1,
  kernel 4 padding 2, InstanceNorm, every intermediate feature returned.

Losses (paper Eq. 4-5): LSGAN summed over scales + 10 x feature matching (layer weight
4/(n_layers+1), 1/num_D) + 10 x VGG19 perceptual loss (relu1_1..relu5_1, weights 1/32..1);
D loss 0.5 * (real + fake). Adam 2e-4, betas (0.5, 0.999).

Update order as the official trainer: every D output of an iteration comes from the same D
weights (D(real) serves D's loss and G's feature matching), G steps, then D.

Departures from the official code (:meth:`Pix2PixHD.departures`, docs/departures.md): one-hot
label input only (no instance/edge map, no feature encoder), one gray output channel (the VGG
loss gets it repeated to three channels), any size divisible by 16 (32 with the local
enhancer). The official coarse-to-fine schedule trains G1 in a separate run first; here the
``local`` variant trains G2 in one run with stages ``local_only`` (only the local branch,
pix2pixHD's ``--niter_fix_global``) then ``joint`` (G1, G2 and D). VGG19 weights resolve offline
(:func:`synthbench.pretrained.resolve_vgg19`; input and the quantized Caffe weights:
:func:`synthbench.nn.perceptual_input`); the run manifest records which VGG was used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from synthbench import (
    Batch,
    OptimizerSpec,
    Stage,
    Synthesizer,
    SynthesizerConfigError,
    Update,
)
from synthbench.departures import UNSTATED, VGG_WEIGHTS_DEPARTURE, Departure
from synthbench.nn import (
    MultiscaleDiscriminator,
    ResnetBlock,
    VGGLoss,
    discriminator_loss,
    feature_matching_loss,
    gan_loss,
    init_weights,
)
from synthbench.synthesizer import set_requires_grad

#: Reference parameter counts (baselines.md; 4-class one-hot input, 1 output channel).
REFERENCE_COUNTS = {
    "G (global)": 182_440_129,
    "G (local enhancer)": 182_703_393,
    "D (2 scales)": 5_533_570,
    "D (3 scales)": 8_300_355,
}


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False)


def global_generator_layers(in_channels: int, out_channels: int, ngf: int, n_down: int, n_blocks: int) -> list[nn.Module]:
    """pix2pixHD global generator G1 (paper Sec. 3.2, "coarse-to-fine generator") as a layer list."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), _norm(ngf), nn.ReLU(True)]
    for i in range(n_down):
        c = ngf * 2**i
        layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(2 * c), nn.ReLU(True)]
    c = ngf * 2**n_down
    layers += [ResnetBlock(c, norm="instance", padding="reflect") for _ in range(n_blocks)]
    for i in range(n_down):
        c = ngf * 2 ** (n_down - i)
        layers += [
            nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
            _norm(c // 2),
            nn.ReLU(True),
        ]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
    return layers


class GlobalGenerator(nn.Module):
    """G1: label map -> image in [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int = 1, ngf: int = 64, n_down: int = 4, n_blocks: int = 9):
        super().__init__()
        self.model = nn.Sequential(*global_generator_layers(in_channels, out_channels, ngf, n_down, n_blocks))

    def forward(self, x):
        return self.model(x)


class LocalEnhancer(nn.Module):
    """G = {G1, G2} with one local enhancer (paper Sec. 3.2): G2's front-end features plus G1's
    last feature map (G1 without its output layers, run on the 2x downsampled input)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        ngf_global: int = 64,
        n_down: int = 4,
        n_blocks_global: int = 9,
        n_blocks_local: int = 3,
    ):
        super().__init__()
        ngf = ngf_global // 2
        self.global_model = nn.Sequential(
            *global_generator_layers(in_channels, out_channels, ngf_global, n_down, n_blocks_global)[:-3]
        )
        self.local_down = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), _norm(ngf), nn.ReLU(True),
            nn.Conv2d(ngf, 2 * ngf, 3, stride=2, padding=1), _norm(2 * ngf), nn.ReLU(True),
        )
        self.local_up = nn.Sequential(
            *[ResnetBlock(2 * ngf, norm="instance", padding="reflect") for _ in range(n_blocks_local)],
            nn.ConvTranspose2d(2 * ngf, ngf, 3, stride=2, padding=1, output_padding=1), _norm(ngf), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh(),
        )
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def local_parameters(self) -> list[nn.Parameter]:
        return [*self.local_down.parameters(), *self.local_up.parameters()]

    def forward(self, x):
        coarse = self.global_model(self.downsample(x))
        return self.local_up(self.local_down(x) + coarse)


class Pix2PixHD(Synthesizer):
    """pix2pixHD baseline (see the module docstring for architecture and departures)."""

    name = "pix2pixhd"
    min_size = 32  # a 2x2 bottleneck after four stride-2 convs (InstanceNorm needs more than 1x1)
    size_multiple = 16  # four stride-2 convs (32 with the local enhancer, checked at build)
    #: CPU-sized protocols (quick, smoke) train this narrower build; the paper protocol never does.
    reduced_options = {"ngf": 16, "ndf": 16, "n_blocks_global": 3}
    summary = "pix2pixHD: coarse-to-fine generator, multiscale D, feature matching + VGG loss"
    citation = (
        "Wang, Liu, Zhu, Tao, Kautz, Catanzaro. High-Resolution Image Synthesis and Semantic "
        "Manipulation with Conditional GANs. CVPR 2018."
    )
    stages = (Stage("global", 1.0, "train the global generator and the multiscale D"),)
    variants = {
        "global": {"local_enhancer": False},
        "local": {"local_enhancer": True},
        "no_vgg": {"no_vgg_loss": True},
    }
    paper_options = {
        "ngf": 64, "n_downsample_global": 4, "n_blocks_global": 9, "local_enhancer": False, "n_blocks_local": 3,
        "fix_global_fraction": UNSTATED, "ndf": 64, "n_layers_D": 3, "num_D": None, "gan_mode": "lsgan",
        "lambda_feat": 10.0, "lambda_vgg": 10.0, "no_ganFeat_loss": False, "no_vgg_loss": False,
        "vgg_weights": None, "init_gain": 0.02, "betas": (0.5, 0.999),
    }

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {
            "ngf": 64,  # the global generator's (G1's) width; the local branch uses ngf / 2
            "n_downsample_global": 4,
            "n_blocks_global": 9,
            "local_enhancer": False,
            "n_blocks_local": 3,
            "fix_global_fraction": 0.1,  # local variant: share of epochs training only G2's branch
            "ndf": 64,
            "n_layers_D": 3,
            "num_D": None,  # None: 2, or 3 with the local enhancer
            "gan_mode": "lsgan",
            "lambda_feat": 10.0,
            "lambda_vgg": 10.0,
            "no_ganFeat_loss": False,
            "no_vgg_loss": False,
            "vgg_weights": None,  # explicit VGG19 file; else synthbench.pretrained's order
            "init_gain": 0.02,
            "betas": (0.5, 0.999),
        }

    def __init__(self, num_classes, image_size, options=None, variant=None):
        super().__init__(num_classes, image_size, options, variant)
        if self.options["local_enhancer"]:
            f = float(self.options["fix_global_fraction"])
            if not 0.0 <= f < 1.0:
                raise SynthesizerConfigError(f"{self.name}: fix_global_fraction must be in [0, 1), got {f}")
            self.stages = (
                (Stage("local_only", f, "train only the local enhancer branch (G1 fixed)"),) if f > 0 else ()
            ) + (Stage("joint", 1.0 - f, "train G1 + G2 and the multiscale D jointly"),)
        self._vgg: VGGLoss | None = None

    # ------------------------------------------------------------------ networks
    @property
    def num_D(self) -> int:
        n = self.options["num_D"]
        return int(n) if n is not None else (3 if self.options["local_enhancer"] else 2)

    def build_networks(self) -> dict[str, nn.Module]:
        o = self.options
        n_down = int(o["n_downsample_global"])
        factor = 2 ** (n_down + (1 if o["local_enhancer"] else 0))
        if self.image_size % factor or self.image_size < 2 * factor:  # InstanceNorm needs a >1x1 bottleneck
            what = "with the local enhancer" if o["local_enhancer"] else f"with {n_down} downsamplings"
            raise SynthesizerConfigError(
                f"{self.name}: image size {self.image_size} must be divisible by {factor} and at least "
                f"{2 * factor} {what}"
            )
        if o["local_enhancer"]:
            G: nn.Module = LocalEnhancer(
                self.num_classes, 1, int(o["ngf"]), n_down, int(o["n_blocks_global"]), int(o["n_blocks_local"])
            )
        else:
            G = GlobalGenerator(self.num_classes, 1, int(o["ngf"]), n_down, int(o["n_blocks_global"]))
        D = MultiscaleDiscriminator(
            self.num_classes + 1, self.num_D, ndf=int(o["ndf"]), n_layers=int(o["n_layers_D"]),
            padding=2, norm="instance", bias=True,
        )
        gain = float(o["init_gain"])
        return {"G": init_weights(G, "normal", gain), "D": init_weights(D, "normal", gain)}

    def optimizers(self, stage: str) -> dict[str, OptimizerSpec]:
        betas = tuple(self.options["betas"])
        G = self.nets["G"]
        g_params = G.local_parameters() if stage == "local_only" else list(G.parameters())
        return {
            "D": OptimizerSpec(tuple(self.nets["D"].parameters()), 1.0, betas),
            "G": OptimizerSpec(tuple(g_params), 1.0, betas),
        }

    # ------------------------------------------------------------------ training
    def vgg_loss(self, device: torch.device) -> VGGLoss:
        if self._vgg is None:
            record = None
            if self.options["vgg_weights"]:
                from synthbench.pretrained import resolve_vgg19

                record = resolve_vgg19(self.options["vgg_weights"])
            self._vgg = VGGLoss(record)
        return self._vgg.to(device)

    def training_step(self, stage: str, batch: Batch) -> Iterator[Update]:
        """One pix2pixHD iteration in the official trainer's order (``Pix2PixHDModel.forward`` then
        ``train.py``): every discriminator output of the iteration comes from the same D weights
        (D(real) serves D's loss and G's feature matching alike), then G steps, then D."""
        if stage not in self.stage_names():
            raise SynthesizerConfigError(f"{self.name}: unknown stage {stage!r} (stages: {self.stage_names()})")
        o = self.options
        G, D = self.train_nets["G"], self.train_nets["D"]
        if o["local_enhancer"]:  # pix2pixHD --niter_fix_global: G1 fixed while only G2's branch trains
            self.nets["G"].global_model.requires_grad_(stage != "local_only")
        onehot, real = batch.onehot, batch.image
        fake = G(onehot)

        # G's view of its sample: D frozen (no D weight gradients in G's backward) and unwrapped (no
        # DDP gradient sync for a net this update does not step).
        set_requires_grad(self.nets["D"], False)
        try:
            pred_fake = self.nets["D"](torch.cat([onehot, fake], 1))
        finally:
            set_requires_grad(self.nets["D"], True)
        # D on real and on the detached sample in one pass (instance norm: per sample, so exact).
        n = real.shape[0]
        pred = D(torch.cat([torch.cat([onehot, real], 1), torch.cat([onehot, fake.detach()], 1)], 0))
        pred_real = [[f[:n] for f in scale] for scale in pred]
        pred_fake_d = [[f[n:] for f in scale] for scale in pred]

        g_gan = gan_loss(pred_fake, True, o["gan_mode"], for_discriminator=False, reduce_scales="sum")
        loss_g = g_gan
        logs_g: dict[str, Any] = {"G_GAN": g_gan.detach()}
        if not o["no_ganFeat_loss"]:
            layer_weight = 4.0 / (int(o["n_layers_D"]) + 1)
            g_feat = feature_matching_loss(pred_fake, pred_real, layer_weight) * float(o["lambda_feat"])
            loss_g = loss_g + g_feat
            logs_g["G_GAN_Feat"] = g_feat.detach()
        if not o["no_vgg_loss"]:
            g_vgg = self.vgg_loss(fake.device)(fake, real) * float(o["lambda_vgg"])
            loss_g = loss_g + g_vgg
            logs_g["G_VGG"] = g_vgg.detach()
        yield Update("G", loss_g, logs_g)

        loss_d, logs_d = discriminator_loss(pred_real, pred_fake_d, o["gan_mode"], "sum")
        yield Update("D", loss_d, logs_d)

    # ------------------------------------------------------------------ reporting
    @classmethod
    def departures(cls, options) -> list[Departure]:
        return [
            Departure("input and output", "label map + instance edge map (and an optional feature encoder) in, "
                      "RGB out", "one-hot label map only (the official --no_instance), one gray output channel",
                      "label-map-to-CT synthesis (baselines.md)"),
            Departure("coarse-to-fine training (local variant)",
                      "G1 trained first in a separate run at half resolution, then G1 + G2 with G1 fixed for "
                      "--niter_fix_global epochs", "one run: G2's branch alone for fix_global_fraction (0.1) of the "
                      "epochs with G1 fixed (not pre-trained), then G1, G2 and D jointly",
                      "one run per method under the shared protocol", "fix_global_fraction"),
            Departure("image size", "multiples of 2**n_downsample (1024x512 / 2048x1024 in the paper)",
                      "any size divisible by 16 (32 with the local enhancer)", "square CT slices of any size"),
            VGG_WEIGHTS_DEPARTURE,
        ]

    def pretrained_weights(self) -> list[dict[str, str]]:
        if self.options["no_vgg_loss"]:
            return []
        if self._vgg is not None:
            return [dict(self._vgg.record)]
        from synthbench.pretrained import resolve_vgg19

        return [resolve_vgg19(self.options["vgg_weights"])]

    def describe(self) -> dict[str, Any]:
        return {
            "reference counts (4 classes, 1 output channel)": ", ".join(
                f"{k} {v:,}" for k, v in REFERENCE_COUNTS.items()
            ),
            "generator": "local enhancer G1+G2" if self.options["local_enhancer"] else "global generator G1",
            "discriminator scales": self.num_D,
            "size constraint": f"divisible by {2 ** (int(self.options['n_downsample_global']) + int(bool(self.options['local_enhancer'])))}",
            "VGG loss": "off (no_vgg_loss)" if self.options["no_vgg_loss"] else "on (weights resolved offline at training time)",
            "update order": "all D outputs of an iteration from the same D weights; G steps, then D (official)",
        }
