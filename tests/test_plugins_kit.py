"""Issue 17: the conformance kit builds every variant and trains a few steps per stage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synthbench import OptimizerSpec, Stage, Synthesizer, Update
from synthbench.engine import plan_stages
from synthbench.testing import (
    STEPS_PER_STAGE,
    Case,
    ConformanceError,
    check_training,
    check_variants,
    stage_epochs,
)

CASE = Case(3, 32)


class Good(Synthesizer):
    name = "kit2-good"
    stages = (Stage("warmup", 0.2), Stage("main", 0.8))
    variants = {"wider": {"width": 8}}

    @classmethod
    def default_options(cls):
        return {"width": 4, "layers": 1}

    def build_networks(self):
        w = self.options["width"]
        body = [nn.Conv2d(self.num_classes, w, 3, padding=1), nn.ReLU()]
        body += [nn.Conv2d(w, w, 3, padding=1), nn.ReLU()] * (self.options["layers"] - 1)
        return {"G": nn.Sequential(*body, nn.Conv2d(w, 1, 1), nn.Tanh())}

    def optimizers(self, stage):
        return {"G": OptimizerSpec(tuple(self.nets["G"].parameters()))}

    def training_step(self, stage, batch):
        yield Update("G", (self.train_nets["G"](batch.onehot) - batch.image).abs().mean())


class BrokenVariant(Good):
    """A variant whose preset builds a network that cannot exist (the old kit never built it)."""

    name = "kit2-variant"
    variants = {"wider": {"width": 8}, "deeper": {"layers": "3"}}  # a string: the build crashes


class NaNAfterStepOne(Good):
    """Finite first loss, NaN from the second step on (the old kit trained one step per stage)."""

    name = "kit2-nan"
    stages = (Stage("main", 1.0),)  # the old kit trained exactly one step of it

    def build_networks(self):
        nets = super().build_networks()
        nets["G"].register_buffer("calls", torch.zeros(()))
        return nets

    def training_step(self, stage, batch):
        self.nets["G"].calls += 1
        loss = (self.train_nets["G"](batch.onehot) - batch.image).abs().mean()
        yield Update("G", loss * (float("nan") if self.nets["G"].calls > 1 else 1.0))


def test_good_synthesizer_passes(tmp_path):
    check_variants(Good, CASE, tmp_path)
    check_training(Good, CASE, tmp_path)


def test_a_variant_that_cannot_be_built_fails_the_kit(tmp_path):
    with pytest.raises(ConformanceError, match=r"kit2-variant \[3classes-32px\]: variant 'deeper' cannot be built"):
        check_variants(BrokenVariant, CASE, tmp_path)


def test_a_nan_after_step_one_fails_the_kit(tmp_path):
    with pytest.raises(ConformanceError, match=r"kit2-nan \[3classes-32px\]: engine run failed: .*non-finite loss.*step 2"):
        check_training(NaNAfterStepOne, CASE, tmp_path)


@pytest.mark.parametrize("fractions", [(1.0,), (0.5, 0.5), (0.2, 0.8), (0.25, 0.25, 0.5), (0.1, 0.9)])
def test_every_stage_gets_the_kits_steps(fractions):
    stages = tuple(Stage(f"s{i}", f) for i, f in enumerate(fractions))
    plans = plan_stages(stages, stage_epochs(stages), steps_per_epoch=1, max_steps=None)
    assert all(p.steps >= STEPS_PER_STAGE for p in plans)
    assert STEPS_PER_STAGE >= 2  # a loss turning NaN after step 1 must show in every stage
