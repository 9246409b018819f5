"""Unit tests of the paper's model ("ours"): networks, DESUM (eq. 1), DFM (eq. 4), stages, variants.

Training is driven by hand here (Adam per OptimizerSpec, one step per Update), independent of the
engine; tests/test_ours_engine.py covers training through synthbench.engine.
"""

from __future__ import annotations

import pytest
import torch
from synthbench_ours import Ours
from synthbench_ours.dfm import DFMNetwork, feature_distance, weight_objective
from synthbench_ours.networks import PatchDiscriminator

from synthbench import Batch, SynthesizerConfigError

TINY = {"ngf": 8, "ndf": 8, "n_blocks": 2, "desum_channels": 16, "dfm_channels": 16}


def conv(k: int, cin: int, cout: int, bias: bool = True) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def make_batch(seed: int, size: int = 64, n: int = 2, classes: int = 4) -> Batch:
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):  # blocky label maps (a few rectangles per class), not per-pixel noise
        for c in range(1, classes):
            y, x = torch.randint(0, size - size // 4, (2,), generator=g).tolist()
            h, w = torch.randint(size // 8, size // 3, (2,), generator=g).tolist()
            label[i, y : y + h, x : x + w] = c
    image = (label.float() / (classes - 1)) * 1.6 - 0.8 + 0.05 * torch.randn(n, size, size, generator=g)
    return Batch(image=image.clamp(-1, 1).unsqueeze(1), label=label, num_classes=classes)


def drive(synth: Ours, stage: str, batch: Batch, optimizers: dict | None = None):
    """One training iteration by hand: zero_grad / backward / step per Update, like the engine."""
    if optimizers is None:
        optimizers = {k: torch.optim.Adam(s.params, lr=2e-4, betas=s.betas) for k, s in synth.optimizers(stage).items()}
    updates = []
    for u in synth.training_step(stage, batch):
        assert u.optimizer in optimizers, (stage, u.optimizer)
        assert torch.isfinite(u.loss).all()
        optimizers[u.optimizer].zero_grad(set_to_none=True)
        u.loss.backward()
        optimizers[u.optimizer].step()
        updates.append(u)
    return updates, optimizers


# ---------------------------------------------------------------------------- parameter counts
def test_parameter_counts_at_512_match_the_paper_architecture():
    c = 4
    counts = Ours.variant_parameter_counts(c, 512, None)
    g1 = (conv(7, c, 64) + conv(3, 64, 128) + conv(3, 128, 256) + conv(3, 256, 512) + 18 * conv(3, 512, 512)
          + conv(3, 512, 256) + conv(3, 256, 128) + conv(3, 128, 64) + conv(7, 64, 1))
    g2 = conv(7, c, 64) + conv(3, 64, 128) + 18 * conv(3, 128, 128) + conv(3, 128, 128) + conv(7, 128, 64) + conv(7, 64, 1)
    d = conv(4, c + 1, 64) + conv(4, 64, 128) + conv(4, 128 + c, 256) + conv(4, 256, 512) + conv(4, 512, 1)
    desum = conv(1, 64, 128) + conv(3, 128, 64) + 2 * conv(3, 64, 64) + (64 * 32 + 32) + (32 + 1)
    dfm = conv(3, 128, 64) + conv(3, 64, 64) + (64 + 1)
    assert counts == {"G1": g1, "G2": g2, "DESUM": desum, "D1": d, "D2": d, "DFM": dfm}
    assert counts["G1"] == 45_590_209 and counts["G2"] == 3_295_169
    with torch.device("meta"):  # the literal reading's 1x1 image projection (option)
        literal = Ours(c, 512, options={"g2_output_kernel": 1}).parameter_counts()
    assert literal["G2"] == g2 - conv(7, 64, 1) + conv(1, 64, 1)
    # Without the "Concat" re-injection each D is exactly one scale of pix2pixHD's D
    # (baselines.md: 2 scales, 3 layers = 5,533,570 for a 4-class input).
    plain = sum(p.numel() for p in PatchDiscriminator(c, concat="none").parameters())
    assert 2 * plain == 5_533_570


def test_every_variant_has_its_networks_at_512():
    expected = {
        None: {"G1", "G2", "DESUM", "D1", "D2", "DFM"},
        "no_desum": {"G1", "G2", "DESUM", "D1", "D2", "DFM"},
        "fixed_alpha": {"G1", "G2", "DESUM", "D1", "D2", "DFM"},
        "desum_from_global": {"G1", "G2", "DESUM", "D1", "D2", "DFM"},
        "no_dfm": {"G1", "G2", "DESUM", "D1", "D2"},
        "fixed_beta": {"G1", "G2", "DESUM", "D1", "D2"},
        "dfm_from_d2": {"G1", "G2", "DESUM", "D1", "D2", "DFM"},
        "one_discriminator": {"G1", "G2", "DESUM", "D1"},
        "three_discriminators": {"G1", "G2", "DESUM", "D1", "D2", "D3", "DFM"},
        "one_generator": {"G1", "D1", "D2", "DFM"},
        "three_generators": {"G0", "G1", "DESUM1", "G2", "DESUM", "D1", "D2", "DFM"},
    }
    assert set(Ours.variants) == set(expected) - {None}
    default = Ours.variant_parameter_counts(4, 512, None)
    for variant, nets in expected.items():
        counts = Ours.variant_parameter_counts(4, 512, variant)
        assert set(counts) == nets, variant
    # Weighting-only ablations drop exactly the weighting network (the F_global adapter stays).
    assert Ours.variant_parameter_counts(4, 512, "no_desum")["DESUM"] == conv(1, 64, 128)
    assert Ours.variant_parameter_counts(4, 512, "fixed_alpha")["DESUM"] == conv(1, 64, 128)
    # three generators: G0 has G1's (global) architecture, G1 becomes a local generator like G2.
    three = Ours.variant_parameter_counts(4, 512, "three_generators")
    assert three["G0"] == default["G1"] and three["G1"] == default["G2"] == three["G2"]


def test_describe_lists_choices_and_counts_of_every_variant():
    notes = Ours(4, 64, options=TINY).describe()
    for variant in ["default", *Ours.variants]:
        assert f"parameters, variant {variant}" in notes
    assert "G1 (global, 1/2) -> G2 (local, 1/1)" == notes["generator chain"]
    assert "adversarial" in notes["DFM"]


# ---------------------------------------------------------------------------- configuration errors
@pytest.mark.parametrize(
    "size, options, variant, match",
    [
        (40, {}, None, "divisible by 16"),
        (16, {}, None, "at least 32"),
        (48, {}, "three_generators", "divisible by 32"),
        (64, {"fusion": "max"}, None, "fusion"),
        (64, {"dfm_source": "D3"}, None, "no such discriminator"),
        (64, {"stage_fractions": {"global": 0.5, "local": 0.5, "joint": 0.5}}, None, "summing to 1"),
        (64, {"fixed_beta": 1.5}, None, "fixed_beta"),
        (64, {"ngf": "many"}, None, "invalid option value"),
        (64, {}, "no_such_variant", "unknown variant"),
    ],
)
def test_impossible_configurations_raise_config_errors(size, options, variant, match):
    with pytest.raises(SynthesizerConfigError, match=match):
        Ours(4, size, options={**TINY, **options}, variant=variant)


def test_any_class_count_and_input_checks():
    synth = Ours(7, 32, options=TINY)
    out = synth.generate(make_batch(1, size=32, classes=7).onehot)
    assert out.shape == (2, 1, 32, 32)
    with pytest.raises(SynthesizerConfigError, match="one-hot"):
        synth.generate(torch.zeros(1, 4, 32, 32))


# ---------------------------------------------------------------------------- stages
def test_stages_default_split_order_and_optimizers():
    synth = Ours(4, 64, options=TINY)
    assert [(s.name, s.fraction) for s in synth.stages] == [("global", 0.25), ("local", 0.25), ("joint", 0.5)]
    params = {n: {id(p) for p in net.parameters()} for n, net in synth.nets.items()}

    def owners(spec):
        ids = {id(p) for p in spec.params}
        return {n for n, s in params.items() if s & ids}

    g = synth.optimizers("global")
    assert owners(g["G"]) == {"G1"} and owners(g["D"]) == {"D2"} and "DFM" not in g
    loc = synth.optimizers("local")
    assert owners(loc["G"]) == {"G2"} and owners(loc["D"]) == {"D1"}
    j = synth.optimizers("joint")
    assert owners(j["G"]) == {"G1", "G2", "DESUM"} and owners(j["D"]) == {"D1", "D2"} and owners(j["DFM"]) == {"DFM"}
    assert all(spec.betas == (0.5, 0.999) for spec in j.values())
    custom = Ours(4, 64, options={**TINY, "stage_fractions": {"global": 0.1, "local": 0.2, "joint": 0.7}})
    assert [s.fraction for s in custom.stages] == [0.1, 0.2, 0.7]
    assert [s.name for s in Ours(4, 64, options=TINY, variant="one_generator").stages] == ["joint"]
    with pytest.raises(SynthesizerConfigError, match="unknown stage"):
        list(synth.training_step("main", make_batch(0)))


def test_three_stages_run_in_order_and_each_trains_only_its_networks():
    torch.manual_seed(0)
    synth = Ours(4, 64, options=TINY)
    batch = make_batch(0)
    before = {n: [p.detach().clone() for p in net.parameters()] for n, net in synth.nets.items()}

    def changed():
        out = set()
        for n, net in synth.nets.items():
            if any(not torch.equal(a, b) for a, b in zip(before[n], net.parameters(), strict=True)):
                out.add(n)
        return out

    seen = []
    for stage in synth.stage_names():
        updates, _ = drive(synth, stage, batch)
        seen.append((stage, [u.optimizer for u in updates]))
        if stage == "global":
            assert changed() == {"G1", "D2"}
        if stage == "local":
            assert changed() == {"G1", "D2", "G2", "D1"}
    assert seen == [("global", ["D", "G"]), ("local", ["D", "G"]), ("joint", ["D", "DFM", "G"])]
    assert changed() == set(synth.nets)


# ---------------------------------------------------------------------------- every variant
@pytest.mark.parametrize("variant", [None, *Ours.variants])
def test_variant_builds_trains_two_steps_and_generates(variant):
    torch.manual_seed(0)
    synth = Ours(4, 64, options=TINY, variant=variant)
    batch = make_batch(3)
    for stage in synth.stage_names():
        opts = None
        for _ in range(2):
            updates, opts = drive(synth, stage, batch, opts)
        if stage == "joint":
            logs = updates[-1].logs
            alpha_expected = variant not in ("no_desum", "one_generator")
            beta_expected = variant not in ("no_dfm", "one_discriminator")
            assert ("alpha" in logs) == alpha_expected, logs
            assert ("beta" in logs) == beta_expected, logs
            for key in ("alpha", "beta", "alpha_G1", "beta_D3"):
                if key in logs:
                    assert 0.0 < float(logs[key]) < 1.0
            if variant == "fixed_alpha":
                assert float(logs["alpha"]) == pytest.approx(0.5)
            if variant == "fixed_beta":
                assert float(logs["beta"]) == pytest.approx(0.5)
            if variant == "three_generators":
                assert "alpha_G1" in logs
            if variant == "three_discriminators":
                assert "beta_D3" in logs
    out = synth.generate(batch.onehot)
    assert out.shape == (2, 1, 64, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= -1 and out.max() <= 1
    assert synth.generator_for() == ("G1" if variant == "one_generator" else "G2")


# ---------------------------------------------------------------------------- alpha and beta
def test_alpha_and_beta_in_unit_interval_input_dependent_and_receive_gradients():
    torch.manual_seed(0)
    synth = Ours(4, 64, options=TINY)
    a, b = make_batch(1), make_batch(2)
    alphas = []
    for batch in (a, b):
        _, got = synth._run_chain(batch.onehot, synth.nets, {})
        alphas.append(got["alpha"])
    for alpha in alphas:
        assert alpha.shape == (2,) and ((alpha > 0) & (alpha < 1)).all()
    assert (alphas[0] - alphas[1]).abs().max() > 1e-5  # different label maps -> different alpha

    updates = list(synth.training_step("joint", a))
    d_update, dfm_update, g_update = updates
    assert [u.optimizer for u in updates] == ["D", "DFM", "G"]
    # beta's network receives gradients from its own (adversarial) objective ...
    synth.nets.zero_grad(set_to_none=True)
    dfm_update.loss.backward()
    grads = [p.grad for p in synth.nets["DFM"].parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in synth.nets["D1"].parameters())  # ... and does not train D
    # alpha's network receives gradients from the generator objective.
    synth.nets.zero_grad(set_to_none=True)
    g_update.loss.backward()
    grads = [p.grad for p in synth.nets["DESUM"].weighting.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in synth.nets["D1"].parameters())  # D frozen in G's step
    assert all(p.grad is None for p in synth.nets["DFM"].parameters())  # beta is a fixed weight for G

    # beta differs between label maps (its input is D1's layer-2 feature of each synthetic sample)
    betas = []
    for batch in (a, b):
        with torch.no_grad():
            feature = synth.nets["D1"](batch.onehot, synth.generate(batch.onehot))[1][1]
            betas.append(synth.nets["DFM"](feature)[:, 1])
    assert ((betas[0] > 0) & (betas[0] < 1)).all()
    assert (betas[0] - betas[1]).abs().max() > 1e-5


def test_dfm_objective_has_the_stated_optimum():
    """Adversarial DFM weights converge to softmax(d / (tau * sum d)): more weight on the larger distance."""
    torch.manual_seed(0)
    net = DFMNetwork(8, 2, hidden=8)
    feature = torch.randn(4, 8, 4, 4)
    distances = torch.tensor([[1.0, 3.0]] * 4)  # D2's matching distance is the larger one
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(100):
        loss = weight_objective(distances, net(feature), tau=0.5, maximise=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    beta = net(feature)[:, 1]
    target = torch.softmax(torch.tensor([1.0, 3.0]) / (0.5 * 4.0), 0)[1]
    assert torch.allclose(beta, target.expand(4), atol=0.02)
    # The generator reading instead favours the smaller term.
    for _ in range(100):
        loss = weight_objective(distances, net(feature), tau=0.5, maximise=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (net(feature)[:, 1] < 0.5).all()


def test_feature_distance_is_per_element_l1_per_sample():
    real = [torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 2, 2)]
    fake = [torch.ones(2, 3, 4, 4), torch.full((2, 5, 2, 2), 2.0)]
    fake[0][1] = 3.0
    d = feature_distance(real, fake, (1, 2))
    assert torch.allclose(d, torch.tensor([1.0 + 2.0, 3.0 + 2.0]))


# ---------------------------------------------------------------------------- it learns
def test_manual_joint_training_reduces_the_reconstruction_error():
    """A few dozen hand-driven iterations on one batch bring G(m) closer to x (L1)."""
    torch.manual_seed(0)
    synth = Ours(4, 32, options=TINY)
    batch = make_batch(5, size=32, n=4)
    before = (synth.generate(batch.onehot) - batch.image).abs().mean().item()
    opts = {k: torch.optim.Adam(s.params, lr=1e-3, betas=s.betas) for k, s in synth.optimizers("joint").items()}
    for _ in range(12):
        drive(synth, "joint", batch, opts)
    after = (synth.generate(batch.onehot) - batch.image).abs().mean().item()
    assert after < 0.5 * before, (before, after)  # about 0.15-0.18 * before after 10 steps (seeds 0, 1)
