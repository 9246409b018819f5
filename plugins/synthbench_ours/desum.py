"""DESUM, the dynamic element-wise sum of the global and local generator features (paper eq. 1).

    F_out = alpha * F_local + (1 - alpha) * F_global,   alpha = sigmoid(W(F_local)) in (0, 1)

one alpha per sample, predicted by a weighting network W of 3 conv layers and 2 fully connected
layers with global average pooling between them (paper: "3 conv layers + 2 fully connected
layers that look at G2's feature"). F_out feeds G2's residual blocks.

How F_global is brought to F_local's size and channels (the paper only says "an output feature
map of G1's upsampling path"); option ``global_feature``:

* ``"last"`` (default): the output of G1's upsampling path, i.e. its last upsampling feature
  (64 channels at G1's resolution = half of G2's). A learned 1x1 conv maps it to F_local's 128
  channels, then it is resized x2 (``global_upsample``: bilinear by default, or nearest). This is
  pix2pixHD's choice (the global generator's final features, before its image head) and keeps
  every layer of G1's upsampling path in use.
* ``"penultimate"``: the 128-channel upsampling feature (a quarter of G2's resolution), resized
  x4; its channels already match F_local, so no conv is needed.

The resize and 1x1 conv live in this module (``adapter``) so that the counts of G1 and G2 stay
those of the paper's generators. ``mode`` (option ``fusion``): ``"desum"`` (eq. 1, learned
alpha), ``"fixed"`` (alpha a constant, Table V "fixed alpha = 0.5"), ``"sum"`` (F_local + F_global,
pix2pixHD's plain element-wise sum: Table V "w/o DESUM"). ``source`` (option ``desum_input``):
alpha from F_local (paper) or from the adapted F_global (Table V "weight from F_global").
Alpha is trained with the generator objective (its parameters are in G's optimizer): it only
mixes two feature maps, so no weighting of the loss can be gamed through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FUSIONS = ("desum", "fixed", "sum")


class WeightingNetwork(nn.Module):
    """3 x (3x3 stride-2 conv + ReLU) -> global average pool -> FC + ReLU -> FC -> sigmoid, per sample."""

    def __init__(self, in_channels: int, hidden: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for _ in range(3):
            layers += [nn.Conv2d(ch, hidden, 3, stride=2, padding=1), nn.ReLU(True)]
            ch = hidden
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.ReLU(True), nn.Linear(hidden // 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(self.convs(x), 1).flatten(1)
        return torch.sigmoid(self.fc(h)).view(-1)


class DESUM(nn.Module):
    """Fuse a coarser generator's feature into a finer one's F_local (eq. 1); returns (F_out, alpha [B])."""

    def __init__(
        self,
        global_channels: int,
        local_channels: int,
        mode: str = "desum",
        source: str = "local",
        hidden: int = 64,
        fixed_alpha: float = 0.5,
        upsample: str = "bilinear",
    ):
        super().__init__()
        if mode not in FUSIONS:
            raise ValueError(f"unknown fusion {mode!r} (known: {', '.join(FUSIONS)})")
        if source not in ("local", "global"):
            raise ValueError(f"unknown DESUM input {source!r} (known: local, global)")
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"unknown upsampling {upsample!r} (known: bilinear, nearest)")
        if not 0.0 < fixed_alpha < 1.0 and mode == "fixed":
            raise ValueError(f"fixed alpha must lie in (0, 1), got {fixed_alpha}")
        self.mode, self.source, self.upsample, self.fixed_alpha = mode, source, upsample, float(fixed_alpha)
        self.adapter = nn.Identity() if global_channels == local_channels else nn.Conv2d(global_channels, local_channels, 1)
        self.weighting = WeightingNetwork(local_channels, hidden) if mode == "desum" else None

    def adapt(self, f_global: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """F_global -> F_local's channels (1x1 conv if needed) and spatial size (resize)."""
        g = self.adapter(f_global)
        if g.shape[-2:] != size:
            kw = {"align_corners": False} if self.upsample == "bilinear" else {}
            g = F.interpolate(g, size=size, mode=self.upsample, **kw)
        return g

    def forward(self, f_local: torch.Tensor, f_global: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = self.adapt(f_global, f_local.shape[-2:])
        if self.mode == "sum":
            return f_local + g, None
        if self.mode == "fixed":
            alpha = f_local.new_full((f_local.shape[0],), self.fixed_alpha)
        else:
            alpha = self.weighting(f_local if self.source == "local" else g)
        a = alpha.view(-1, 1, 1, 1).to(f_local.dtype)
        return a * f_local + (1 - a) * g, alpha
