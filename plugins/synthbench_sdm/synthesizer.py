"""The SDM synthesizer (Wang et al. 2022, arXiv 2207.00050) on synthbench's engine.

Training (official ``image_train.py`` / ``train_util.py`` and ``scripts/ade20k.sh``): two stages,
as the official scripts train then fine-tune:

* ``train``: uniform t in [0, T), ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``, the hybrid
  loss of :mod:`synthbench_sdm.diffusion`; AdamW without weight decay (= Adam, betas 0.9/0.999)
  at 1e-4 (``lr_scale`` 0.5 of the protocol's 2e-4).
* ``finetune``: the same with label-map dropout (``drop_rate`` 0.2: the whole one-hot map of a
  sample is zeroed, official ``preprocess_input``), which teaches the unconditional model of
  classifier-free guidance; 2e-5 (``finetune_lr_scale`` 0.1).

One optimizer ("G"). After each optimizer step the EMA copy ``ema`` (``torch.optim.swa_utils.
AveragedModel``, decay 0.9999) is updated: the code after ``yield`` in :meth:`training_step`
runs once the engine has stepped (the Synthesizer contract). :meth:`generate` samples from the
EMA weights (official ``ema_0.9999_*.pt``) with 1000 ancestral DDPM steps and guidance scale 1.5
(official test scripts); ``sampler`` "ddim" with fewer ``sampling_steps`` is the fast option.

Departures (stated in ``synthbench info sdm``): one gray channel in and out (noise + learned
variance: 2 channels, not 6); one-hot map without an instance-edge channel; the protocol's
learning-rate schedule and precision (official: constant lr, fp16 with loss scaling); the stages
split the protocol's epochs 0.8 / 0.2 (the official scripts fine-tune until stopped by hand); the
EMA decay warms up as ``min(decay, (1 + n) / (10 + n))`` (``ema_warmup``; official: none), because
synthbench's protocols run thousands of steps, not the official hundreds of thousands, and an
EMA at 0.9999 from the first step would still be mostly its random initialisation; one EMA over
both stages (the official fine-tune run restarts it from the raw weights); under the ``fp16``
protocol precision a step the gradient scaler skips still moves the EMA (official: it does not;
synthbench's default precisions, fp32 and bf16, never skip); the t = 0 decoder likelihood uses
the exact normal CDF (official: a tanh approximation, 0.2 % apart).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from synthbench.synthesizer import (
    Batch,
    OptimizerSpec,
    Stage,
    Synthesizer,
    SynthesizerConfigError,
    Update,
)
from synthbench_sdm.diffusion import SAMPLERS, SCHEDULES, HybridLoss, make_scheduler, sample
from synthbench_sdm.unet import SDMUNet

#: Parameter counts of the official ``guided_diffusion.unet.UNetModel`` (WeilunWang/semantic-
#: diffusion-model at 7171f37), built in a scratch folder with the flags of ``scripts/ade20k.sh``
#: (256 channels, 2 res blocks, attention at 32/16/8, 64 channels per head, resblock_updown,
#: scale-shift norm, learn_sigma, no_instance) and counted with ``sum(p.numel())``.
OFFICIAL_COUNTS = {
    "official UNetModel, 4 classes, 1 gray channel in / 2 out, 256 px": 652_127_490,
    "official UNetModel, 4 classes, 1 gray channel in / 2 out, 512 px": 661_165_698,
    "official create_model, 4 classes, RGB (3 in / 6 out), 256 px": 652_141_318,
    "official create_model, ADE20K (151 classes), RGB, 256 px": 660_608_518,
}


def ema_average(decay: float, warmup: bool):
    """``multi_avg_fn`` for AveragedModel: ``ema <- d ema + (1 - d) w``, ``d = min(decay, (1+n)/(10+n))``
    with warm-up, else ``decay``; ``n`` is the number of updates already averaged."""

    def update(ema_params, params, num_averaged) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay
        torch._foreach_lerp_(ema_params, params, 1.0 - d)

    return update


class SDMSynthesizer(Synthesizer):
    """SDM: a diffusion U-Net with the label map injected into every decoder block by SPADE-style
    normalisation, improved-DDPM hybrid loss, EMA weights and classifier-free guidance."""

    name = "sdm"
    summary = ("SDM: denoising diffusion U-Net, label map via spatially-adaptive GroupNorm in every decoder "
               "block, hybrid loss, classifier-free guidance (Wang et al. 2022)")
    citation = (
        "W. Wang, J. Bao, W. Zhou, D. Chen, D. Chen, L. Yuan, H. Li. Semantic Image Synthesis via "
        "Diffusion Models. arXiv:2207.00050, 2022."
    )
    stages = (
        Stage("train", 0.8, "denoising with the hybrid loss, label map always given"),
        Stage("finetune", 0.2, "the same with label-map dropout (classifier-free guidance)"),
    )
    #: CPU-sized protocols (quick, smoke; never the paper protocol): 1/8 width, one res block per
    #: level, no attention on the 32 px feature map of a 64 px image, 10 DDIM steps per sample.
    reduced_options = {
        "model_channels": 32, "num_res_blocks": 1, "num_head_channels": 32, "spade_hidden": 32,
        "attention_resolutions": [16, 8], "sampler": "ddim", "sampling_steps": 10,
    }
    #: Official channel multipliers exist for 64, 128, 256 and 512 px (``channel_mult`` "auto").
    min_size = 64
    size_multiple = 64

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {
            "model_channels": 256,
            "num_res_blocks": 2,
            "channel_mult": "auto",  # official per-size multipliers, or a list
            "attention_resolutions": [32, 16, 8],  # feature-map sides with self-attention
            "num_head_channels": 64,
            "dropout": 0.0,
            "norm_groups": 32,
            "spade_hidden": 128,  # width of the label-map branch of each adaptive norm
            "diffusion_steps": 1000,
            "noise_schedule": "linear",  # linear | cosine
            "lambda_vlb": 0.001,  # improved DDPM's lambda (x T = 1: official loss = mse + vb)
            "drop_rate": 0.2,  # label-map dropout in the finetune stage
            "lr_scale": 0.5,  # 1e-4 at the protocol's 2e-4 (official train lr)
            "finetune_lr_scale": 0.1,  # 2e-5 (official fine-tune lr)
            "betas": (0.9, 0.999),  # AdamW defaults, weight decay 0
            "ema_decay": 0.9999,
            "ema_warmup": True,
            "sampler": "ddpm",  # ddpm | ddim
            "sampling_steps": 1000,
            "guidance_scale": 1.5,
        }

    #: The official configuration (``scripts/ade20k.sh`` and guided-diffusion's defaults).
    paper_options = {
        "model_channels": 256, "num_res_blocks": 2, "channel_mult": "auto", "attention_resolutions": [32, 16, 8],
        "num_head_channels": 64, "dropout": 0.0, "norm_groups": 32, "spade_hidden": 128, "diffusion_steps": 1000,
        "noise_schedule": "linear", "lambda_vlb": 0.001, "drop_rate": 0.2, "lr_scale": 0.5, "finetune_lr_scale": 0.1,
        "betas": (0.9, 0.999), "ema_decay": 0.9999, "ema_warmup": False, "sampler": "ddpm", "sampling_steps": 1000,
        "guidance_scale": 1.5,
    }

    @classmethod
    def departures(cls, options) -> list:
        """The module docstring's departures, one row each (docs/departures.md)."""
        from synthbench.departures import Departure

        return [
            Departure("input and output", "RGB image (3 channels in; 6 out: noise and learned variance per channel)",
                      "one gray channel in, 2 out (noise and learned variance)", "CT slices are single-channel"),
            Departure("label-map input", "one-hot map plus an instance-edge channel", "one-hot map only (no_instance)",
                      "the CT label maps have no instances"),
            Departure("learning-rate schedule and precision", "constant lr; fp16 with loss scaling",
                      "the shared protocol's schedule and precision", "every method trains under the same protocol"),
            Departure("train / fine-tune split", "train, then fine-tune with label dropout until stopped by hand",
                      "two stages of 0.8 / 0.2 of the protocol's epochs", "one run per method under the shared protocol"),
            Departure("EMA warm-up", "none: decay 0.9999 from the first step",
                      "decay min(0.9999, (1 + n) / (10 + n))", "synthbench protocols run thousands of steps, not "
                      "hundreds of thousands; without warm-up the EMA stays near its random initialisation",
                      "ema_warmup"),
            Departure("EMA across stages", "the fine-tune run restarts the EMA from the raw weights",
                      "one EMA over both stages", "one run per method"),
            Departure("EMA on skipped fp16 steps", "a step the gradient scaler skips does not move the EMA",
                      "it does (only under the fp16 protocol precision; fp32 and bf16 never skip)",
                      "the post-step hook runs after every optimizer step the engine makes"),
            Departure("t = 0 decoder likelihood", "tanh approximation of the normal CDF", "the exact normal CDF",
                      "0.2 % apart; torch provides the exact CDF"),
        ]

    # ----------------------------------------------------------------- build
    def build_networks(self) -> dict[str, nn.Module]:
        o = self.options
        if o["noise_schedule"] not in SCHEDULES:
            raise SynthesizerConfigError(f"sdm: noise_schedule must be one of {sorted(SCHEDULES)}, got {o['noise_schedule']!r}")
        if o["sampler"] not in SAMPLERS:
            raise SynthesizerConfigError(f"sdm: sampler must be one of {list(SAMPLERS)}, got {o['sampler']!r}")
        if not 1 <= int(o["sampling_steps"]) <= int(o["diffusion_steps"]):
            raise SynthesizerConfigError(
                f"sdm: sampling_steps must be in [1, diffusion_steps={o['diffusion_steps']}], got {o['sampling_steps']}")
        if not 0.0 <= float(o["drop_rate"]) < 1.0 or float(o["guidance_scale"]) < 0.0:
            raise SynthesizerConfigError("sdm: drop_rate must be in [0, 1) and guidance_scale >= 0")
        if not 0.0 <= float(o["ema_decay"]) < 1.0:
            raise SynthesizerConfigError(f"sdm: ema_decay must be in [0, 1), got {o['ema_decay']}")
        unet = SDMUNet(
            self.image_size, self.num_classes, in_channels=1, out_channels=2,
            model_channels=int(o["model_channels"]), num_res_blocks=int(o["num_res_blocks"]),
            channel_mult=o["channel_mult"], attention_resolutions=o["attention_resolutions"],
            num_head_channels=int(o["num_head_channels"]), dropout=float(o["dropout"]),
            norm_groups=int(o["norm_groups"]), spade_hidden=int(o["spade_hidden"]),
        )
        ema = AveragedModel(unet, multi_avg_fn=ema_average(float(o["ema_decay"]), bool(o["ema_warmup"])))
        ema.requires_grad_(False)  # updated by averaging only (and never wrapped by DDP)
        return {"G": unet, "ema": ema}

    def generator_for(self, stage: str | None = None) -> str:
        return "ema"  # the paper samples from the EMA weights

    def hybrid_loss(self) -> HybridLoss:
        """The training schedule and loss (built on first use; deterministic from the options)."""
        if getattr(self, "_hybrid", None) is None:
            o = self.options
            self._hybrid = HybridLoss(make_scheduler("ddpm", int(o["diffusion_steps"]), o["noise_schedule"]),
                                      float(o["lambda_vlb"]))
        return self._hybrid

    # ----------------------------------------------------------------- train
    def optimizers(self, stage: str) -> dict[str, OptimizerSpec]:
        scale = self.options["finetune_lr_scale"] if stage == "finetune" else self.options["lr_scale"]
        return {"G": OptimizerSpec(tuple(self.nets["G"].parameters()), float(scale), tuple(self.options["betas"]))}

    def training_step(self, stage: str, batch: Batch) -> Iterator[Update]:
        x0, onehot = batch.image.float(), batch.onehot.to(batch.image.dtype)
        b = x0.shape[0]
        if stage == "finetune" and self.options["drop_rate"] > 0:
            keep = (torch.rand(b, 1, 1, 1, device=x0.device) >= self.options["drop_rate"]).to(onehot.dtype)
            onehot = onehot * keep
        hybrid = self.hybrid_loss()
        t = torch.randint(0, hybrid.num_steps, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        xt = hybrid.q_sample(x0, noise, t)
        out = self.train_nets["G"](xt, t, onehot)
        loss, parts = hybrid(x0, xt, t, noise, out)
        yield Update("G", loss, parts)
        # resumed by the engine after the optimizer step: average the stepped weights
        self.nets["ema"].update_parameters(self.nets["G"])

    # ----------------------------------------------------------------- sample
    @torch.no_grad()
    def generate(self, onehot: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """Reverse diffusion from N(0, I) with the EMA weights and classifier-free guidance;
        ``style`` is ignored. Draws noise from torch's global RNG (seed it to repeat a sample)."""
        self.check_input(onehot)
        net = self.nets["ema"].module
        was = net.training
        net.eval()
        o = self.options
        try:
            return sample(net, onehot.float(), o["sampler"], int(o["sampling_steps"]), int(o["diffusion_steps"]),
                          o["noise_schedule"], float(o["guidance_scale"]))
        finally:
            net.train(was)

    def sampling(self) -> dict[str, Any]:
        o = self.options
        guided = float(o["guidance_scale"]) != 1.0
        return {"sampler": o["sampler"], "steps": int(o["sampling_steps"]), "guidance_scale": float(o["guidance_scale"]),
                "network_evaluations": int(o["sampling_steps"]) * (2 if guided else 1), "weights": "ema"}

    def describe(self) -> dict[str, Any]:
        o = self.options
        g = self.nets["G"]
        return {
            "official parameter counts": "; ".join(f"{k}: {v:,}" for k, v in OFFICIAL_COUNTS.items()),
            "this build": f"G {sum(p.numel() for p in g.parameters()):,} parameters ({self.num_classes} classes, "
                          f"{self.image_size} px); ema is its EMA copy (same count, not trained by gradient)",
            "diffusion": f"{o['diffusion_steps']} steps, {o['noise_schedule']} schedule (diffusers), epsilon prediction, "
                         f"learned range variance; L_simple + {o['lambda_vlb']} x L_vlb",
            "sampling": f"{o['sampler']} with {o['sampling_steps']} steps, guidance scale {o['guidance_scale']}, EMA weights "
                        f"(decay {o['ema_decay']}{', warm-up (1+n)/(10+n)' if o['ema_warmup'] else ''})",
            "stages": f"train (lr x {o['lr_scale']}), finetune (lr x {o['finetune_lr_scale']}, label-map dropout "
                      f"{o['drop_rate']})",
            "departures": "1 gray channel (+1 variance channel); no instance-edge channel; protocol lr schedule and "
                          "precision; stages 0.8/0.2 of the epochs; EMA warm-up; one EMA over both stages; exact "
                          "normal CDF in the t=0 decoder term",
        }
