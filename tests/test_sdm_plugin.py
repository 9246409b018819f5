"""SDM (issue 19): the plugin passes the conformance kit, its U-Net matches the official parameter
counts and structure, the hybrid loss is built from the diffusers scheduler's own quantities,
guidance and label-map dropout do what the paper says, and the EMA follows the engine's steps."""

from __future__ import annotations

import pytest
import torch
from synthbench_sdm.diffusion import (
    HybridLoss,
    discretized_gaussian_nll,
    make_scheduler,
    normal_kl,
    sample,
)
from synthbench_sdm.synthesizer import OFFICIAL_COUNTS, SDMSynthesizer
from synthbench_sdm.unet import SDMResBlock, SDMUNet, SpatiallyAdaptiveGroupNorm

from synthbench.engine import load_synthesizer, train
from synthbench.plugins import get_registry
from synthbench.synthesizer import Batch, SynthesizerConfigError, one_hot
from synthbench.testing import check_synthesizer, tiny_batch, write_tiny_dataset

#: A few thousand parameters: every block type of the official U-Net, CPU-cheap.
TINY = {"model_channels": 8, "norm_groups": 4, "num_res_blocks": 1, "num_head_channels": 8, "spade_hidden": 8,
        "attention_resolutions": [16, 8], "sampler": "ddim", "sampling_steps": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_sdm_is_registered_and_passes_the_kit(tmp_path):
    assert get_registry().synthesizer("sdm") is SDMSynthesizer
    results = check_synthesizer(SDMSynthesizer, classes=(3,), sizes=(64,), options=TINY, workdir=tmp_path)
    assert all(r.error is None for r in results)


@pytest.mark.parametrize(("size", "key"), [
    (256, "official UNetModel, 4 classes, 1 gray channel in / 2 out, 256 px"),
    (512, "official UNetModel, 4 classes, 1 gray channel in / 2 out, 512 px"),
])
def test_default_build_has_the_official_parameter_count(size, key):
    """The official classes were built in a scratch folder (never committed); see OFFICIAL_COUNTS."""
    with torch.device("meta"):
        synth = SDMSynthesizer(4, size)
    counts = synth.parameter_counts()
    assert counts["G"] == OFFICIAL_COUNTS[key]
    assert counts["ema"] == counts["G"]
    assert f"{OFFICIAL_COUNTS[key]:,}" in synth.describe()["official parameter counts"]


def test_rgb_build_matches_the_official_ade20k_model():
    with torch.device("meta"):
        unet = SDMUNet(256, 151, in_channels=3, out_channels=6)
    assert sum(p.numel() for p in unet.parameters()) == OFFICIAL_COUNTS["official create_model, ADE20K (151 classes), RGB, 256 px"]


def test_label_map_enters_every_decoder_block_and_never_the_encoder():
    torch.manual_seed(0)
    unet = SDMUNet(64, 3, model_channels=8, norm_groups=4, num_head_channels=8, spade_hidden=8, num_res_blocks=1)
    assert not any(isinstance(m, SpatiallyAdaptiveGroupNorm) for m in unet.input_blocks.modules())
    for block in [unet.middle_block, *unet.output_blocks]:
        assert any(isinstance(m, SDMResBlock) for m in block)
    for p in unet.parameters():  # leave the zero initialisation so that every path carries signal
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(1, 1, 64, 64), torch.tensor([500])
    seg_a, seg_b = (one_hot(torch.randint(0, 3, (1, 64, 64)), 3) for _ in range(2))
    encoder = []
    hooks = [b.register_forward_hook(lambda m, i, o: encoder.append(o)) for b in unet.input_blocks]
    out_a, out_b = unet(x, t, seg_a), unet(x, t, seg_b)
    for h in hooks:
        h.remove()
    n = len(unet.input_blocks)
    assert all(torch.equal(a, b) for a, b in zip(encoder[:n], encoder[n:], strict=True))
    assert not torch.allclose(out_a, out_b)
    assert out_a.shape == (1, 2, 64, 64)  # gray noise + learned variance


def test_bad_options_and_sizes_are_refused():
    with pytest.raises(SynthesizerConfigError, match="no official channel_mult for 96"):
        SDMSynthesizer(4, 96, TINY)
    for bad in ({"sampler": "euler"}, {"sampling_steps": 0}, {"noise_schedule": "sigmoid"}, {"drop_rate": 1.0},
                {"model_channels": 12}):
        with pytest.raises(SynthesizerConfigError):
            SDMSynthesizer(4, 64, {**TINY, **bad})


# --------------------------------------------------------------------------- diffusion
def test_loss_terms_use_the_scheduler_posterior():
    """Posterior mean and learned-range variance equal those diffusers' DDPM step samples from."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, variance_type="learned_range", clip_sample=False)
    hybrid = HybridLoss(sched, 1e-3)
    torch.manual_seed(0)
    xt, eps, v = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8), torch.rand(1, 1, 8, 8) * 2 - 1
    for step in (1, 40, 999):
        t = torch.tensor([step])
        pred_x0 = hybrid.recip_sqrt_acp[step] * xt - hybrid.sqrt_recip_m1[step] * eps
        mean, logvar = hybrid.posterior_mean(pred_x0, xt, t), hybrid.model_logvar(v, t)
        torch.testing.assert_close(logvar, sched._get_variance(step, predicted_variance=v), rtol=1e-4, atol=1e-5)
        prev = sched.step(torch.cat([eps, v], 1), step, xt, generator=torch.Generator().manual_seed(1)).prev_sample
        noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(prev, mean + torch.exp(0.5 * logvar) * noise, rtol=1e-4, atol=1e-5)


def test_kl_and_decoder_nll_match_torch_distributions():
    from torch.distributions import Normal, kl_divergence

    m1, m2, lv1, lv2 = torch.randn(4, 5).unbind(0)
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected)
    x0 = torch.tensor([-1.0, -0.5, 0.0, 0.7, 1.0])
    mean, log_scale = 0.9 * x0 + 0.05, torch.full_like(x0, -2.0)
    d = Normal(mean.double(), log_scale.double().exp())
    interior = -torch.log(d.cdf(x0 + 1 / 255) - d.cdf(x0 - 1 / 255))
    edges = torch.stack([-torch.log(d.cdf(x0[0] + 1 / 255)[0]), -torch.log(1 - d.cdf(x0[4] - 1 / 255)[4])])
    nll = discretized_gaussian_nll(x0, mean, log_scale)
    torch.testing.assert_close(nll[1:4], interior[1:4].float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(nll[[0, 4]], edges.float(), rtol=1e-4, atol=1e-5)


def test_hybrid_loss_of_a_perfect_model_is_only_the_t0_term():
    """eps exact and v = -1 (the posterior variance): L_simple = 0 and L_t = 0 for every t > 0."""
    hybrid = HybridLoss(make_scheduler("ddpm", 1000, "linear"), 1e-3)
    torch.manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    noise, t = torch.randn_like(x0), torch.tensor([1, 10, 500, 999])
    xt = hybrid.q_sample(x0, noise, t)
    loss, parts = hybrid(x0, xt, t, noise, torch.cat([noise, -torch.ones_like(noise)], 1))
    assert float(parts["mse"]) == 0.0 and abs(float(parts["vb"])) < 1e-3 and abs(float(loss)) < 1e-3
    wrong = torch.cat([noise + 0.5, -torch.ones_like(noise)], 1)
    loss_wrong, parts_wrong = hybrid(x0, xt, t, noise, wrong)
    assert float(parts_wrong["mse"]) == pytest.approx(0.25) and float(parts_wrong["vb"]) > 0.01
    # lambda * T = 1 at T = 1000: official loss = mse + vb
    assert float(loss_wrong) == pytest.approx(float(parts_wrong["mse"] + parts_wrong["vb"]), rel=1e-5)


def test_classifier_free_guidance_combines_the_two_passes():
    """eps = eps(x|0) + s (eps(x|y) - eps(x|0)); the unconditional half gets an all-zero map."""
    onehot = one_hot(torch.randint(0, 3, (2, 8, 8)), 3)
    seen = []

    def two_pass(x, t, cond):
        seen.append(cond)
        eps = torch.where(cond.sum(1, keepdim=True) > 0, 1.0, 0.2).expand_as(x)
        return torch.cat([eps, torch.zeros_like(x)], 1)

    def guided_eps(x, t, cond):
        return torch.cat([torch.full_like(x, 0.2 + 1.5 * (1.0 - 0.2)), torch.zeros_like(x)], 1)

    for sampler in ("ddpm", "ddim"):
        torch.manual_seed(3)
        a = sample(two_pass, onehot, sampler, 4, 1000, "linear", 1.5)
        torch.manual_seed(3)
        b = sample(guided_eps, onehot, sampler, 4, 1000, "linear", 1.0)
        torch.testing.assert_close(a, b)
    assert all(c.shape[0] == 4 and torch.equal(c[:2], onehot) and not c[2:].any() for c in seen)


def test_label_map_dropout_only_in_the_finetune_stage():
    synth = SDMSynthesizer(3, 64, {**TINY, "drop_rate": 0.5})
    seen = []
    net = synth.train_nets["G"]
    synth.train_nets["G"] = lambda x, t, cond: (seen.append(cond.flatten(1).sum(1)), net(x, t, cond))[1]
    image, label = tiny_batch(3, 64, 2)
    batch = Batch(image.repeat(8, 1, 1, 1), label.repeat(8, 1, 1), 3)
    torch.manual_seed(0)
    for stage in ("train", "finetune"):
        next(synth.training_step(stage, batch))
    assert bool((seen[0] > 0).all())
    assert 0 < int((seen[1] == 0).sum()) < 16 and bool(((seen[1] == 0) | (seen[1] == 64 * 64)).all())


# --------------------------------------------------------------------------- EMA
def test_ema_is_updated_after_each_engine_step_and_used_by_generate(tmp_path):
    """The contract: the engine resumes training_step after the optimizer step, so the EMA
    averages the stepped weights (decay 0: the EMA equals them); generate samples the EMA."""
    data = write_tiny_dataset(tmp_path / "data", 3, 64, count=2)
    result = train("sdm", data, tmp_path / "run", protocol="smoke", options={**TINY, "ema_decay": 0.0},
                   overrides={"max_steps": None, "epochs": 1, "batch_size": 2, "sample_every_epoch": False},
                   show_progress=False)
    synth = result.synthesizer
    assert result.steps == 2 and int(synth.nets["ema"].n_averaged) == 2
    g, ema = synth.nets["G"].state_dict(), synth.nets["ema"].module.state_dict()
    assert all(torch.equal(g[k], ema[k]) for k in g)
    reloaded = load_synthesizer(result.run_dir)
    assert int(reloaded.nets["ema"].n_averaged) == 2  # the EMA is part of the saved weights
    onehot = one_hot(tiny_batch(3, 64, 1)[1], 3)
    torch.manual_seed(5)
    before = reloaded.generate(onehot)
    with torch.no_grad():
        for p in reloaded.nets["G"].parameters():
            p.add_(1.0)
    torch.manual_seed(5)
    assert torch.equal(before, reloaded.generate(onehot))


def test_ema_warmup_and_decay():
    synth = SDMSynthesizer(3, 64, TINY)
    ema, g = synth.nets["ema"], synth.nets["G"]
    w0 = next(g.parameters()).detach().clone()
    ema.update_parameters(g)  # first update copies
    with torch.no_grad():
        next(g.parameters()).add_(1.0)
    ema.update_parameters(g)  # n = 1: decay min(0.9999, 2 / 11)
    d = 2 / 11
    torch.testing.assert_close(next(ema.module.parameters()), d * w0 + (1 - d) * (w0 + 1.0))
    plain = SDMSynthesizer(3, 64, {**TINY, "ema_warmup": False, "ema_decay": 0.9})
    ema, g = plain.nets["ema"], plain.nets["G"]
    ema.update_parameters(g)
    w0 = next(g.parameters()).detach().clone()
    with torch.no_grad():
        next(g.parameters()).add_(1.0)
    ema.update_parameters(g)  # no warm-up: decay 0.9 from the start
    torch.testing.assert_close(next(ema.module.parameters()), w0 + 0.1)


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 10), ("ddpm", 50), ("ddpm", 1000)])
def test_samplers_recover_the_image_of_an_exact_denoiser(sampler, steps):
    """With the exact noise prediction of a one-image data set, every sampler ends on that image
    (DDIM deterministically; DDPM's noise is removed by the exact x_0 prediction)."""
    target = torch.linspace(-0.9, 0.9, 64).reshape(1, 1, 8, 8)
    abar = make_scheduler("ddpm", 1000, "linear").alphas_cumprod

    def exact(x, t, cond):
        a = abar[t].reshape(-1, 1, 1, 1)
        return torch.cat([(x - a.sqrt() * target) / (1 - a).sqrt(), torch.zeros_like(x)], 1)

    torch.manual_seed(0)
    out = sample(exact, torch.ones(1, 2, 8, 8), sampler, steps, 1000, "linear", 1.5)
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)
