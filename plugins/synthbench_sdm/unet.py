"""SDM's denoising U-Net (Wang et al. 2022, "Semantic Image Synthesis via Diffusion Models",
Sec. 3.2 and Fig. 3), re-implemented from the paper and the official code
(WeilunWang/semantic-diffusion-model, ``guided_diffusion/unet.py``, class ``UNetModel``).

* The **encoder** (``input_blocks``) sees only the noisy image: a 3x3 conv, then per level
  ``num_res_blocks`` :class:`ResBlock` (GroupNorm, timestep FiLM ``norm(h) * (1 + scale) +
  shift``) with self-attention at the attention resolutions, and a down-sampling ResBlock
  (average pooling inside the block, official ``resblock_updown=True``) between levels.
* The **middle block** and the **decoder** (``output_blocks``) are :class:`SDMResBlock`: both
  normalisations of every block are :class:`SpatiallyAdaptiveGroupNorm` (parameter-free
  GroupNorm modulated by gamma/beta convolved from the nearest-resized label map, paper Eq. 4),
  so the label map enters every decoder block (the paper's multi-layer injection). Decoder
  blocks take the skip features of the encoder concatenated, and up-sample with a nearest
  up-sampling ResBlock.
* Sinusoidal timestep embedding -> Linear(4C) -> SiLU -> Linear(4C) feeds every ResBlock.
* Output: GroupNorm, SiLU, zero-initialised 3x3 conv to ``out_channels`` (synthbench: 1 gray
  noise channel + 1 learned-variance channel; official: 3 + 3 for RGB).

The label-map branch is SPADE's (:class:`synthbench_spade.networks.SPADEModulation`, the same
shared conv + gamma/beta convs as the official ``SPADEGroupNorm``). Attention is the official
"legacy" order (heads split before q/k/v) computed with ``scaled_dot_product_attention``.
Parameter counts equal the official class exactly for the same configuration (tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from synthbench_spade.networks import SPADEModulation
from torch import nn

from synthbench.synthesizer import SynthesizerConfigError

#: Official ``create_model`` channel multipliers per image size (``script_util.py``).
OFFICIAL_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t f_i), sin(t f_i)]``, ``f_i = max_period^(-i / (dim/2))`` (DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (official ``GroupNorm32``; stable under reduced precision)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero-initialise every parameter (residual branch outputs start as identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class SpatiallyAdaptiveGroupNorm(nn.Module):
    """Paper Eq. 4: ``GN(x) * (1 + gamma(y)) + beta(y)``; GN parameter-free, y the label map."""

    def __init__(self, channels: int, label_nc: int, groups: int, hidden: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.modulation = SPADEModulation(channels, label_nc, hidden=hidden)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.modulation(label.to(x.dtype), x.shape[-2:])
        return self.norm(x) * (1 + gamma) + beta


def _resample(up: bool, down: bool) -> nn.Module:
    if up:
        return nn.Upsample(scale_factor=2, mode="nearest")
    if down:
        return nn.AvgPool2d(2)
    return nn.Identity()


class ResBlock(nn.Module):
    """Encoder block (official ``ResBlock`` with ``use_scale_shift_norm``): the timestep embedding
    scales and shifts the second normalisation; optional down-sampling inside the block."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, groups: int, dropout: float = 0.0,
                 down: bool = False):
        super().__init__()
        self.in_norm = GroupNorm32(groups, channels)
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.resample = _resample(False, down)
        self.emb = nn.Linear(emb_channels, 2 * out_channels)
        self.out_norm = GroupNorm32(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        h = self.in_conv(self.resample(F.silu(self.in_norm(x))))
        x = self.resample(x)
        scale, shift = self.emb(F.silu(emb)).type(h.dtype)[..., None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SDMResBlock(nn.Module):
    """Decoder / middle block (official ``SDMResBlock``): both normalisations spatially adaptive
    to the label map, the timestep FiLM on the second; optional up-sampling inside the block."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, label_nc: int, groups: int,
                 hidden: int, dropout: float = 0.0, up: bool = False):
        super().__init__()
        self.in_norm = SpatiallyAdaptiveGroupNorm(channels, label_nc, groups, hidden)
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.resample = _resample(up, False)
        self.emb = nn.Linear(emb_channels, 2 * out_channels)
        self.out_norm = SpatiallyAdaptiveGroupNorm(out_channels, label_nc, groups, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = self.in_conv(self.resample(F.silu(self.in_norm(x, label))))
        x = self.resample(x)
        scale, shift = self.emb(F.silu(emb)).type(h.dtype)[..., None, None].chunk(2, dim=1)
        h = self.out_norm(h, label) * (1 + scale) + shift
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all positions (official ``AttentionBlock``, legacy head order):
    ``x + proj(attention(qkv(GN(x))))`` with ``channels / head_channels`` heads."""

    def __init__(self, channels: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = channels // head_channels
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, label: torch.Tensor | None = None
                ) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))  # [B, 3C, T], per head [q; k; v] (legacy order)
        q, k, v = qkv.reshape(b * self.heads, 3 * c // self.heads, -1).transpose(1, 2).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c, -1)
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)


class Blocks(nn.ModuleList):
    """Layers applied in order, each given the timestep embedding and the label map."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb, label)
        return x


class InputConv(nn.Conv2d):
    """The encoder's first 3x3 conv (ignores embedding and label map)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, label: torch.Tensor | None = None):
        return super().forward(x)


def resolve_channel_mult(image_size: int, channel_mult: Sequence[float] | str) -> tuple[float, ...]:
    """``"auto"``: the official multipliers for 64/128/256/512 px; else the given list."""
    if channel_mult == "auto":
        if image_size not in OFFICIAL_CHANNEL_MULT:
            raise SynthesizerConfigError(
                f"sdm: no official channel_mult for {image_size} px (official sizes "
                f"{sorted(OFFICIAL_CHANNEL_MULT)}); pass the option channel_mult explicitly")
        return OFFICIAL_CHANNEL_MULT[image_size]
    if isinstance(channel_mult, str) or not channel_mult or any(float(m) <= 0 for m in channel_mult):
        raise SynthesizerConfigError(f"sdm: channel_mult must be 'auto' or a list of positive numbers, got {channel_mult!r}")
    return tuple(float(m) for m in channel_mult)


class SDMUNet(nn.Module):
    """The SDM denoiser: ``(x_t [B,in,H,W], t [B], onehot [B,C,H,W]) -> [B, out, H, W]``."""

    def __init__(
        self,
        image_size: int,
        label_nc: int,
        in_channels: int = 1,
        out_channels: int = 2,
        model_channels: int = 256,
        num_res_blocks: int = 2,
        channel_mult: Sequence[float] | str = "auto",
        attention_resolutions: Sequence[int] = (32, 16, 8),
        num_head_channels: int = 64,
        dropout: float = 0.0,
        norm_groups: int = 32,
        spade_hidden: int = 128,
    ):
        super().__init__()
        mult = resolve_channel_mult(image_size, channel_mult)
        levels = len(mult)
        if image_size % 2 ** (levels - 1):
            raise SynthesizerConfigError(
                f"sdm: image size {image_size} must be a multiple of {2 ** (levels - 1)} ({levels} U-Net levels)")
        widths = [int(m * model_channels) for m in mult]
        for w in widths:
            if w % norm_groups or w % num_head_channels:
                raise SynthesizerConfigError(
                    f"sdm: every level width ({widths}) must be a multiple of norm_groups={norm_groups} "
                    f"and num_head_channels={num_head_channels}")
        # attention at these down-sampling factors (official: image_size // resolution)
        attention_ds = {image_size // int(r) for r in attention_resolutions}
        self.model_channels = model_channels
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def attention(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, num_head_channels, norm_groups)

        ch = widths[0]
        self.input_blocks = nn.ModuleList([Blocks([InputConv(in_channels, ch, 3, padding=1)])])
        skips, ds = [ch], 1
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, width, norm_groups, dropout)]
                ch = width
                if ds in attention_ds:
                    layers.append(attention(ch))
                self.input_blocks.append(Blocks(layers))
                skips.append(ch)
            if level != levels - 1:
                self.input_blocks.append(Blocks([ResBlock(ch, emb_dim, ch, norm_groups, dropout, down=True)]))
                skips.append(ch)
                ds *= 2

        def sdm_block(cin: int, cout: int, up: bool = False) -> SDMResBlock:
            return SDMResBlock(cin, emb_dim, cout, label_nc, norm_groups, spade_hidden, dropout, up=up)

        self.middle_block = Blocks([sdm_block(ch, ch), attention(ch), sdm_block(ch, ch)])
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            for i in range(num_res_blocks + 1):
                layers = [sdm_block(ch + skips.pop(), widths[level])]
                ch = widths[level]
                if ds in attention_ds:
                    layers.append(attention(ch))
                if level and i == num_res_blocks:
                    layers.append(sdm_block(ch, ch, up=True))
                    ds //= 2
                self.output_blocks.append(Blocks(layers))
        self.out = nn.Sequential(GroupNorm32(norm_groups, ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(widths[0], out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(x.dtype))
        hs = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb, label)
            hs.append(h)
        h = self.middle_block(h, emb, label)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, label)
        return self.out(h)
