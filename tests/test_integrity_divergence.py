"""Divergence is never silent (issue 14): non-finite weights, buffers or generated images stop
the run with the NaN error and keep the last good checkpoint; diverged weights never load."""

from __future__ import annotations

import json
import re
import types

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from synthbench import OptimizerSpec, Synthesizer, Update, hookimpl
from synthbench.cli.main import build_app
from synthbench.engine import load_synthesizer, rundir, train
from synthbench.engine.health import DivergenceError
from synthbench.errors import NonFiniteLossError, SynthbenchError
from synthbench.plugins import PluginRecord, get_registry

PIX = {"ngf": 8, "ndf": 8}


def test_huge_learning_rate_stops_instead_of_finishing_with_inf(phantom_dir, tmp_path):
    """Old behaviour: ``--set lr=1e6`` finished (exit 0) with inf in a BatchNorm running_var;
    synthesize then wrote black images."""
    run = tmp_path / "run"
    result = CliRunner().invoke(build_app(), ["train", "pix2pix", "--data", str(phantom_dir), "--out", str(run),
                                              "--protocol", "smoke", "--option", "ngf=8", "--option", "ndf=8",
                                              "--set", "lr=1e6", "--set", "checkpoint_every=1", "--quiet"])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip().splitlines()[-1]  # after the "training at N px" line: one error line
    assert line.startswith("error: ") and re.search(r"pix2pix: the run diverged after step [12]\b", line)
    assert "last good checkpoint" in line
    assert not (run / "final.pt").exists()
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"
    for path in rundir.list_checkpoints(run):  # whatever was kept is good
        state = rundir.load_checkpoint(path)
        assert all(torch.isfinite(t).all() for sd in state["nets"].values() for t in sd.values() if t.is_floating_point())


class _BadOutput(Synthesizer):
    """Finite weights and losses, but generate() returns NaN from step ``nan_from`` on."""

    name = "test-bad-output"

    @classmethod
    def default_options(cls):
        return {"nan_from": 3}

    def build_networks(self):
        self.steps = 0
        return {"G": nn.Conv2d(self.num_classes, 1, 3, padding=1)}

    def optimizers(self, stage):
        return {"G": OptimizerSpec(tuple(self.nets["G"].parameters()))}

    def training_step(self, stage, batch):
        self.steps += 1
        yield Update("G", (self.train_nets["G"](batch.onehot) - batch.image).abs().mean(), {})

    @torch.no_grad()
    def generate(self, onehot, style=None):
        self.nets.train(False)
        out = torch.tanh(self.nets["G"](onehot))
        return out * float("nan") if self.steps >= self.options["nan_from"] else out


@pytest.fixture
def bad_output_method():
    registry = get_registry()
    plugin = types.SimpleNamespace(register_synthesizers=hookimpl(lambda register: register(_BadOutput)))
    registry.add_plugin(plugin, PluginRecord(name="test-bad-output", module=__name__))
    yield _BadOutput.name
    registry.synthesizers.pop(_BadOutput.name, None)
    registry.pm.unregister(plugin)
    registry.records.pop("test-bad-output", None)


def test_non_finite_generator_output_on_the_sample_batch_stops_the_run(phantom_dir, tmp_path, bad_output_method):
    run = tmp_path / "run"
    with pytest.raises(DivergenceError) as err:
        train(bad_output_method, phantom_dir, run, "smoke",
              overrides={"max_steps": 6, "checkpoint_every": 1, "keep_last_n": 10, "sample_every_epoch": False},
              show_progress=False)
    message = str(err.value)
    assert "after step 3" in message and "sample batch" in message and "ckpt_0000002.pt" in message
    assert isinstance(err.value, NonFiniteLossError)
    assert [p.name for p in rundir.list_checkpoints(run)] == ["ckpt_0000001.pt", "ckpt_0000002.pt"]
    assert not (run / "final.pt").exists()


def test_weights_with_inf_are_refused_when_loaded(phantom_dir, tmp_path):
    """A run diverged under an older version has final.pt with inf: loading it is an error."""
    run = tmp_path / "run"
    train("pix2pix", phantom_dir, run, "smoke", options=PIX, show_progress=False)
    final = torch.load(run / "final.pt", weights_only=True)
    key = next(k for k in final["nets"]["G"] if k.endswith("running_var"))
    final["nets"]["G"][key][0] = float("inf")
    torch.save(final, run / "final.pt")
    with pytest.raises(SynthbenchError, match=r"final.pt: the weights hold non-finite values \(G\..*running_var \(inf\)\)"):
        load_synthesizer(run)
