"""PatchGAN and multiscale discriminators (pix2pix, pix2pixHD, SPADE, SEAN; baselines.md).

``n_layers`` follows pix2pix / pix2pixHD: ``n_layers`` stride-2 convs (64, 128, 256, ... up to
``ndf * max_mult``) then one stride-1 conv then the 1-channel conv. Reference settings::

    pix2pix 70x70   NLayerDiscriminator(C+1, n_layers=3, padding=1, norm="batch")
    pix2pixHD       NLayerDiscriminator(C+1, n_layers=3, padding=2, norm="instance")
    SPADE (n_layers_D=4)  n_layers=3, padding=2, norm="instance", spectral=True, bias=False
    SEAN  (n_layers_D=3)  n_layers=2, padding=2, norm="instance", spectral=True, bias=False,
                          all_stride2=True   (every middle conv stride 2: 34x34 / 18x18 at 256)

``bias="auto"`` drops the conv bias where batch norm follows (pix2pix); pix2pixHD keeps it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from synthbench.nn.blocks import get_norm_layer


def padding_for(kernel: int = 4, style: str = "pix2pixhd") -> int:
    """pix2pix pads 1; pix2pixHD/SPADE/SEAN pad ``ceil((kernel - 1) / 2)`` (= 2 for kernel 4)."""
    return 1 if style == "pix2pix" else int(math.ceil((kernel - 1) / 2))


class NLayerDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017, Sec. 3.2.2): a fully convolutional map of patch logits.

    ``forward`` returns the final ``[B, 1, h, w]`` logit map, or with ``return_features=True``
    the list of every block's output (the last one is the logit map), which feature matching
    uses (pix2pixHD Sec. 3.2, Eq. 4).
    """

    def __init__(
        self,
        in_channels: int,
        ndf: int = 64,
        n_layers: int = 3,
        padding: int = 1,
        norm: str = "batch",
        spectral: bool = False,
        bias: bool | str = "auto",
        all_stride2: bool = False,
        max_mult: int = 8,
        kernel: int = 4,
        return_features: bool = False,
    ):
        super().__init__()
        self.return_features = return_features
        norm_layer = get_norm_layer(norm)
        use_bias = (norm != "batch") if bias == "auto" else bool(bias)

        def conv(cin, cout, stride, b=True, normalised=spectral):
            layer = nn.Conv2d(cin, cout, kernel_size=kernel, stride=stride, padding=padding, bias=b)
            return nn.utils.spectral_norm(layer) if normalised else layer

        # The first conv carries no normalisation of any kind, spectral norm included (SPADE's
        # official NLayerDiscriminator applies its norm layer to the middle convs only).
        blocks: list[nn.Sequential] = [
            nn.Sequential(conv(in_channels, ndf, 2, normalised=False), nn.LeakyReLU(0.2, True))
        ]
        nf = ndf
        for n in range(1, n_layers + 1):
            nf_prev, nf = nf, ndf * min(2**n, max_mult)
            stride = 2 if (n < n_layers or all_stride2) else 1
            layers: list[nn.Module] = [conv(nf_prev, nf, stride, use_bias)]
            if norm_layer is not None:
                layers.append(norm_layer(nf))
            layers.append(nn.LeakyReLU(0.2, True))
            blocks.append(nn.Sequential(*layers))
        final = nn.Conv2d(nf, 1, kernel_size=kernel, stride=1, padding=padding)
        blocks.append(nn.Sequential(final))  # the output conv is never spectral-normed
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor):
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats if self.return_features else x


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGANs on the input downsampled 0, 1, 2, ... times (pix2pixHD Sec. 3.2).

    Downsampling is ``AvgPool2d(3, stride 2, padding 1, count_include_pad=False)``. ``forward``
    returns a list over scales (full resolution first) of each scale's feature list (the last
    entry of each list is that scale's logit map). ``kwargs`` go to every
    :class:`NLayerDiscriminator`.
    """

    def __init__(self, in_channels: int, num_D: int = 2, **kwargs):
        super().__init__()
        kwargs["return_features"] = True
        self.num_D = num_D
        self.scales = nn.ModuleList(NLayerDiscriminator(in_channels, **kwargs) for _ in range(num_D))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor, first_scale: int = 0) -> list[list[torch.Tensor]]:
        """``first_scale > 0`` skips the finest discriminators (input already downsampled)."""
        out = []
        for i, disc in enumerate(self.scales):
            if i >= first_scale:
                out.append(disc(x))
            if i < self.num_D - 1:
                x = self.downsample(x) if i >= first_scale else x
        return out
