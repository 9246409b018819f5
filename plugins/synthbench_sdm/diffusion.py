"""SDM's diffusion process: noise schedule and samplers from ``diffusers``, the hybrid loss of
improved DDPM (Nichol & Dhariwal 2021, Sec. 3.1, used by SDM Sec. 3.3) on top of them.

* Schedules: :class:`diffusers.DDPMScheduler` (``linear``: betas 1e-4 .. 0.02 over 1000 steps,
  the official default; ``cosine``: ``squaredcos_cap_v2``, improved DDPM Eq. 17). Its ``betas``
  and ``alphas_cumprod`` give every quantity below; nothing is tabulated by hand.
* Loss: ``L_hybrid = L_simple + lambda * L_vlb`` with ``L_simple = ||eps - eps_theta||^2``
  (mean over pixels) and the learned variance ``Sigma = exp(v log beta_t + (1 - v) log
  beta~_t)``, ``v = (out + 1) / 2`` (improved DDPM Eq. 15). ``L_vlb`` is estimated from the
  sampled t as ``T * L_t`` with ``L_t = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` in bits
  per dimension, and the discretised Gaussian decoder NLL at t = 0 (DDPM Eq. 13); the mean
  enters L_vlb through a stop-gradient (official ``frozen_out``). With T = 1000 and lambda = 1e-3
  this is the official ``loss = mse + vb`` exactly.
* Sampling: :class:`diffusers.DDPMScheduler` (ancestral, learned range variance, x_0 clipped to
  [-1, 1] as the official ``clip_denoised``) or :class:`diffusers.DDIMScheduler` (eta 0) over
  ``steps`` evenly spaced timesteps, with SDM's classifier-free guidance (Sec. 3.4, Eq. 8):
  ``eps = eps(x_t | 0) + s * (eps(x_t | y) - eps(x_t | 0))`` on the noise channel, the variance
  channel from the conditional pass (official ``p_mean_variance``).

``diffusers`` is imported on first use (it pulls in ``torch._dynamo``; plugin discovery stays fast).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
SAMPLERS = ("ddpm", "ddim")
#: Half the width of an 8-bit intensity bin on [-1, 1] (discretised decoder, DDPM Sec. 3.3).
HALF_BIN = 1.0 / 255.0


def make_scheduler(kind: str, train_steps: int, schedule: str):
    """A fresh diffusers scheduler (``kind`` ddpm or ddim) over the training schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler

    common = {"num_train_timesteps": train_steps, "beta_schedule": SCHEDULES[schedule], "beta_start": 1e-4,
              "beta_end": 0.02, "clip_sample": True, "clip_sample_range": 1.0, "prediction_type": "epsilon"}
    if kind == "ddim":
        # set_alpha_to_one: the last step goes to alpha_bar = 1 (official ddim_sample's alpha_bar_prev at t=0)
        return DDIMScheduler(**common, set_alpha_to_one=True, timestep_spacing="leading")
    return DDPMScheduler(**common, variance_type="learned_range", timestep_spacing="leading")


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device)[t].float().reshape(-1, *([1] * (like.dim() - 1)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), element-wise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_nll(x0: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log of the Gaussian mass of x0's 8-bit bin (edge bins open-ended; DDPM Eq. 13), in nats."""
    inv_std = torch.exp(-log_scale)
    upper = inv_std * (x0 - mean + HALF_BIN)
    lower = inv_std * (x0 - mean - HALF_BIN)
    mass = (torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12)
    log_prob = torch.where(x0 < -0.999, torch.special.log_ndtr(upper),
                           torch.where(x0 > 0.999, torch.special.log_ndtr(-lower), torch.log(mass)))
    return -log_prob


class HybridLoss:
    """Improved DDPM's L_hybrid for an epsilon-predicting model with learned range variance."""

    def __init__(self, scheduler, lambda_vlb: float):
        self.scheduler = scheduler
        betas = scheduler.betas.double()
        acp = scheduler.alphas_cumprod.double()
        acp_prev = torch.cat([acp.new_ones(1), acp[:-1]])
        self.num_steps = len(betas)
        self.lambda_vlb = float(lambda_vlb)
        posterior_var = betas * (1 - acp_prev) / (1 - acp)
        # posterior variance is 0 at t = 0: its log is clipped to the t = 1 value (improved DDPM)
        self.posterior_logvar = torch.log(torch.cat([posterior_var[1:2], posterior_var[1:]])).float()
        self.log_betas = torch.log(betas).float()
        self.coef_x0 = (betas * acp_prev.sqrt() / (1 - acp)).float()
        self.coef_xt = ((1 - acp_prev) * (1 - betas).sqrt() / (1 - acp)).float()
        self.recip_sqrt_acp = (1 / acp).sqrt().float()
        self.sqrt_recip_m1 = (1 / acp - 1).sqrt().float()

    def q_sample(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (the scheduler's ``add_noise``)."""
        return self.scheduler.add_noise(x0, noise, t)

    def posterior_mean(self, x0, xt, t):
        return _gather(self.coef_x0, t, xt) * x0 + _gather(self.coef_xt, t, xt) * xt

    def model_logvar(self, v, t):
        """Improved DDPM Eq. 15: interpolate log beta_t and log beta~_t with ``(v + 1) / 2``."""
        frac = (v + 1) / 2
        return frac * _gather(self.log_betas, t, v) + (1 - frac) * _gather(self.posterior_logvar, t, v)

    def vlb_term(self, x0, xt, t, eps, v) -> torch.Tensor:
        """L_t per sample in bits / dim: the KL for t > 0, the decoder NLL for t = 0."""
        pred_x0 = _gather(self.recip_sqrt_acp, t, xt) * xt - _gather(self.sqrt_recip_m1, t, xt) * eps
        model_mean = self.posterior_mean(pred_x0, xt, t)
        model_logvar = self.model_logvar(v, t)
        true_mean = self.posterior_mean(x0, xt, t)
        kl = normal_kl(true_mean, _gather(self.posterior_logvar, t, xt), model_mean, model_logvar)
        nll = discretized_gaussian_nll(x0, model_mean, 0.5 * model_logvar)
        per_dim = torch.where((t == 0).reshape(-1, *([1] * (x0.dim() - 1))), nll, kl)
        return per_dim.flatten(1).mean(1) / math.log(2.0)

    def __call__(self, x0, xt, t, noise, out) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``out``: the network's ``[eps, v]`` channels. Returns the loss and its parts."""
        eps, v = out.float().chunk(2, dim=1)
        mse = ((noise - eps) ** 2).flatten(1).mean(1)
        vb = self.vlb_term(x0, xt, t, eps.detach(), v)  # the vlb trains only the variance
        loss = (mse + self.lambda_vlb * self.num_steps * vb).mean()
        return loss, {"mse": mse.mean().detach(), "vb": vb.mean().detach()}


def sample(
    denoise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    onehot: torch.Tensor,
    sampler: str,
    steps: int,
    train_steps: int,
    schedule: str,
    guidance_scale: float,
) -> torch.Tensor:
    """Draw ``[B, 1, H, W]`` images by reverse diffusion with classifier-free guidance.

    ``denoise(x_t, t, onehot) -> [eps, v]``; the unconditional pass gets an all-zero label map
    (what label-map dropout trains). Both passes run as one doubled batch.
    """
    scheduler = make_scheduler(sampler, train_steps, schedule)
    scheduler.set_timesteps(steps, device=onehot.device)
    b, _, h, w = onehot.shape
    x = torch.randn(b, 1, h, w, device=onehot.device)
    guided = guidance_scale != 1.0
    cond = torch.cat([onehot, torch.zeros_like(onehot)]) if guided else onehot
    for t in scheduler.timesteps:
        tt = t.to(onehot.device).expand(cond.shape[0])
        out = denoise(torch.cat([x, x]) if guided else x, tt, cond).float()
        if guided:
            out_c, out_u = out.chunk(2)
            eps = out_u[:, :1] + guidance_scale * (out_c[:, :1] - out_u[:, :1])
            out = torch.cat([eps, out_c[:, 1:]], dim=1)
        step_kwargs: dict[str, Any] = {"eta": 0.0} if sampler == "ddim" else {}
        model_output = out[:, :1] if sampler == "ddim" else out
        x = scheduler.step(model_output, t, x, **step_kwargs).prev_sample
    return x.clamp(-1.0, 1.0)
