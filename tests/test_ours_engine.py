"""The paper's model ("ours") trained through the shared engine on the phantom data set.

Stages in order through the engine, alpha/beta in the step log, exact resume from the middle of a
stage, learning on the phantom (mean L1 to the real test slices clearly below the untrained
model's), and ``synthbench info ours``.
"""

from __future__ import annotations

import json

import pytest
import torch
from synthbench_ours import Ours
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.data.prepared import PreparedDataset
from synthbench.engine import load_synthesizer, train
from synthbench.synthesis import mean_l1_to_real

TINY = {"ngf": 8, "ndf": 8, "n_blocks": 2, "desum_channels": 16, "dfm_channels": 16}
# 20 real training slices / batch 4 = 5 steps per epoch; 4 epochs -> global 1, local 1, joint 2
# epochs = 5 + 5 + 10 steps, capped to 8 steps: global 2, local 2, joint 4.
DET = {"deterministic": True, "batch_size": 4, "train_split": "train", "checkpoint_every": 100, "epochs": 4, "max_steps": 8}


def _weights(synth) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, sd in synth.state_dict().items() for k, v in sd.items()}


def _log(run) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_engine_runs_three_stages_and_resumes_mid_stage_exactly(phantom_dir, tmp_path):
    full = train("ours", phantom_dir, tmp_path / "full", "smoke", options=TINY, overrides=DET, show_progress=False)
    assert full.status == "finished" and full.steps == 8
    assert set(full.final_losses) == {"D", "DFM", "G"}
    log = _log(tmp_path / "full")
    assert [r["stage"] for r in log] == ["global"] * 2 + ["local"] * 2 + ["joint"] * 4
    for r in log:
        joint = r["stage"] == "joint"
        assert ("alpha" in r) == joint and ("beta" in r) == joint
        if joint:
            assert 0 < r["alpha"] < 1 and 0 < r["beta"] < 1 and "loss/DFM" in r
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["options"]["stage_fractions"] == {"global": 0.25, "local": 0.25, "joint": 0.5}

    # interrupted in the middle of "local" (after step 3), then in the middle of "joint" (step 5)
    part = tmp_path / "part"
    r1 = train("ours", phantom_dir, part, "smoke", options=TINY, overrides={**DET, "stop_after_steps": 3}, show_progress=False)
    assert r1.status == "stopped" and r1.steps == 3
    r2 = train("ours", phantom_dir, part, resume=True, overrides={"stop_after_steps": 2}, show_progress=False)
    assert r2.status == "stopped" and r2.steps == 5
    r3 = train("ours", phantom_dir, part, resume=True, show_progress=False)
    assert r3.status == "finished" and r3.steps == 8
    a, b = _weights(load_synthesizer(tmp_path / "full")), _weights(load_synthesizer(part))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert [r["step"] for r in _log(part)] == list(range(1, 9))
    assert [r["alpha"] for r in _log(part) if "alpha" in r] == pytest.approx([r["alpha"] for r in log if "alpha" in r])


@pytest.mark.parametrize("variant", ["three_generators", "one_discriminator"])
def test_engine_trains_variants(phantom_dir, tmp_path, variant):
    result = train("ours", phantom_dir, tmp_path / "run", "smoke", variant=variant, options=TINY,
                   overrides={**DET, "max_steps": 4}, show_progress=False)
    assert result.status == "finished"
    synth = load_synthesizer(tmp_path / "run")
    assert synth.variant == variant and synth.options["discriminators"] == (1 if variant == "one_discriminator" else 2)
    log = _log(tmp_path / "run")
    assert [r["stage"] for r in log] == ["global", "local", "joint", "joint"]
    if variant == "three_generators":
        assert "G0" in synth.nets and all(0 < r["alpha_G1"] < 1 for r in log if r["stage"] == "joint")
    else:
        assert all("beta" not in r for r in log)
    label = torch.randint(0, 4, (2, 64, 64))
    out = synth.generate(torch.nn.functional.one_hot(label, 4).permute(0, 3, 1, 2).float())
    assert out.shape == (2, 1, 64, 64) and out.abs().max() <= 1


def test_short_run_learns_on_the_phantom(phantom_dir, tmp_path):
    data = PreparedDataset(phantom_dir)
    torch.manual_seed(0)
    untrained = Ours(data.num_classes, data.size, options=TINY)
    before = mean_l1_to_real(untrained, data, "test")
    result = train("ours", phantom_dir, tmp_path / "run", "quick", options=TINY,
                   overrides={"max_steps": 32, "batch_size": 4, "checkpoint_every": 1000, "sample_every_epoch": False},
                   show_progress=False)
    assert result.status == "finished" and result.steps >= 30  # the stage plan rounds 32 down to 31 steps
    after = mean_l1_to_real(load_synthesizer(tmp_path / "run"), data, "test")
    assert after < 0.6 * before, (before, after)  # measured 0.77 -> 0.35


def test_cli_info_prints_every_network_count():
    result = CliRunner().invoke(build_app(), ["info", "ours", "--variant", "three_discriminators", "--classes", "4",
                                              "--size", "512", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["parameters"] == Ours.variant_parameter_counts(4, 512, "three_discriminators")
    assert set(info["parameters"]) == {"G1", "G2", "DESUM", "D1", "D2", "D3", "DFM"}
    assert info["parameters"]["G1"] == 45_590_209
    assert "parameters, variant one_generator" in info["notes"]
    bad = CliRunner().invoke(build_app(), ["info", "ours", "--classes", "4", "--size", "100"])
    assert bad.exit_code == 2 and "divisible by 16" in bad.output
