"""Engine fairness (issue 13): one learning-rate schedule over the whole run, optimizers that train
every parameter they name (pix2pixHD's local variant trains G1 in its joint stage), the global
batch split per rank."""

from __future__ import annotations

import pytest
import torch

from synthbench import Batch
from synthbench.data.prepared import PreparedDataset
from synthbench.engine import loop, train
from synthbench.engine.loop import plan_stages
from synthbench.engine.protocol import Protocol, get_protocol
from synthbench.errors import SynthbenchError
from synthbench.plugins import get_registry

OURS_TINY = {"ngf": 4, "ndf": 4, "n_blocks": 1, "desum_channels": 8, "dfm_channels": 8}


def _used_learning_rates(monkeypatch, phantom_dir, tmp_path, **overrides):
    """Train ours for 16 steps (stages 4 / 4 / 8) and return G's learning rate at every update."""
    used = []
    original = loop._iteration

    def spy(synth, stage, batch, optimizers, *args):
        used.append(optimizers["G"].param_groups[0]["lr"])
        return original(synth, stage, batch, optimizers, *args)

    monkeypatch.setattr(loop, "_iteration", spy)
    result = train("ours", phantom_dir, tmp_path / "run", protocol="smoke", options=OURS_TINY, show_progress=False,
                   overrides={"epochs": 4, "max_steps": 16, "sample_every_epoch": False, **overrides})
    assert result.steps == 16
    return used


def test_ours_learning_rate_is_the_paper_rate_until_half_of_the_whole_run(monkeypatch, phantom_dir, tmp_path):
    """Paper: 2e-4 for the first 10 of 20 epochs, then linearly to 0 - over the three stages together."""
    used = _used_learning_rates(monkeypatch, phantom_dir, tmp_path)
    assert used[:9] == pytest.approx([2e-4] * 9)  # steps 1..8 (and 9: factor (16-8)/8 = 1)
    assert used[8:] == pytest.approx([2e-4 * (16 - i) / 8 for i in range(8, 16)])
    # the per-stage restarts (the old behaviour) remain as a named option
    restarted = _used_learning_rates(monkeypatch, phantom_dir, tmp_path / "stage", lr_scope="stage")
    assert restarted[3] == pytest.approx(1e-4) and restarted[4] == pytest.approx(2e-4)


def test_stage_lr_lambda_concatenates_stages():
    from synthbench.engine.loop import stage_lr_lambda

    plans = plan_stages(get_registry().synthesizer("ours").stages, epochs=20, steps_per_epoch=10, max_steps=None)
    assert [p.steps for p in plans] == [50, 50, 100]
    whole = [stage_lr_lambda(plans, i, "linear_decay", 0.5)(j) for i, p in enumerate(plans) for j in range(p.steps)]
    assert whole[:101] == [1.0] * 101 and whole[-1] == pytest.approx(1 / 100)
    per_stage = stage_lr_lambda(plans, 0, "linear_decay", 0.5, scope="stage")
    assert per_stage(25) == 1.0 and per_stage(49) == pytest.approx(1 / 25)
    assert get_protocol("paper").lr_scope == "run"
    assert Protocol.from_dict({"name": "old"}).lr_scope == "stage"  # runs recorded before lr_scope existed
    with pytest.raises(SynthbenchError, match="lr_scope"):
        get_protocol("quick", {"lr_scope": "epoch"})


#: Every built-in method (and the variants with their own stages or networks) at tiny widths.
BUILDS = {
    "pix2pix": ("pix2pix", None, {"ngf": 4, "ndf": 4}),
    "pix2pixhd": ("pix2pixhd", None, {"ngf": 4, "ndf": 4, "n_blocks_global": 1, "no_vgg_loss": True}),
    "pix2pixhd:local": ("pix2pixhd", "local", {"ngf": 4, "ndf": 4, "n_blocks_global": 1, "n_blocks_local": 1,
                                               "no_vgg_loss": True}),
    "spade": ("spade", None, {"ngf": 2, "ndf": 4, "no_vgg_loss": True}),
    "sean": ("sean", None, {"ngf": 2, "ndf": 4, "style_dim": 8, "no_vgg_loss": True}),
    "ours": ("ours", None, OURS_TINY),
    "ours:dfm_per_layer": ("ours", None, {**OURS_TINY, "dfm_per_layer": True}),
    "ours:three_generators": ("ours", "three_generators", OURS_TINY),
}


@pytest.mark.parametrize("build", list(BUILDS))
def test_every_parameter_a_stage_optimizer_names_changes(build, phantom_dir):
    """The engine's optimizers of each stage, run in order on one synthesizer as training does:
    after two iterations every parameter the stage's optimizers name has moved."""
    from synthbench.engine.loop import build_optimizers

    method, variant, options = BUILDS[build]
    ds = PreparedDataset(phantom_dir)
    torch.manual_seed(0)
    synth = get_registry().synthesizer(method)(ds.num_classes, ds.size, options=options, variant=variant)
    proto = get_protocol("smoke", {"lr": 1e-3})
    plans = plan_stages(synth.stages, epochs=len(synth.stages), steps_per_epoch=2, max_steps=None)
    # Every class in a quadrant of every sample, so it survives down to SEAN's 2x2 head at 64 px
    # (SEAN trains a style layer per class; a class absent at a block's resolution gets no gradient).
    gen = torch.Generator().manual_seed(0)
    quadrants = torch.arange(4).view(2, 2).repeat_interleave(ds.size // 2, 0).repeat_interleave(ds.size // 2, 1)
    label = torch.stack([torch.randperm(ds.num_classes, generator=gen)[quadrants % ds.num_classes] for _ in range(4)])
    image = torch.rand(4, 1, ds.size, ds.size, generator=gen) * 2 - 1
    batch = Batch(image, label, ds.num_classes, ds.lung_mask(label))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    import contextlib

    for index, plan in enumerate(plans):
        optimizers, _ = build_optimizers(synth, plans, index, proto, fused=False)
        named = {(net, n): p for net, module in synth.nets.items() for n, p in module.named_parameters()
                 if any(p is q for o in optimizers.values() for g in o.param_groups for q in g["params"])}
        specs = synth.optimizers(plan.name)
        assert len(named) == len({id(p) for s in specs.values() for p in s.params}), "optimizer lacks a named parameter"
        before = {k: p.detach().clone() for k, p in named.items()}
        synth.train(True)
        for step in range(2):
            loop._iteration(synth, plan.name, batch, optimizers, scaler, contextlib.nullcontext, method, step)
        still = sorted(f"{net}.{n}" for (net, n), p in named.items() if torch.equal(before[(net, n)], p.detach()))
        assert not still, f"{build} stage {plan.name}: named but unchanged: {still[:8]}"


def test_pix2pixhd_local_joint_stage_trains_the_global_generator(phantom_dir, tmp_path):
    """Through the engine: the local variant's G1 (frozen in local_only) moves in the joint stage."""
    torch.manual_seed(0)
    opts = dict(BUILDS["pix2pixhd:local"][2])
    result = train("pix2pixhd", phantom_dir, tmp_path / "run", protocol="smoke", variant="local", options=opts,
                   overrides={"epochs": 10, "max_steps": 4, "sample_every_epoch": False}, show_progress=False)
    assert result.steps == 4
    torch.manual_seed(0)
    fresh = get_registry().synthesizer("pix2pixhd")(4, 64, options=opts, variant="local")
    trained = result.synthesizer.nets["G"].global_model.state_dict()
    moved = [k for k, v in fresh.nets["G"].global_model.state_dict().items() if not torch.equal(v, trained[k])]
    assert moved, "G1 never trained"


def test_batch_size_is_the_global_batch():
    from synthbench.engine.loop import per_rank_batch_size

    assert per_rank_batch_size(16, 2) == 8  # the paper: 16 across two GPUs
    assert per_rank_batch_size(16, 1) == 16
    with pytest.raises(SynthbenchError, match="batch_size 5 is the global batch and must divide over the 2 processes"):
        per_rank_batch_size(5, 2)


def test_every_method_gets_the_same_number_of_steps_whatever_its_stages():
    """Old: each stage got round(fraction * epochs) epochs, so ours (25/25/50%) ran 149 of the quick
    protocol's 150 steps (round(2.5) = 2) and 398 of 400 at 10 epochs while one-stage methods ran all."""
    from synthbench.synthesizer import Stage

    ours = get_registry().synthesizer("ours").stages
    for epochs, steps_per_epoch, max_steps in [(10, 15, 150), (10, 40, None), (20, 600, None), (3, 7, 20)]:
        expected = min(epochs * steps_per_epoch, max_steps or epochs * steps_per_epoch)
        for stages in (ours, (Stage("train", 0.8), Stage("finetune", 0.2)), (Stage("train", 1.0),)):
            plans = plan_stages(stages, epochs, steps_per_epoch, max_steps)
            assert sum(p.steps for p in plans) == expected, (epochs, steps_per_epoch, max_steps, stages)
    assert [p.steps for p in plan_stages(ours, 10, 15, 150)] == [38, 37, 75]
    assert [p.steps for p in plan_stages(ours, 20, 10, None)] == [50, 50, 100]  # whole epochs stay whole
