"""The SEAN synthesizer (Zhu et al. 2020) on synthbench's engine.

Training (SEAN Sec. 4, official ``pix2pix_model.py``): the generator reconstructs each real
slice from its label map with the slice itself as style image; per iteration the D step (hinge,
real + fake, averaged over 2 scales) then the G step (hinge G loss + feature matching x 10 /
num_D + VGG19 x 10). TTUR as SPADE: G 0.5x, D 2x the protocol's 2e-4, Adam betas (0, 0.9).

Test time (:meth:`SEANSynthesizer.generate`): without a style image it uses per-class *mean style
codes* of the training set ("mean"), which is what synthesis does for every label map by
default, so SEAN sees only the label map like every other method. With ``style=`` a real slice
(synthesis ``--style real``, opt-in and marked in reports) SEAN encodes it ("reconstruction",
the setting of SEAN's own published comparisons: it sees the answer). The codes live in the generator's buffers
``mean_style`` / ``mean_style_weight``: a bias-corrected exponential moving average (decay
``style_ema_decay`` per batch) of the style codes the encoder produced during training, updated
in :meth:`training_step` with no extra pass and saved with the checkpoint (a moving average,
not a plain mean, because the encoder changes during training). :meth:`fit_mean_styles`
recomputes them exactly with the final encoder over a loader if a caller wants that.
:attr:`last_style_mode` tells which mode the last :meth:`generate` used.

Departures from the official code: one gray style-image channel and one gray output channel;
one style layer (``fc_mu``) per class of the data set instead of always 19 (``style_layers=19``
reproduces the published build; ``describe()`` reports both counts); vectorized per-class
style broadcasting (same result as the official per-pixel ``masked_scatter_``);
``nn.BatchNorm2d(affine=False)`` as parameter-free norm (SyncBatchNorm under DDP via the engine).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from synthbench_spade.networks import UPSAMPLINGS, spade_hidden_width
from synthbench_spade.synthesizer import GANLossMixin, spade_family_departures
from torch import nn

from synthbench.departures import UNSTATED, Departure
from synthbench.nn import MultiscaleDiscriminator, init_weights
from synthbench.synthesizer import Batch, OptimizerSpec, Synthesizer, SynthesizerConfigError, Update
from synthbench_sean.networks import SEANGenerator

#: Reference parameter counts (baselines.md; official ZPdesu/SEAN classes).
REFERENCE_COUNTS = {
    "G as published (4 classes, 19 style layers, RGB style image and output)": 266_458_087,
    "G on CelebAMask-HQ (19 classes, 19 style layers, RGB)": 266_907_367,
    "D (2 scales, 3 layers, all stride 2, 5-channel input)": 1_329_282,
}

#: Style modes of :meth:`SEANSynthesizer.generate` (recorded by synthesis).
STYLE_MODES = {
    "reconstruction": "style codes encoded from the given real slice (SEAN's published setting)",
    "mean": "per-class mean style codes of the training set (no style image)",
}


def build_sean_discriminator(
    in_channels: int, ndf: int = 64, num_D: int = 2, n_layers_D: int = 3, gain: float = 0.02
) -> nn.Module:
    """SEAN's multiscale D (baselines.md): per scale 64 (s2, no norm), 128 (s2), 256 (s2), then
    1 (s1); kernel 4, padding 2; spectral norm + InstanceNorm (no bias) on the middle convs.
    Outputs 34x34 / 18x18 at 256 input."""
    disc = MultiscaleDiscriminator(
        in_channels, num_D=num_D, ndf=ndf, n_layers=n_layers_D - 1, padding=2,
        norm="instance", spectral=True, bias=False, all_stride2=True,
    )
    return init_weights(disc, "xavier", gain)


class SEANSynthesizer(GANLossMixin, Synthesizer):
    """SEAN (Zhu et al., CVPR 2020): region-adaptive style normalization, 2-scale hinge PatchGAN."""

    name = "sean"
    #: CPU-sized protocols (quick, smoke) train this narrower build; the paper protocol never does.
    #: spade_hidden keeps the official 128 here (SPADE's reduced build narrows it to 32): at 32 the
    #: quick run of tests/test_spade_learning.py stopped learning (sample L1 0.198 vs 0.194 untrained).
    reduced_options = {"ngf": 16, "ndf": 16, "style_dim": 64}
    summary = "SEAN: semantic region-adaptive normalization with per-class style codes (Zhu et al. 2020)"
    citation = (
        "P. Zhu, R. Abdal, Y. Qin, P. Wonka. SEAN: Image Synthesis with Semantic "
        "Region-Adaptive Normalization. CVPR 2020."
    )
    #: "normal" upsampling: 5 nearest 2x upsamplings from size / 32 (other options check their own).
    min_size = 32
    size_multiple = 32
    variants = {"published": {"style_layers": 19}}
    #: ``generate`` takes a style image; synthesis passes the real slice only with ``--style real``.
    uses_style = True
    #: What SEAN uses without a style image (recorded by synthesis as its style mode).
    styleless_mode = "mean"
    paper_options = {
        "ngf": 64, "ndf": 64, "spade_hidden": 128, "num_D": 2, "n_layers_D": 3, "num_upsampling_layers": "normal",
        "style_dim": 512, "style_layers": 19, "lambda_feat": 10.0, "lambda_vgg": 10.0,
        "no_ganFeat_loss": False, "no_vgg_loss": False, "no_ttur": False, "init_gain": 0.02,
        "style_ema_decay": UNSTATED,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: "reconstruction" or "mean": the style mode of the last :meth:`generate` call.
        self.last_style_mode: str | None = None

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {
            "ngf": 64,
            "ndf": 64,
            "spade_hidden": 128,  # width of the SPADE branch's shared modulation conv (official nhidden)
            "num_D": 2,
            "n_layers_D": 3,
            "num_upsampling_layers": "normal",
            "style_dim": 512,
            "style_layers": None,  # None: one per class of the data set; 19: the published build
            "lambda_feat": 10.0,
            "lambda_vgg": 10.0,
            "no_ganFeat_loss": False,
            "no_vgg_loss": False,
            "no_ttur": False,
            "init_gain": 0.02,
            "style_ema_decay": 0.999,
        }

    # ----------------------------------------------------------------- networks
    def _generator(self, out_channels: int = 1, style_channels: int = 1, style_layers=None, classes=None):
        o = self.options
        return SEANGenerator(
            classes or self.num_classes, self.image_size, out_channels=out_channels,
            style_channels=style_channels, ngf=int(o["ngf"]), style_layers=style_layers,
            style_dim=int(o["style_dim"]), num_upsampling_layers=o["num_upsampling_layers"],
            spade_hidden=spade_hidden_width(o["spade_hidden"], "sean"),
        )

    def build_networks(self) -> dict[str, nn.Module]:
        o = self.options
        style_layers = o["style_layers"]
        if style_layers is not None and int(style_layers) < self.num_classes:
            raise SynthesizerConfigError(
                f"sean: style_layers={style_layers} is less than the {self.num_classes} classes"
            )
        g = init_weights(self._generator(style_layers=style_layers), "xavier", float(o["init_gain"]))
        g.register_buffer("mean_style", torch.zeros(self.num_classes, int(o["style_dim"])))
        g.register_buffer("mean_style_weight", torch.zeros(self.num_classes))
        d = build_sean_discriminator(
            self.num_classes + 1, int(o["ndf"]), int(o["num_D"]), int(o["n_layers_D"]), float(o["init_gain"])
        )
        return {"G": g, "D": d}

    def optimizers(self, stage: str) -> dict[str, OptimizerSpec]:
        g_params = [p for p in self.nets["G"].parameters() if p.requires_grad]
        return self.ttur(g_params, self.nets["D"].parameters())

    # ----------------------------------------------------------------- mean style codes
    @torch.no_grad()
    def update_mean_styles(self, style: torch.Tensor, present: torch.Tensor, decay: float | None = None) -> None:
        """Bias-corrected EMA of the per-class codes of one batch (``style [B, C, S]``,
        ``present [B, C]`` bool); classes absent from the batch are left as they are."""
        g = self.nets["G"]
        decay = float(self.options["style_ema_decay"]) if decay is None else decay
        present = present.to(style.dtype)
        count = present.sum(0)  # [C]
        batch_mean = (style.float() * present.unsqueeze(-1)).sum(0) / count.clamp(min=1).unsqueeze(-1)
        seen = (count > 0).to(g.mean_style.dtype)
        keep = 1.0 - (1.0 - decay) * seen  # decay where seen, 1 elsewhere
        g.mean_style.mul_(keep.unsqueeze(-1)).add_((1.0 - keep).unsqueeze(-1) * batch_mean.to(g.mean_style))
        g.mean_style_weight.mul_(keep).add_(1.0 - keep)

    def mean_styles(self) -> torch.Tensor:
        """Per-class mean style codes ``[C, S]`` (zero for a class never seen in training)."""
        g = self.nets["G"]
        return g.mean_style / g.mean_style_weight.clamp(min=1e-12).unsqueeze(-1)

    @torch.no_grad()
    def fit_mean_styles(self, batches: Iterable[Batch], device: torch.device | str | None = None) -> torch.Tensor:
        """Exact per-class mean style codes of the final encoder over ``batches`` (replaces the
        training-time moving average); returns them."""
        g = self.nets["G"]
        device = device or g.mean_style.device
        total = torch.zeros_like(g.mean_style)
        count = torch.zeros_like(g.mean_style_weight)
        was = g.training
        g.eval()
        try:
            for batch in batches:
                batch = batch.to(device)
                style, present = g.Zencoder(batch.image, batch.onehot, return_present=True)
                total += (style.float() * present.unsqueeze(-1)).sum(0)
                count += present.float().sum(0)
        finally:
            g.train(was)
        g.mean_style.copy_(total / count.clamp(min=1).unsqueeze(-1))
        g.mean_style_weight.copy_((count > 0).float())
        return self.mean_styles()

    # ----------------------------------------------------------------- training
    def training_step(self, stage: str, batch: Batch) -> Iterator[Update]:
        onehot, real = batch.onehot, batch.image
        fake, style, present = self.train_nets["G"](onehot, style_image=real, return_style=True)
        self.update_mean_styles(style.detach(), present)
        yield self.d_update(onehot, fake, real)
        losses = self.g_losses(onehot, fake, real)
        yield Update("G", sum(losses.values()), {k: v.detach() for k, v in losses.items()})

    @torch.no_grad()
    def generate(self, onehot: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """``style=None``: per-class mean style codes ("mean"); ``style=[B, 1, H, W]`` real slice:
        its own codes ("reconstruction"), a class absent from it falls back to the mean code."""
        self.check_input(onehot)
        g = self.nets["G"]
        was = g.training
        g.eval()
        try:
            means = self.mean_styles().to(onehot.device).unsqueeze(0)
            if style is None:
                codes = means.expand(onehot.shape[0], -1, -1)
                self.last_style_mode = "mean"
            else:
                codes, present = g.Zencoder(style, onehot, return_present=True)
                codes = torch.where(present.unsqueeze(-1), codes, means.to(codes.dtype))
                self.last_style_mode = "reconstruction"
            return g(onehot, style=codes)
        finally:
            g.train(was)

    # ----------------------------------------------------------------- info
    @classmethod
    def departures(cls, options) -> list[Departure]:
        return [
            *spade_family_departures("SEAN"),
            Departure("style layers per SEAN norm", "19 fc_mu layers always (CelebAMask-HQ), the first C used",
                      "one per class of the data set", "the unused layers only add parameters; info reports both "
                      "counts", "style_layers"),
            Departure("style image", "RGB", "one gray channel", "CT slices are gray"),
            Departure("test-time style", "SEAN's published comparisons reconstruct each test image from its own "
                      "style codes", "per-class mean style codes of the training set for every label map",
                      "a fair comparison: the other methods see only the label map; reconstruction stays available "
                      "(marked in reports)", "synthesize --style real"),
            Departure("mean style codes", "no mean-code mode in the official code",
                      "a bias-corrected moving average (decay style_ema_decay per batch) of the codes the encoder "
                      "produced during training, saved with the weights (fit_mean_styles recomputes them exactly)",
                      "no extra pass over the training set; the encoder changes during training", "style_ema_decay"),
        ]

    def published_counts(self) -> dict[str, int]:
        """G counts of the published 19-style-layer build and of this per-dataset build."""
        with torch.device("meta"):
            published_rgb = self._generator(3, 3, style_layers=max(19, self.num_classes))
            published_gray = self._generator(1, 1, style_layers=max(19, self.num_classes))
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {
            "published build (19 style layers, RGB)": count(published_rgb),
            "19 style layers, gray": count(published_gray),
            "per-dataset build (this instance)": count(self.nets["G"]),
        }

    def describe(self) -> dict[str, Any]:
        o = self.options
        counts = self.published_counts()
        layers = self.nets["G"].head_0.ace_0.fc_mu
        styled = sum(1 for m in self.nets["G"].modules() if getattr(m, "use_style", False))
        return {
            "reference counts": ", ".join(f"{k}: {v:,}" for k, v in REFERENCE_COUNTS.items()),
            "G, published 19-layer build": f"{counts['published build (19 style layers, RGB)']:,} "
            f"(RGB style image and output, {self.num_classes}-class input); with gray I/O "
            f"{counts['19 style layers, gray']:,}",
            "G, per-dataset build": f"{counts['per-dataset build (this instance)']:,} ({len(layers)} style layers "
            f"fc_mu per SEAN norm, gray style image and output)",
            "difference": f"{styled} SEAN norms x ({max(19, self.num_classes)} - {len(layers)}) fc_mu layers x "
            f"{o['style_dim']}x{o['style_dim']}+{o['style_dim']} parameters, plus the RGB vs gray first style conv "
            "and output conv; the official code builds 19 fc_mu layers always and uses only as many as classes",
            "blocks": "head_0, G_middle_0/1, up_0, up_1, up_2 use SEAN (style + SPADE blend); "
            "up_3 (2nf -> nf, 128 -> 64) uses plain SPADE modulation, as the official code (use_rgb=False)",
            "upsampling": f"{o['num_upsampling_layers']} ({UPSAMPLINGS[o['num_upsampling_layers']]} nearest 2x upsamplings)",
            "SPADE branch": f"label map -> shared 3x3 conv to {o['spade_hidden']} + ReLU -> 3x3 convs to gamma, beta "
            "(spade_hidden; official nhidden 128)",
            "style modes": "; ".join(f"{k}: {v}" for k, v in STYLE_MODES.items()),
            "losses": "hinge (mean over scales) + feature matching x {lambda_feat} / num_D + VGG19 x {lambda_vgg}".format(**o),
            "optimizers": "equal lr, betas (0.5, 0.999) (no_ttur)" if o["no_ttur"]
            else "TTUR: G 0.5x, D 2x base lr (1e-4 / 4e-4 at 2e-4), betas (0, 0.9)",
        }


__all__ = ["SEANSynthesizer", "STYLE_MODES", "build_sean_discriminator"]
