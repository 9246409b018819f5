"""SPADE networks (Park et al., CVPR 2019, "Semantic Image Synthesis with Spatially-Adaptive
Normalization"), re-implemented from the paper and baselines.md (facts of NVlabs/SPADE).

* :class:`SPADEModulation` - the label-map branch of SPADE (Sec. 3, Eq. 1): nearest-resized
  label map -> shared 3x3 conv to ``hidden`` (128, the official ``nhidden``) + ReLU -> 3x3 convs
  to gamma and beta. SEAN reuses it. The reduced builds of the CPU protocols narrow ``hidden``
  with the other widths (option ``spade_hidden``).
* :class:`SPADE` - parameter-free ``nn.BatchNorm2d(affine=False)`` then
  ``norm(x) * (1 + gamma) + beta``. A plain BatchNorm2d (not the original's custom
  synchronized batch norm) so that ``nn.SyncBatchNorm.convert_sync_batchnorm`` (the engine,
  under DDP) turns it into synchronized batch norm and one CPU/GPU works unchanged.
* :class:`SPADEResBlock` - Fig. 4 (right) of the paper; learned shortcut only when
  ``fin != fout``; spectral norm on conv0, conv1 and the shortcut conv.
* :class:`SPADEGenerator` - Fig. 5 / appendix A: ``normal`` (5), ``more`` (6) or ``most`` (7)
  nearest upsamplings; one gray output channel (departure from the RGB original).
* :class:`ConvEncoder` - the optional VAE image encoder (appendix A, "multi-modal synthesis"):
  six 3x3 stride-2 convs (spectral norm + InstanceNorm) on the image resized to 256, then
  ``fc_mu`` / ``fc_var`` to a 256-d latent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from synthbench.synthesizer import SynthesizerConfigError

#: Number of nearest 2x upsamplings of each ``num_upsampling_layers`` option (official code).
UPSAMPLINGS = {"normal": 5, "more": 6, "most": 7}


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """The generator's activation: LeakyReLU 0.2 (official ``actvn``)."""
    return F.leaky_relu(x, 0.2)


class SPADEModulation(nn.Module):
    """Label map -> (gamma, beta) of SPADE (paper Eq. 1): shared conv ``hidden`` (official 128) + ReLU,
    two 3x3 convs."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128, kernel_size: int = 3):
        super().__init__()
        pad = kernel_size // 2
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size, padding=pad), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size, padding=pad)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size, padding=pad)

    def forward(self, segmap: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        segmap = F.interpolate(segmap, size=size, mode="nearest")
        actv = self.mlp_shared(segmap)
        return self.mlp_gamma(actv), self.mlp_beta(actv)


class SPADE(nn.Module):
    """Spatially-adaptive normalization (paper Eq. 1): ``BN(x) * (1 + gamma) + beta``."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128):
        super().__init__()
        self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
        self.modulation = SPADEModulation(norm_nc, label_nc, hidden)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.modulation(segmap, x.shape[-2:])
        return self.param_free_norm(x) * (1 + gamma) + beta


class SPADEResBlock(nn.Module):
    """SPADE ResBlk (paper Fig. 4): ``x_s + conv1(lrelu(SPADE1(conv0(lrelu(SPADE0(x))))))``."""

    def __init__(self, fin: int, fout: int, label_nc: int, spade_hidden: int = 128):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, 3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, 3, padding=1))
        self.norm_0 = SPADE(fin, label_nc, spade_hidden)
        self.norm_1 = SPADE(fmiddle, label_nc, spade_hidden)
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))
            self.norm_s = SPADE(fin, label_nc, spade_hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(lrelu(self.norm_0(x, seg)))
        dx = self.conv_1(lrelu(self.norm_1(dx, seg)))
        return x_s + dx


def spade_hidden_width(value, method: str = "spade") -> int:
    """The ``spade_hidden`` option (width of SPADE's shared modulation conv, official ``nhidden = 128``)
    as a positive int; anything else is a one-line :class:`SynthesizerConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SynthesizerConfigError(f"{method}: option spade_hidden must be a positive integer, got {value!r}")
    return value


def latent_size(image_size: int, num_upsampling_layers: str, method: str = "spade") -> int:
    """Side of the starting feature map: ``image_size / 2**n_up`` (must divide exactly)."""
    if num_upsampling_layers not in UPSAMPLINGS:
        raise SynthesizerConfigError(
            f"{method}: num_upsampling_layers must be one of {sorted(UPSAMPLINGS)}, got {num_upsampling_layers!r}"
        )
    factor = 2 ** UPSAMPLINGS[num_upsampling_layers]
    if image_size % factor or image_size < factor:
        raise SynthesizerConfigError(
            f"{method}: image size {image_size} must be a positive multiple of {factor} "
            f"(num_upsampling_layers={num_upsampling_layers!r} upsamples {UPSAMPLINGS[num_upsampling_layers]} times)"
        )
    return image_size // factor


class SPADEGenerator(nn.Module):
    """SPADE generator (paper Fig. 5, appendix A) with one gray output channel.

    ``normal``: head(16nf) -> up -> middle0 -> middle1 -> up -> 8nf -> up -> 4nf -> up -> 2nf
    -> up -> nf; ``more`` adds an upsampling between the middle blocks; ``most`` additionally
    an ``up_4`` block to nf/2. Starts from a 3x3 conv of the nearest-downsampled label map, or,
    with ``use_vae``, from a linear layer of a ``z_dim`` latent.
    """

    def __init__(
        self,
        label_nc: int,
        image_size: int,
        out_channels: int = 1,
        ngf: int = 64,
        num_upsampling_layers: str = "normal",
        use_vae: bool = False,
        z_dim: int = 256,
        spade_hidden: int = 128,
    ):
        super().__init__()
        self.num_upsampling_layers = num_upsampling_layers
        self.use_vae = use_vae
        self.z_dim = z_dim
        self.ngf = ngf
        self.sw = latent_size(image_size, num_upsampling_layers)
        nf = ngf
        if use_vae:
            self.fc = nn.Linear(z_dim, 16 * nf * self.sw * self.sw)
        else:
            self.fc = nn.Conv2d(label_nc, 16 * nf, 3, padding=1)
        self.head_0 = SPADEResBlock(16 * nf, 16 * nf, label_nc, spade_hidden)
        self.G_middle_0 = SPADEResBlock(16 * nf, 16 * nf, label_nc, spade_hidden)
        self.G_middle_1 = SPADEResBlock(16 * nf, 16 * nf, label_nc, spade_hidden)
        self.up_0 = SPADEResBlock(16 * nf, 8 * nf, label_nc, spade_hidden)
        self.up_1 = SPADEResBlock(8 * nf, 4 * nf, label_nc, spade_hidden)
        self.up_2 = SPADEResBlock(4 * nf, 2 * nf, label_nc, spade_hidden)
        self.up_3 = SPADEResBlock(2 * nf, 1 * nf, label_nc, spade_hidden)
        final_nc = nf
        if num_upsampling_layers == "most":
            self.up_4 = SPADEResBlock(nf, nf // 2, label_nc, spade_hidden)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, out_channels, 3, padding=1)

    @staticmethod
    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, seg: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_vae:
            if z is None:  # multi-modal synthesis: a random latent
                z = torch.randn(seg.shape[0], self.z_dim, device=seg.device, dtype=seg.dtype)
            x = self.fc(z).view(-1, 16 * self.ngf, self.sw, self.sw)
        else:
            x = self.fc(F.interpolate(seg, size=(self.sw, self.sw), mode="nearest"))
        x = self.head_0(x, seg)
        x = self.up(x)
        x = self.G_middle_0(x, seg)
        if self.num_upsampling_layers in ("more", "most"):
            x = self.up(x)
        x = self.G_middle_1(x, seg)
        x = self.up(x)
        x = self.up_0(x, seg)
        x = self.up(x)
        x = self.up_1(x, seg)
        x = self.up(x)
        x = self.up_2(x, seg)
        x = self.up(x)
        x = self.up_3(x, seg)
        if self.num_upsampling_layers == "most":
            x = self.up(x)
            x = self.up_4(x, seg)
        return torch.tanh(self.conv_img(lrelu(x)))


class ConvEncoder(nn.Module):
    """SPADE's VAE image encoder (appendix A): image -> (mu, logvar) of a ``z_dim`` latent.

    The image is bilinearly resized to 256x256 (as in the official code), then six 3x3
    stride-2 convs (ndf, 2ndf, 4ndf, 8ndf, 8ndf, 8ndf), each spectral norm + InstanceNorm,
    LeakyReLU 0.2 between; 4x4x8ndf features -> ``fc_mu``, ``fc_var``.
    """

    def __init__(self, in_channels: int = 1, ndf: int = 64, z_dim: int = 256):
        super().__init__()
        widths = [in_channels, ndf, 2 * ndf, 4 * ndf, 8 * ndf, 8 * ndf, 8 * ndf]
        self.layers = nn.ModuleList(
            nn.Sequential(
                spectral_norm(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)),
                nn.InstanceNorm2d(cout, affine=False),
            )
            for cin, cout in zip(widths[:-1], widths[1:], strict=False)
        )
        self.fc_mu = nn.Linear(8 * ndf * 4 * 4, z_dim)
        self.fc_var = nn.Linear(8 * ndf * 4 * 4, z_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image
        if x.shape[-2:] != (256, 256):
            x = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)
        for i, layer in enumerate(self.layers):
            x = layer(x if i == 0 else lrelu(x))
        x = lrelu(x).flatten(1)
        return self.fc_mu(x), self.fc_var(x)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """VAE reparameterisation trick: ``z = mu + eps * exp(logvar / 2)``."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, I)) summed over batch and latent dims (official ``KLDLoss``)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
