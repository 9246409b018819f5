"""synthbench.testing: the five built-in synthesizers pass the conformance kit, and each check
catches the contract violation it is written for (a kit that cannot fail proves nothing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from synthbench import OptimizerSpec, Stage, Synthesizer, SynthesizerConfigError, Update
from synthbench.data.prepared import PreparedDataset
from synthbench.plugins import get_registry
from synthbench.testing import (
    CHECKS,
    Case,
    ConformanceError,
    check_determinism,
    check_generate,
    check_input_errors,
    check_state_dict_roundtrip,
    check_synthesizer,
    check_training,
    check_training_determinism,
    conformance_cases,
    registered,
    valid_sizes,
    write_tiny_dataset,
)

#: Narrow widths keep the built-ins cheap on CPU; architectures (depth, blocks, stages) unchanged.
#: VGG losses are off: they load 500 MB of pretrained weights, tested by their own plugins.
BUILTIN_OPTIONS = {
    "pix2pix": {"ngf": 8, "ndf": 8},
    "ours": {"ngf": 8, "ndf": 8, "n_blocks": 1, "desum_channels": 8, "dfm_channels": 8},
    "pix2pixhd": {"ngf": 8, "ndf": 8, "n_blocks_global": 1, "no_vgg_loss": True},
    "spade": {"ngf": 4, "ndf": 8, "no_vgg_loss": True},
    "sean": {"ngf": 4, "ndf": 8, "style_dim": 8, "no_vgg_loss": True},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("method", sorted(BUILTIN_OPTIONS))
def test_builtin_synthesizers_pass_the_kit(method, tmp_path):
    cls = get_registry().synthesizer(method)
    results = check_synthesizer(cls, classes=(2,), sizes=(32,), options=BUILTIN_OPTIONS[method], workdir=tmp_path)
    assert [r.check for r in results] == [c.__name__ for c in CHECKS]
    assert all(r.error is None for r in results)


# --------------------------------------------------------------------------- a good reference
class Good(Synthesizer):
    """1x1 conv + tanh, two stages: the smallest synthesizer that honours the contract."""

    name = "kit-good"
    stages = (Stage("a", 0.5), Stage("b", 0.5))

    @classmethod
    def default_options(cls):
        return {"width": 4}

    def build_networks(self):
        w = self.options["width"]
        return {"G": nn.Sequential(nn.Conv2d(self.num_classes, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, 1, 1), nn.Tanh())}

    def optimizers(self, stage):
        return {"G": OptimizerSpec(tuple(self.nets["G"].parameters()))}

    def training_step(self, stage, batch):
        yield Update("G", (self.train_nets["G"](batch.onehot) - batch.image).abs().mean())


CASE = Case(3, 32)


def test_good_synthesizer_passes_every_check(tmp_path):
    results = check_synthesizer(Good, classes=(2, 5), sizes=(32,), workdir=tmp_path)
    assert len(results) == 2 * len(CHECKS) and all(r.error is None for r in results)
    assert "kit-good" not in get_registry().synthesizers  # temporary registration was undone


# --------------------------------------------------------------------------- broken ones
class NoTanhScaled(Good):
    """No tanh and large weights: outputs far outside [-1, 1]."""

    name = "kit-range"

    def build_networks(self):
        conv = nn.Conv2d(self.num_classes, 1, 1)
        nn.init.constant_(conv.weight, 5.0)
        return {"G": conv}


class Float64(Good):
    name = "kit-f64"

    @torch.no_grad()
    def generate(self, onehot, style=None):
        self.check_input(onehot)
        return self.nets["G"](onehot).double()


class NoCheckInput(Good):
    name = "kit-nocheck"

    @torch.no_grad()
    def generate(self, onehot, style=None):
        return self.nets["G"](onehot[:, :1].expand(-1, self.num_classes, -1, -1) if onehot.dim() == 4 else onehot)


class StateOutsideNets(Good):
    """Keeps a random offset outside ``self.nets``: the state dict does not capture it."""

    name = "kit-outside"

    def build_networks(self):
        self.offset = torch.rand(1) * 0.1
        return super().build_networks()

    @torch.no_grad()
    def generate(self, onehot, style=None):
        return (super().generate(onehot) * 0.5 + self.offset).clamp(-1, 1)


class NumpyInit(Good):
    """Initialises from numpy's global RNG with a fresh seed: two builds with one seed differ."""

    name = "kit-numpyinit"
    counter = [0]

    def build_networks(self):
        nets = super().build_networks()
        NumpyInit.counter[0] += 1
        rng = np.random.default_rng(NumpyInit.counter[0])
        with torch.no_grad():
            nets["G"][0].weight.copy_(torch.from_numpy(rng.normal(size=nets["G"][0].weight.shape)).float())
        return nets


class FrozenGenerator(Good):
    """Yields a loss that does not depend on G: the engine steps, but nothing learns."""

    name = "kit-frozen"

    def build_networks(self):
        nets = super().build_networks()
        nets["D"] = nn.Conv2d(1, 1, 1)
        return nets

    def optimizers(self, stage):
        return {"G": OptimizerSpec(tuple(self.nets["D"].parameters()))}

    def training_step(self, stage, batch):
        yield Update("G", self.train_nets["D"](batch.image).abs().mean())


class NondeterministicTraining(Good):
    """Adds noise from an unseeded source to the loss: two runs with one seed end differently."""

    name = "kit-nondet"

    def training_step(self, stage, batch):
        noise = float(np.random.default_rng().normal())
        yield Update("G", (self.train_nets["G"](batch.onehot) - batch.image).abs().mean() * (1 + noise))


class BadSizeError(Good):
    """Declares size_multiple=8 but never enforces it."""

    name = "kit-badsize"
    size_multiple = 8


@pytest.mark.parametrize(
    ("cls", "check", "message"),
    [
        (NoTanhScaled, check_generate, "outside [-1, 1]"),
        (Float64, check_generate, "dtype torch.float64"),
        (NoCheckInput, check_input_errors, "did not raise SynthesizerConfigError"),
        (StateOutsideNets, check_state_dict_roundtrip, "outputs differ after a state-dict round trip"),
        (NumpyInit, check_determinism, "two builds with the same seed differ"),
        (FrozenGenerator, check_training, "unchanged after training"),
        (NondeterministicTraining, check_training_determinism, "different weights"),
        (BadSizeError, CHECKS[0], "not a multiple of size_multiple=8"),
    ],
    ids=lambda v: getattr(v, "__name__", None) if not isinstance(v, str) else None,
)
def test_each_check_catches_its_violation(cls, check, message, tmp_path):
    case = CASE
    with pytest.raises(ConformanceError) as info:
        check(cls, case, tmp_path)
    assert message in str(info.value)
    assert cls.name in str(info.value) and "3classes-32px" in str(info.value)
    # ... and the good reference passes the same check
    check(Good, case, tmp_path / "good")


def test_check_synthesizer_lists_every_failure(tmp_path):
    with pytest.raises(ConformanceError) as info:
        check_synthesizer(NoTanhScaled, classes=(2,), sizes=(32,), workdir=tmp_path,
                          checks=(check_generate, check_training))
    text = str(info.value)
    assert text.startswith("2 of 2 conformance checks failed")
    assert "check_generate" in text and "check_training" in text


def test_wrong_generate_input_error_is_one_line_config_error():
    synth = Good(2, 32)
    with pytest.raises(SynthesizerConfigError, match=r"expected a one-hot label map \[B, 2, H, W\]"):
        synth.generate(torch.zeros(1, 3, 32, 32))


def test_sizes_respect_declared_minimum_and_multiple():
    class Big(Good):
        name = "kit-big"
        min_size = 48
        size_multiple = 32

    assert valid_sizes(Good, (32, 64)) == (32, 64)
    assert valid_sizes(Big, (32, 64)) == (64,)
    assert [str(c) for c in conformance_cases(Big, classes=(2, 3))] == ["2classes-64px", "3classes-64px"]


@pytest.mark.parametrize("classes", [2, 3, 4, 6])
def test_tiny_dataset_has_every_class(classes, tmp_path):
    ds = PreparedDataset(write_tiny_dataset(tmp_path / "d", classes, 32, count=3))
    label = np.asarray(ds.split("train").label)
    assert ds.num_classes == classes and label.shape == (3, 32, 32)
    assert set(np.unique(label)) == set(range(classes))
    image = np.asarray(ds.split("train").image, dtype=np.float32)
    assert image.min() >= -1 and image.max() <= 1 and image.std() > 0.1
    assert ds.spec.lesion_ids  # completion / lung-only metrics need a lesion class


def test_registered_restores_a_previous_entry():
    table = get_registry().synthesizers
    original = table["pix2pix"]

    class Impostor(Good):
        name = "pix2pix"

    with registered(Impostor):
        assert table["pix2pix"] is Impostor
    assert table["pix2pix"] is original
