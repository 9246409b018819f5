"""synthbench plugin: pix2pix (Isola et al., CVPR 2017) as the official code builds it.

Facts from ``shared/reference/baselines.md`` ("pix2pix"):

* G: U-Net, ngf 64, encoder 64-128-256-512-512-512-512-512 (4x4 stride-2 convs, LeakyReLU 0.2),
  no norm on the outermost down conv nor on the innermost block, decoder of 4x4 stride-2
  transposed convs with ReLU, skip connections by concatenation, Tanh output, BatchNorm with
  bias-free convs where BatchNorm follows, dropout 0.5 in the inner 512-channel decoder blocks
  (``num_downs - 5`` of them, three for the 8-level U-Net, as the official code builds them).
* D: 70x70 PatchGAN on ``cat(label one-hot, image)`` (:class:`synthbench.nn.NLayerDiscriminator`,
  3 layers, padding 1, BatchNorm), no sigmoid.
* Loss (Eq. 4 of the pix2pix paper): vanilla GAN (BCE with logits) + 100 x L1; D loss
  ``0.5 * (real + fake)``. Init N(0, 0.02). Adam betas (0.5, 0.999).

Image sizes: the number of downsamplings is ``log2(size)`` capped at 8 (the official
``unet_256``); at 512 the default keeps 8 (a 2x2 bottleneck, which the official code allows);
option ``num_downs=9`` builds the 9-level U-Net instead. Any size divisible by ``2**num_downs``
works (sizes with fewer factors of 2 get fewer levels). Departures from the official code: one
gray output channel and a ``num_classes``-channel one-hot input (no RGB).

The synthesizer lives in :mod:`synthbench_pix2pix.model`; this module only registers it.
"""

from synthbench import hookimpl
from synthbench.lazy import lazy_attributes

SYNTHBENCH_API = 1

#: Registered by class path: loading the plugin (every CLI start) does not import torch or the
#: networks; :mod:`synthbench_pix2pix.model` is imported when 'pix2pix' is first used.
_MODEL = "synthbench_pix2pix.model"

__all__ = ["Pix2Pix", "UnetGenerator", "default_num_downs"]


@hookimpl
def register_synthesizers(register):
    register(f"{_MODEL}:Pix2Pix", name="pix2pix")


__getattr__ = lazy_attributes(_MODEL)  # ``from synthbench_pix2pix import ...`` imports the model on first access
