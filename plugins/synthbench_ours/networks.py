"""Generators and discriminators of the paper's model (paper Sec. "Proposed model", Figs. 3-4).

* :class:`GlobalGenerator` is G1 (global information, runs at half resolution): c7s1-64, three
  3x3 stride-2 convs to 128/256/512, 9 residual blocks at 512 channels, three 3x3 stride-2
  transposed convs back to 256/128/64, c7s1-1, tanh.
* :class:`LocalGenerator` is G2 (local detail, stays at full resolution): c7s1-64, 3x3 conv to
  128 (= F_local, the output of its "downsampling part" that DESUM fuses), 9 residual blocks at
  128, 3x3 conv 128, 7x7 conv 64, then the projection to the image.
* :class:`PatchDiscriminator` is one PatchGAN (70x70 receptive field) of the multi-resolution
  discriminator D = D1 + D2 on (label map, image).

Normalization (the paper does not name one): pix2pixHD-style ``InstanceNorm2d`` without affine
parameters, convolutions keep their bias, reflection padding in the generators. The model builds
on pix2pixHD's global-local design, and instance norm behaves identically on one GPU and on CPU;
option ``norm="batch"`` gives BatchNorm instead. Weights start from N(0, 0.02) (pix2pix/pix2pixHD).

No code was published. Shared pieces come from :mod:`synthbench.nn` (residual block, norm
factory, init, the PatchGAN); written here: the two generators and the discriminator's "Concat".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthbench.nn import NLayerDiscriminator, ResnetBlock, get_norm_layer, padding_for
from synthbench.nn import init_weights as shared_init

NORMS = ("instance", "batch")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """InstanceNorm without affine parameters (pix2pixHD) or BatchNorm (shared factory)."""
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r} (known: {', '.join(NORMS)})")
    return get_norm_layer(kind)(channels)


def init_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """pix2pix/pix2pixHD init N(0, 0.02) of conv and linear weights (:func:`synthbench.nn.init_weights`)."""
    return shared_init(module, "normal", std)


def downsample(x: torch.Tensor, times: int = 1) -> torch.Tensor:
    """Halve the resolution ``times`` times with pix2pixHD's AvgPool(3, 2, 1, count_include_pad=False).

    Used for label maps (G1's and D2's input: a soft one-hot at the boundaries) and for real and
    synthetic images judged by the half-resolution discriminator.
    """
    for _ in range(times):
        x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
    return x


def _c7s1(cin: int, cout: int, norm: str) -> list[nn.Module]:
    return [nn.ReflectionPad2d(3), nn.Conv2d(cin, cout, 7), norm_layer(norm, cout), nn.ReLU(True)]


class GlobalGenerator(nn.Module):
    """G1 (Fig. 3): c7s1-ngf, ``n_down`` stride-2 convs, ``n_blocks`` residual blocks, mirror, c7s1-1.

    :meth:`features` returns the image and the outputs of the upsampling path (coarse to fine:
    256, 128, 64 channels for ngf 64); DESUM takes F_global from there. The input side length must
    be divisible by ``2 ** n_down``.
    """

    def __init__(self, in_channels: int, out_channels: int = 1, ngf: int = 64, n_down: int = 3, n_blocks: int = 9, norm: str = "instance"):
        super().__init__()
        self.n_down = n_down
        layers: list[nn.Module] = _c7s1(in_channels, ngf, norm)
        ch = ngf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), norm_layer(norm, ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch, norm) for _ in range(n_blocks)]
        self.encoder = nn.Sequential(*layers)
        self.up = nn.ModuleList()
        for _ in range(n_down):
            self.up.append(
                nn.Sequential(
                    nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                    norm_layer(norm, ch // 2),
                    nn.ReLU(True),
                )
            )
            ch //= 2
        self.to_image = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Tanh())
        self.feature_channels = {"last": ch, "penultimate": ch * 2}

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.encoder(x)
        ups = []
        for block in self.up:
            h = block(h)
            ups.append(h)
        return self.to_image(h), {"last": ups[-1], "penultimate": ups[-2] if len(ups) > 1 else ups[-1]}

    def forward(self, x: torch.Tensor, features: bool = False):
        """Image ``[B, 1, H, W]``; with ``features=True`` also the upsampling features (see :meth:`features`)."""
        image, feats = self.features(x)
        return (image, feats) if features else image


class LocalGenerator(nn.Module):
    """G2 (Fig. 4), full resolution throughout (no striding).

    front: c7s1-ngf, 3x3 conv 2*ngf (-> F_local); ``n_blocks`` residual blocks at 2*ngf;
    back: 3x3 conv 2*ngf, 7x7 conv ngf, then an ``out_kernel`` x ``out_kernel`` conv to the image
    and tanh. The paper's list ends "7x7 conv 64 -> image" and does not name the layer that makes
    the image. Default (the plugin's option ``g2_output_kernel`` = 7): a c7s1-1 + tanh head, the
    image head of G1 and of both pix2pixHD generators this design extends. Measured reason: with
    a 1x1 projection (``out_kernel`` 1, the most literal reading) G2 alone did not lower its L1 to
    the real phantom slices in 30 Adam steps (0.88 -> 0.88), with the 7x7 head it did (0.78 -> 0.18).

    ``forward(x, fuse)``: ``fuse(F_local) -> F_out`` is DESUM (eq. 1) in the joint step, absent
    when G2 trains alone. :meth:`features` also returns the 64-channel ("last") and 128-channel
    ("penultimate") maps of the back path, so a local generator can feed a finer one in the
    three-generator chain the way G1 feeds G2.
    """

    def __init__(self, in_channels: int, out_channels: int = 1, ngf: int = 64, n_blocks: int = 9, norm: str = "instance", out_kernel: int = 7):
        super().__init__()
        if out_kernel % 2 != 1:
            raise ValueError(f"G2 output kernel must be odd, got {out_kernel}")
        self.front = nn.Sequential(
            *_c7s1(in_channels, ngf, norm),
            nn.Conv2d(ngf, ngf * 2, 3, padding=1),
            norm_layer(norm, ngf * 2),
            nn.ReLU(True),
        )
        self.blocks = nn.Sequential(*[ResnetBlock(ngf * 2, norm) for _ in range(n_blocks)])
        self.back128 = nn.Sequential(nn.Conv2d(ngf * 2, ngf * 2, 3, padding=1), norm_layer(norm, ngf * 2), nn.ReLU(True))
        self.back64 = nn.Sequential(*_c7s1(ngf * 2, ngf, norm))
        pad = out_kernel // 2
        head: list[nn.Module] = [nn.ReflectionPad2d(pad)] if pad else []
        self.to_image = nn.Sequential(*head, nn.Conv2d(ngf, out_channels, out_kernel), nn.Tanh())
        self.local_channels = ngf * 2
        self.feature_channels = {"last": ngf, "penultimate": ngf * 2}

    def features(self, x: torch.Tensor, fuse=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        f = self.front(x)
        if fuse is not None:
            f = fuse(f)
        h128 = self.back128(self.blocks(f))
        h64 = self.back64(h128)
        return self.to_image(h64), {"last": h64, "penultimate": h128}

    def forward(self, x: torch.Tensor, fuse=None, features: bool = False):
        """Image ``[B, 1, H, W]``; with ``features=True`` also the back-path features."""
        image, feats = self.features(x, fuse)
        return (image, feats) if features else image


class PatchDiscriminator(NLayerDiscriminator):
    """70x70 PatchGAN on concat(label map, image) (paper: D1, D2; Fig. 5).

    C64 (stride 2, no norm, LeakyReLU 0.2) -> C128 (s2) -> C256 (s2) -> C512 (s1) -> conv to 1
    (s1), kernel 4, padding 2 (pix2pixHD: it keeps a valid output at the small sizes of the
    half- and quarter-resolution discriminators): :class:`synthbench.nn.NLayerDiscriminator`.
    ``forward(label, image)`` returns logits and the intermediate features ``[f1, f2, f3, f4]``
    (the D^i of eq. 4).

    ``concat="label"``: the figure's "Concat" between the 128 and 256 layers is read as
    re-injecting the label map (area-resized to that layer's grid) into the features before the
    256 layer. Reason: the only inputs of D_i(m, x) in eqs. 3-4 are m and x, so the concat cannot
    join features of the other discriminator without coupling D1 and D2 (eq. 4 treats them as
    separate functions); a second look at the condition is what a conditional PatchGAN can
    concatenate there. ``concat="none"`` is the plain PatchGAN (label and image joined at the
    input only; then exactly pix2pixHD's per-scale discriminator).
    """

    def __init__(self, label_channels: int, image_channels: int = 1, ndf: int = 64, n_layers: int = 3, norm: str = "instance", concat: str = "label"):
        if concat not in ("label", "none"):
            raise ValueError(f"unknown discriminator concat {concat!r} (known: label, none)")
        if n_layers < 2:
            raise ValueError("the discriminator needs n_layers >= 2 (the Concat sits before the third conv)")
        super().__init__(label_channels + image_channels, ndf=ndf, n_layers=n_layers, padding=padding_for(4, "pix2pixhd"),
                         norm=norm, bias=True, return_features=True)
        self.concat = concat
        self.label_channels = label_channels
        if concat == "label":
            old = self.blocks[2][0]
            self.blocks[2][0] = nn.Conv2d(old.in_channels + label_channels, old.out_channels, old.kernel_size,
                                          old.stride, old.padding, bias=old.bias is not None)
        self.feature_channels = [b[0].out_channels for b in self.blocks[:-1]]

    def forward(self, label: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = torch.cat([label, image], dim=1)
        feats = []
        for i, block in enumerate(self.blocks):
            if i == 2 and self.concat == "label":
                h = torch.cat([h, F.adaptive_avg_pool2d(label, h.shape[-2:]).to(h.dtype)], dim=1)
            h = block(h)
            feats.append(h)
        return feats[-1], feats[:-1]
