"""Issue 17: the engine and synthesis enforce generate()'s output contract, and one failing method
does not abort a comparison (the others finish, the report shows the failure, the exit is 1)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from synthbench import OptimizerSpec, Synthesizer, Update
from synthbench.cli.main import build_app
from synthbench.engine import train
from synthbench.output_check import OutputContractError
from synthbench.synthesis import synthesize
from synthbench.testing import registered


class Good(Synthesizer):
    """1x1 conv + tanh: honours the contract."""

    name = "contract-good"

    def build_networks(self):
        return {"G": nn.Sequential(nn.Conv2d(self.num_classes, 1, 1), nn.Tanh())}

    def optimizers(self, stage):
        return {"G": OptimizerSpec(tuple(self.nets["G"].parameters()))}

    def training_step(self, stage, batch):
        yield Update("G", (self.train_nets["G"](batch.onehot) - batch.image).abs().mean())


class ThreeChannels(Good):
    name = "contract-rgb"

    def build_networks(self):
        return {"G": nn.Sequential(nn.Conv2d(self.num_classes, 3, 1), nn.Tanh())}

    def training_step(self, stage, batch):
        yield Update("G", (self.train_nets["G"](batch.onehot) - batch.image).abs().mean())


class WideRange(Good):
    """tanh scaled by 5: values in [-5, 5], which the old synthesis clamped and evaluated."""

    name = "contract-range"

    @torch.no_grad()
    def generate(self, onehot, style=None):
        return super().generate(onehot) * 5


class HalfSize(Good):
    name = "contract-half"

    @torch.no_grad()
    def generate(self, onehot, style=None):
        return super().generate(onehot)[..., ::2, ::2]


class DriftsAfterTraining(Good):
    """Conforms before training, leaves [-1, 1] once it has trained: caught at the sample grid."""

    name = "contract-drift"

    def build_networks(self):
        nets = super().build_networks()
        nets["G"].register_buffer("steps", torch.zeros(()))
        return nets

    def training_step(self, stage, batch):
        self.nets["G"].steps += 1
        yield from super().training_step(stage, batch)

    @torch.no_grad()
    def generate(self, onehot, style=None):
        return super().generate(onehot) * (1 + 4 * float(self.nets["G"].steps > 0))


SMOKE = {"max_steps": 2, "device": "cpu"}


@pytest.mark.parametrize(("cls", "expected"), [
    (ThreeChannels, "shape (2, 3, 64, 64), expected (2, 1, 64, 64)"),
    (WideRange, "outside [-1, 1]"),
    (HalfSize, "shape (2, 1, 32, 32), expected (2, 1, 64, 64)"),
])
def test_engine_refuses_a_broken_output_before_training(cls, expected, phantom_dir, tmp_path):
    """Old: a 3-channel or [-5, 5] plugin trained; a half-size one crashed after all steps."""
    with registered(cls), pytest.raises(OutputContractError) as err:
        train(cls.name, phantom_dir, tmp_path / "run", "smoke", overrides=SMOKE, show_progress=False)
    message = str(err.value)
    assert message.startswith(f"{cls.name} (module {__name__})") and expected in message
    assert "before training" in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_engine_checks_every_sample_grid(phantom_dir, tmp_path):
    with registered(DriftsAfterTraining), pytest.raises(OutputContractError, match="sample grid epoch_001.png"):
        train(DriftsAfterTraining.name, phantom_dir, tmp_path / "run", "smoke", overrides=SMOKE, show_progress=False)


def test_synthesis_checks_every_batch(phantom_dir, tmp_path):
    """Old: synthesis clamped [-5, 5] into [-1, 1] and wrote it as a valid result."""
    with registered(Good):
        run = train(Good.name, phantom_dir, tmp_path / "run", "smoke", overrides=SMOKE, show_progress=False)
    bad = WideRange(num_classes=run.synthesizer.num_classes, image_size=run.synthesizer.image_size)
    bad.load_state_dict(run.synthesizer.state_dict())
    with pytest.raises(OutputContractError, match=r"contract-range .*on synthesis batch 1 values span"):
        synthesize(run.run_dir, phantom_dir, tmp_path / "synth", split="test", synth=bad, show_progress=False)
    assert not (tmp_path / "synth").exists()  # atomic: nothing half-written


class FailsInTraining(Good):
    name = "contract-crash"

    def training_step(self, stage, batch):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (deep inside the plugin)")
        yield  # pragma: no cover - makes this a generator


def test_one_failing_method_does_not_abort_compare(phantom_dir, tmp_path):
    """Old: the first failure ended the comparison with a traceback and no report."""
    suite = tmp_path / "suite.toml"
    suite.write_text(
        "[compare]\n"
        f"methods = ['{ThreeChannels.name}', '{FailsInTraining.name}', '{Good.name}']\n"
        "protocol = 'smoke'\nexperiments = []\nmetrics = ['psnr', 'rmse']\nfolds = 2\n"
        f"data = '{phantom_dir}'\n"
        "[compare.protocol_overrides]\nmax_steps = 2\n"
    )
    out = tmp_path / "cmp"
    with registered(Good), registered(ThreeChannels), registered(FailsInTraining):
        result = CliRunner().invoke(build_app(), ["bench", "run", str(suite), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert f"FAILED {ThreeChannels.name} (seed 0) at train" in result.stderr
    assert f"FAILED {FailsInTraining.name} (seed 0) at train: RuntimeError: mat1 and mat2" in result.stderr
    report = out / "report"
    board = (report / "leaderboard.md").read_text()
    rows: dict[str, str] = {}  # first table of the board: image quality
    for line in board.split("## Image quality", 1)[1].splitlines():
        if line.startswith("| contract-"):
            rows.setdefault(line.split("|")[1].strip(), line)
    assert "FAILED (seed 0, train: contract-rgb" in rows[ThreeChannels.name]
    assert "FAILED (seed 0, train: RuntimeError: mat1" in rows[FailsInTraining.name]
    assert "FAILED" not in rows[Good.name]
    values = pd.read_csv(report / "results.csv")
    assert set(values["method"]) == {Good.name}  # only measured rows: the good method's
    runs = {r["method"]: r for r in json.loads((report / "results.json").read_text())["runs"]}
    assert runs[Good.name]["status"] == "finished"
    assert runs[FailsInTraining.name]["status"] == "failed" and runs[FailsInTraining.name]["failed_step"] == "train"
    assert "FAILED at train" in (report / "report.html").read_text()


def test_every_leaderboard_row_names_its_plugin_distribution(tmp_path):
    """Old: the report named no distribution, so an impostor's row looked like the built-in's."""
    from synthbench.report import ComparisonResults, MethodRun, render_report

    iq = pd.DataFrame([
        {"method": m, "seed": 0, "setting": "complete", "metric": "PSNR", "value": v, "ci95": 0.1, "n": 4,
         "folds": [v - 0.1, v + 0.1], "higher_is_better": True}
        for m, v in (("pix2pix", 20.0), ("mygan", 21.0))
    ])
    runs = [MethodRun("pix2pix", 0, plugin={"plugin": "pix2pix", "distribution": "synthbench", "version": "0.1.0"}),
            MethodRun("mygan", 0, plugin={"plugin": "mygan", "distribution": "synthbench-mygan", "version": "2.3"}),
            MethodRun("broken", 0, plugin={"plugin": "broken", "distribution": "broken-dist", "version": "1.0"},
                      error="boom", failed_step="synthesize")]
    results = ComparisonResults("smoke", "d", "h" * 64, runs, iq)
    paths = render_report(results, tmp_path / "report")
    board = paths.markdown.read_text()
    assert "| method | plugin | PSNR (dB) ↑ |" in board
    assert "| pix2pix | synthbench 0.1.0 | 20.00 ± 0.10" in board
    assert "| mygan | synthbench-mygan 2.3 | **21.00 ± 0.10** |" in board
    assert "| broken | broken-dist 1.0 | FAILED (seed 0, synthesize: boom) |" in board
    csv = pd.read_csv(paths.csv)
    assert dict(zip(csv["method"], csv["plugin"], strict=True)) == {"pix2pix": "synthbench 0.1.0",
                                                                    "mygan": "synthbench-mygan 2.3"}
