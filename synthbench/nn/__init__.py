"""Building blocks shared by several synthesizer plugins (baselines.md; pix2pixHD Sec. 3).

* :mod:`~synthbench.nn.discriminators`: :class:`NLayerDiscriminator` (PatchGAN) and
  :class:`MultiscaleDiscriminator` (returns per-scale feature lists).
* :mod:`~synthbench.nn.losses`: :func:`gan_loss` (vanilla / lsgan / hinge, over scales),
  :func:`discriminator_loss`, :func:`feature_matching_loss`, :class:`VGGLoss` (VGG19
  perceptual loss with offline weights from :mod:`synthbench.pretrained`, fed the official
  input by :func:`perceptual_input`).
* :mod:`~synthbench.nn.blocks`: :class:`ResnetBlock`, :func:`get_norm_layer`,
  :func:`init_weights` (normal 0.02 / xavier gain 0.02).

Example (pix2pixHD)::

    D = MultiscaleDiscriminator(C + 1, num_D=2, n_layers=3, padding=2, norm="instance")
    pf, pr = D(torch.cat([onehot, fake], 1)), D(torch.cat([onehot, real], 1))
    g = gan_loss(pf, True, "lsgan") + 10 * feature_matching_loss(pf, pr, 4 / (3 + 1))
"""

from synthbench.nn.blocks import ResnetBlock, get_norm_layer, init_weights
from synthbench.nn.discriminators import MultiscaleDiscriminator, NLayerDiscriminator, padding_for
from synthbench.nn.losses import (
    GAN_MODES,
    VGG_LAYERS,
    VGG_WEIGHTS,
    VGGLoss,
    discriminator_loss,
    feature_matching_loss,
    gan_loss,
    perceptual_input,
)

__all__ = [
    "GAN_MODES",
    "VGG_LAYERS",
    "VGG_WEIGHTS",
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "ResnetBlock",
    "VGGLoss",
    "discriminator_loss",
    "feature_matching_loss",
    "gan_loss",
    "get_norm_layer",
    "init_weights",
    "padding_for",
    "perceptual_input",
]
