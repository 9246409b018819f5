"""SEAN networks (Zhu et al., CVPR 2020, "SEAN: Image Synthesis with Semantic Region-Adaptive
Normalization"), re-implemented from the paper and baselines.md (facts of ZPdesu/SEAN).

* :class:`StyleEncoder` - the paper's style encoder (Fig. 3 / Sec. 3.2, official ``Zencoder``):
  reflection pad + 3x3 conv 32, two 3x3 stride-2 convs (64, 128), one 3x3 stride-2 transposed
  conv to 256, reflection pad + 3x3 conv 512, tanh (InstanceNorm + LeakyReLU 0.2 between);
  region-wise average pooling of that map inside each class mask -> style matrix
  ``[B, classes, 512]``. A class absent from a sample gets a zero code (no NaN).
* :class:`SEANNorm` - SEAN normalization (official ``ACE``, paper Eq. 2-4): per-pixel Gaussian
  noise scaled by a learnable per-channel ``noise_var`` added before a parameter-free
  ``nn.BatchNorm2d`` (converted to SyncBatchNorm by the engine under DDP); style branch
  ``relu(fc_mu_j(style_j))`` broadcast into class j's mask, then 3x3 convs 512 -> gamma, beta;
  a SPADE branch (:class:`synthbench_spade.networks.SPADEModulation`, hidden width
  ``spade_hidden``, official 128) gives its own gamma,
  beta; ``gamma = sigmoid(a_gamma) * gamma_style + (1 - sigmoid(a_gamma)) * gamma_spade``
  (``a`` learnable, starts at 0), same for beta. With ``use_style=False`` only the SPADE
  branch is used.
* :class:`SEANResBlock` / :class:`SEANGenerator` - SPADE's generator skeleton (head, 2 middle,
  up_0..up_3) with SEAN blocks. As in the official code, every block uses SEAN except the
  last one (``up_3``, 2nf -> nf, i.e. 128 -> 64 channels), which uses plain SPADE
  modulation (``use_rgb=False`` there); its blocks still hold the (unused) blending scalars and
  their noise, exactly as the official parameter count includes them. The unused blending
  scalars are created with ``requires_grad=False`` so DDP never waits for their gradients.

Style layers: the official code always builds 19 ``fc_mu`` layers per normalization
(CelebAMask-HQ) and uses the first ``classes``; here ``style_layers`` defaults to the data set's
class count (one per class), and ``style_layers=19`` reproduces the published build.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from synthbench_spade.networks import SPADEModulation, latent_size, lrelu
from torch import nn
from torch.nn.utils import spectral_norm


def region_average(features: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average ``features [B, F, h, w]`` inside each class mask of ``onehot [B, C, H, W]``
    (nearest-resized to ``h x w``, SEAN Sec. 3.2 region-wise average pooling).

    Returns the codes ``[B, C, F]`` (zero where a class has no pixel, never NaN) and the
    presence ``[B, C]`` (bool) of each class at that resolution."""
    mask = F.interpolate(onehot, size=features.shape[-2:], mode="nearest").to(features.dtype)
    sums = torch.einsum("bfhw,bchw->bcf", features, mask)
    area = mask.sum(dim=(2, 3))
    return sums / area.clamp(min=1.0).unsqueeze(-1), area > 0


class StyleEncoder(nn.Module):
    """SEAN's style encoder (paper Fig. 3 left, official ``Zencoder``): image -> style matrix."""

    def __init__(self, in_channels: int = 1, style_dim: int = 512, ngf: int = 32):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.model = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(in_channels, ngf, 3),
            nn.InstanceNorm2d(ngf),
            act,
            nn.Conv2d(ngf, 2 * ngf, 3, stride=2, padding=1),
            nn.InstanceNorm2d(2 * ngf),
            act,
            nn.Conv2d(2 * ngf, 4 * ngf, 3, stride=2, padding=1),
            nn.InstanceNorm2d(4 * ngf),
            act,
            nn.ConvTranspose2d(4 * ngf, 8 * ngf, 3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm2d(8 * ngf),
            act,
            nn.ReflectionPad2d(1),
            nn.Conv2d(8 * ngf, style_dim, 3),
            nn.Tanh(),
        )

    def forward(self, image: torch.Tensor, onehot: torch.Tensor, return_present: bool = False):
        """``image [B, 1, H, W]``, ``onehot [B, C, H, W]`` -> style matrix ``[B, C, style_dim]``
        (and the class presence ``[B, C]`` with ``return_present``)."""
        codes, present = region_average(self.model(image), onehot)
        return (codes, present) if return_present else codes


class SEANNorm(nn.Module):
    """SEAN normalization (paper Sec. 3.1, Eq. 2-4; official ``ACE``)."""

    def __init__(
        self, norm_nc: int, label_nc: int, style_layers: int, style_dim: int = 512, use_style: bool = True,
        spade_hidden: int = 128,
    ):
        super().__init__()
        self.use_style = use_style
        self.style_dim = style_dim
        self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
        self.noise_var = nn.Parameter(torch.zeros(norm_nc))
        # Blending weights a_gamma, a_beta (sigmoid(0) = 0.5 at the start). Unused without style.
        self.blending_gamma = nn.Parameter(torch.zeros(1), requires_grad=use_style)
        self.blending_beta = nn.Parameter(torch.zeros(1), requires_grad=use_style)
        self.spade = SPADEModulation(norm_nc, label_nc, spade_hidden)
        if use_style:
            self.fc_mu = nn.ModuleList(nn.Linear(style_dim, style_dim) for _ in range(style_layers))
            self.conv_gamma = nn.Conv2d(style_dim, norm_nc, 3, padding=1)
            self.conv_beta = nn.Conv2d(style_dim, norm_nc, 3, padding=1)

    def style_map(self, style: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """``relu(fc_mu_j(style[:, j]))`` broadcast into class j's mask -> ``[B, style_dim, H, W]``.

        Equivalent to the official per-sample, per-class ``masked_scatter_`` for one-hot maps
        (each pixel lies in exactly one class; absent classes write nothing)."""
        classes = segmap.shape[1]
        if classes > len(self.fc_mu):
            raise ValueError(f"{classes} classes but only {len(self.fc_mu)} style layers")
        weight = torch.stack([fc.weight for fc in self.fc_mu[:classes]])  # [C, out, in]
        bias = torch.stack([fc.bias for fc in self.fc_mu[:classes]])  # [C, out]
        mu = F.relu(torch.einsum("bci,coi->bco", style, weight) + bias)
        return torch.einsum("bco,bchw->bohw", mu, segmap)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        normalized = self.param_free_norm(x + noise * self.noise_var.view(1, -1, 1, 1))
        segmap = F.interpolate(segmap, size=x.shape[-2:], mode="nearest")
        gamma_spade, beta_spade = self.spade(segmap, x.shape[-2:])
        if not self.use_style:
            return normalized * (1 + gamma_spade) + beta_spade
        middle = self.style_map(style, segmap)
        gamma_style, beta_style = self.conv_gamma(middle), self.conv_beta(middle)
        a_gamma, a_beta = torch.sigmoid(self.blending_gamma), torch.sigmoid(self.blending_beta)
        gamma = a_gamma * gamma_style + (1 - a_gamma) * gamma_spade
        beta = a_beta * beta_style + (1 - a_beta) * beta_spade
        return normalized * (1 + gamma) + beta


class SEANResBlock(nn.Module):
    """SPADE ResBlk with SEAN normalizations (paper Fig. 3 right); spectral-normed convs."""

    def __init__(
        self, fin: int, fout: int, label_nc: int, style_layers: int, style_dim: int = 512, use_style: bool = True,
        spade_hidden: int = 128,
    ):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, 3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, 3, padding=1))
        self.ace_0 = SEANNorm(fin, label_nc, style_layers, style_dim, use_style, spade_hidden)
        self.ace_1 = SEANNorm(fmiddle, label_nc, style_layers, style_dim, use_style, spade_hidden)
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))
            self.ace_s = SEANNorm(fin, label_nc, style_layers, style_dim, use_style, spade_hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        x_s = self.conv_s(self.ace_s(x, seg, style)) if self.learned_shortcut else x
        dx = self.conv_0(lrelu(self.ace_0(x, seg, style)))
        dx = self.conv_1(lrelu(self.ace_1(dx, seg, style)))
        return x_s + dx


class SEANGenerator(nn.Module):
    """SEAN generator: style encoder + SPADE skeleton with SEAN ResBlks (last block plain SPADE).

    ``forward(seg, style_image=None, style=None, return_style=False)``: the style matrix comes
    from ``style`` (``[B, C, style_dim]``) when given, else from encoding ``style_image``; with
    ``return_style`` (needs ``style_image``) it returns ``(image, style, present)``.
    """

    def __init__(
        self,
        label_nc: int,
        image_size: int,
        out_channels: int = 1,
        style_channels: int = 1,
        ngf: int = 64,
        style_layers: int | None = None,
        style_dim: int = 512,
        num_upsampling_layers: str = "normal",
        spade_hidden: int = 128,
    ):
        super().__init__()
        style_layers = label_nc if style_layers is None else style_layers
        if style_layers < label_nc:
            raise ValueError(f"style_layers ({style_layers}) must be >= the number of classes ({label_nc})")
        self.num_upsampling_layers = num_upsampling_layers
        self.sw = latent_size(image_size, num_upsampling_layers, "sean")
        nf = ngf
        self.Zencoder = StyleEncoder(style_channels, style_dim)
        self.fc = nn.Conv2d(label_nc, 16 * nf, 3, padding=1)

        def block(fin, fout, use_style=True):
            return SEANResBlock(fin, fout, label_nc, style_layers, style_dim, use_style, spade_hidden)

        self.head_0 = block(16 * nf, 16 * nf)
        self.G_middle_0 = block(16 * nf, 16 * nf)
        self.G_middle_1 = block(16 * nf, 16 * nf)
        self.up_0 = block(16 * nf, 8 * nf)
        self.up_1 = block(8 * nf, 4 * nf)
        self.up_2 = block(4 * nf, 2 * nf)
        self.up_3 = block(2 * nf, 1 * nf, use_style=False)  # official: use_rgb=False
        final_nc = nf
        if num_upsampling_layers == "most":
            self.up_4 = block(nf, nf // 2)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, out_channels, 3, padding=1)

    @staticmethod
    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(
        self,
        seg: torch.Tensor,
        style_image: torch.Tensor | None = None,
        style: torch.Tensor | None = None,
        return_style: bool = False,
    ):
        present = None
        if style is None:
            if style_image is None:
                raise ValueError("SEAN needs a style image or a style matrix")
            style, present = self.Zencoder(style_image, seg, return_present=True)
        x = self.fc(F.interpolate(seg, size=(self.sw, self.sw), mode="nearest"))
        x = self.head_0(x, seg, style)
        x = self.up(x)
        x = self.G_middle_0(x, seg, style)
        if self.num_upsampling_layers in ("more", "most"):
            x = self.up(x)
        x = self.G_middle_1(x, seg, style)
        x = self.up(x)
        x = self.up_0(x, seg, style)
        x = self.up(x)
        x = self.up_1(x, seg, style)
        x = self.up(x)
        x = self.up_2(x, seg, style)
        x = self.up(x)
        x = self.up_3(x, seg, style)
        if self.num_upsampling_layers == "most":
            x = self.up(x)
            x = self.up_4(x, seg, style)
        image = torch.tanh(self.conv_img(lrelu(x)))
        return (image, style, present) if return_style else image
