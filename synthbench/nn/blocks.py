"""Generator building blocks shared by several plugins.

* :class:`ResnetBlock`: the residual block of Johnson et al. used by pix2pixHD's global
  generator and local enhancer (baselines.md "pix2pixHD": 9 residual blocks, reflection padding).
* :func:`get_norm_layer`: ``"batch" | "instance" | "none"`` -> a norm-layer factory
  (instance norm without affine parameters, as pix2pix / pix2pixHD / SPADE use it).
* :func:`init_weights`: normal N(0, 0.02) (pix2pix, pix2pixHD) or xavier with gain 0.02 (SPADE).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

NORMS = ("batch", "instance", "none")


def get_norm_layer(norm: str) -> Callable[[int], nn.Module] | None:
    """Factory ``channels -> norm module`` for ``norm`` in :data:`NORMS` (``None`` for "none").

    "batch": ``BatchNorm2d(affine=True)``; "instance": ``InstanceNorm2d(affine=False)``.
    """
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "none":
        return None
    raise ValueError(f"unknown norm {norm!r} (known: {', '.join(NORMS)})")


class ResnetBlock(nn.Module):
    """``x + [pad, conv3x3, norm, ReLU, (dropout), pad, conv3x3, norm](x)`` (Johnson et al. 2016).

    ``padding``: "reflect" (pix2pixHD), "replicate" or "zero". Convs keep their bias unless
    ``bias=False`` (pix2pix with batch norm drops it).
    """

    def __init__(
        self,
        channels: int,
        norm: str = "instance",
        padding: str = "reflect",
        activation: nn.Module | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        layers: list[nn.Module] = []
        for i in range(2):
            pad = 0
            if padding == "reflect":
                layers.append(nn.ReflectionPad2d(1))
            elif padding == "replicate":
                layers.append(nn.ReplicationPad2d(1))
            elif padding == "zero":
                pad = 1
            else:
                raise ValueError(f"unknown padding {padding!r} (reflect, replicate, zero)")
            layers.append(nn.Conv2d(channels, channels, kernel_size=3, padding=pad, bias=bias))
            if norm_layer is not None:
                layers.append(norm_layer(channels))
            if i == 0:
                layers.append(activation if activation is not None else nn.ReLU(True))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


def init_weights(net: nn.Module, kind: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights in place and return ``net``.

    ``kind="normal"``: N(0, gain) (pix2pix / pix2pixHD, gain 0.02); ``"xavier"``: xavier-normal
    with ``gain`` (SPADE, 0.02); ``"kaiming"`` / ``"orthogonal"`` as in the CycleGAN code.
    Biases are zeroed; affine norm layers get weight N(1, gain), bias 0. Spectral-normed convs
    are initialised through their ``weight_orig``.
    """

    def init(m: nn.Module) -> None:
        name = type(m).__name__
        if hasattr(m, "weight") and ("Conv" in name or "Linear" in name):
            weight = getattr(m, "weight_orig", None)
            if weight is None:
                weight = m.weight
            if weight is None:
                return
            if kind == "normal":
                nn.init.normal_(weight, 0.0, gain)
            elif kind == "xavier":
                nn.init.xavier_normal_(weight, gain=gain)
            elif kind == "xavier_uniform":
                nn.init.xavier_uniform_(weight, gain=1.0)
            elif kind == "kaiming":
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
            elif kind == "orthogonal":
                nn.init.orthogonal_(weight, gain=gain)
            else:
                raise ValueError(f"unknown init {kind!r}")
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias, 0.0)
        elif "BatchNorm2d" in name or ("InstanceNorm2d" in name and getattr(m, "affine", False)):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, gain)
                nn.init.constant_(m.bias, 0.0)

    net.apply(init)
    return net
