"""The real-CT suite (benchmarks/real.toml): its full configuration is what the README promises,
and its smoke profile runs end to end on the shared real slices (skipped where they are absent)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.errors import SynthbenchError
from synthbench.suites import load_suite, suite_config

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "real.toml"
REAL = (ROOT / ".." / "shared" / "data" / "covid19-ct-lung-infection-256").resolve()
BUILTIN_METHODS = {"ours", "pix2pix", "pix2pixhd", "spade", "sean", "sdm"}


def test_real_suite_compares_every_builtin_method_on_an_equal_step_budget(tmp_path):
    from synthbench.engine import get_protocol
    from synthbench.engine.loop import plan_stages
    from synthbench.plugins import get_registry

    cfg = suite_config(load_suite(SUITE), tmp_path, str(REAL))
    assert {m.label for m in cfg.methods} == BUILTIN_METHODS
    assert set(cfg.experiments) == {"replace", "add"} and cfg.folds == 10
    assert cfg.method_options["sdm"]["sampling_steps"] >= 1
    protocol = get_protocol(cfg.protocol, cfg.protocol_overrides)
    # the engine's plan for a training split of any plausible length (1,074 real slices x
    # train_factor with the built-in patient runs): every method, whatever its stages (ours
    # 25/25/50%, SDM 80/20%), runs exactly max_steps steps of the same batch size
    for steps_per_epoch in range(50, 1200, 7):
        for method in cfg.methods:
            stages = get_registry().synthesizer(method.name).stages
            plans = plan_stages(stages, protocol.epochs, steps_per_epoch, protocol.max_steps)
            assert sum(p.steps for p in plans) == protocol.max_steps, (method.label, steps_per_epoch)
    with pytest.raises(SynthbenchError, match="--data"):
        suite_config(load_suite(SUITE), tmp_path, None)


def test_suite_data_config_is_read_beside_the_suite_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: a relative path must not depend on the working directory
    doc = load_suite(SUITE, "smoke")
    config = Path(doc["compare"]["data_options"]["config"])
    assert config.is_absolute() and config == (ROOT / "benchmarks" / "real-smoke-data.toml").resolve()
    bad = tmp_path / "bad.toml"
    bad.write_text("[compare]\nmethods = ['pix2pix']\ndata_options = { config = 'missing.toml' }\n")
    with pytest.raises(SynthbenchError, match="missing.toml"):
        load_suite(bad)


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / "images").is_dir(),
                    reason=f"the shared real CT slices are not here ({REAL}); this checkout has no ../shared/data")
def test_real_suite_smoke_profile_on_real_slices(tmp_path):
    out = tmp_path / "real"
    result = CliRunner().invoke(
        build_app(),
        ["bench", "run", str(SUITE), "--profile", "smoke", "--data", str(REAL), "--out", str(out), "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    report = out / "report"
    for name in ("leaderboard.md", "report.html", "results.csv", "results.json"):
        assert (report / name).is_file(), name

    # the real set as its README describes it: three classes, 8-bit CLAHE slices rescaled (no HU window)
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    spec = manifest["spec"]
    assert [c["name"] for c in spec["classes"]] == ["background", "lung", "infection"]
    assert [c["role"] for c in spec["classes"]] == ["background", "lung", "lesion"]
    assert spec["intensity"] == "scaled" and spec["value_range"] == [0.0, 255.0] and spec["region"] == "lung"
    assert manifest["source"]["path"] == str(REAL) and manifest["source"]["files"] == 160
    image = np.load(out / "data" / "splits" / "test" / "image.npy").astype(np.float32)
    # 0..255 -> [-1, 1]: the slices keep their range (an HU window [-600, 1500] would squeeze
    # 0..255 into [-0.43, -0.19]); the air outside the body is about 30/255 in these CLAHE slices
    assert -1.0 <= image.min() and image.max() <= 1.0 and image.max() - image.min() > 1.2

    results = pd.read_csv(report / "results.csv")
    quality = results[results["table"] == "image_quality"]
    downstream = results[results["table"] == "downstream"]
    assert set(quality["method"]) == {"ours", "pix2pix"}
    assert set(quality["setting"]) == {"complete", "lung"}  # the lung region, named as such
    assert set(downstream["class"]) == {"infection"}  # the real set's lesion class, not the paper's four
    assert _finite(quality["value"]) and _finite(quality["ci95"])
    assert _finite(downstream["mean"]) and _finite(downstream["ci95"])
    assert (quality["n"] == len(np.load(out / "data" / "splits" / "test_aug" / "label.npy"))).all()

    summary = json.loads((report / "results.json").read_text())
    assert "covid19-ct-lung-infection-256" in summary["dataset"]
    assert summary["evaluation"]["image_quality"]["folds"] == 3 and summary["evaluation"]["downstream"]["folds"] == 3
    board = (report / "leaderboard.md").read_text()
    assert "nan" not in board.lower()
    assert "Completion region" not in board  # region 'lung': no note that it was replaced

    # every method trained for the same number of image-steps
    image_steps = set()
    for run in (out / "runs").iterdir():
        run_manifest = json.loads((run / "manifest.json").read_text())
        config = json.loads((run / "config.json").read_text())
        assert run_manifest["status"] == "finished"
        image_steps.add(run_manifest["steps"] * config["protocol"]["batch_size"])
    assert image_steps == {16}
