"""2D U-Net for the downstream segmentation experiment (paper Sec. "Evaluation", Tables III/IV).

Architecture after Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation" (MICCAI 2015): a contracting path of ``depth`` 2x2 max-pool steps, each level
two 3x3 convolutions + ReLU, channel count doubling per level from ``width`` (original: depth 4,
width 64); an expanding path of 2x2 up-convolutions (transposed, halving the channels),
concatenation with the skip feature, two 3x3 convolutions; a final 1x1 convolution to the class
scores.

Documented deviations from the 2015 paper (both common practice and options here):

* ``padding=1`` ("same") convolutions instead of unpadded ones, so the output has the input's
  size and no overlap-tile cropping is needed;
* ``batch_norm=True`` inserts BatchNorm after each convolution (the "BatchNorm variant"),
  which makes the small-batch training of the fixed protocol stable. ``batch_norm=False`` is
  the original conv-ReLU block.
"""

from __future__ import annotations

import torch
from torch import nn

from synthbench.errors import SynthbenchError


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (BatchNorm and) ReLU: one U-Net level."""

    def __init__(self, cin: int, cout: int, batch_norm: bool = True):
        layers: list[nn.Module] = []
        for c_in in (cin, cout):
            layers.append(nn.Conv2d(c_in, cout, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) mapping ``[B, in_channels, H, W]`` to ``[B, num_classes, H, W]`` logits.

    ``H`` and ``W`` must be divisible by ``2 ** depth``.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, depth: int = 4, width: int = 64, batch_norm: bool = True):
        super().__init__()
        if depth < 1 or width < 1 or num_classes < 2:
            raise SynthbenchError(f"U-Net needs depth >= 1, width >= 1 and >= 2 classes (got depth={depth}, width={width}, classes={num_classes})")
        self.depth = depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([DoubleConv(in_channels, chans[0], batch_norm)])
        self.down.extend(DoubleConv(chans[i], chans[i + 1], batch_norm) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth)))
        self.up_conv = nn.ModuleList(DoubleConv(2 * chans[i], chans[i], batch_norm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2**self.depth or w % 2**self.depth:
            raise SynthbenchError(f"U-Net of depth {self.depth}: image size {h}x{w} is not divisible by {2**self.depth}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, conv in zip(self.up, self.up_conv, strict=True):
            x = conv(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
