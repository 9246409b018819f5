"""`synthbench compare` / `bench run`: suites parse, a smoke comparison writes a full report, and
the paper suite (five methods, every Table V variant) runs end to end at smoke size."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.errors import SynthbenchError
from synthbench.suites import load_suite, suite_config

ROOT = Path(__file__).resolve().parents[1]


def test_suites_parse_and_name_every_table_v_variant(tmp_path):
    quick = suite_config(load_suite(ROOT / "benchmarks/quick.toml"), tmp_path, None)
    assert [m.label for m in quick.methods] == ["ours", "pix2pix", "spade"]
    paper = suite_config(load_suite(ROOT / "benchmarks/paper.toml"), tmp_path, "somewhere")
    from synthbench.plugins import get_registry

    variants = set(get_registry().synthesizer("ours").variants)
    assert {m.variant for m in paper.methods if m.name == "ours" and m.variant} == variants
    assert {m.name for m in paper.methods} == {"ours", "sean", "spade", "pix2pixhd", "pix2pix"}


def test_paper_suite_requires_data(tmp_path):
    with pytest.raises(SynthbenchError, match="--data"):
        suite_config(load_suite(ROOT / "benchmarks/paper.toml"), tmp_path, None)


def test_bad_suite_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[compare]\nmethods = ['pix2pix']\nepochs = 3\n")
    result = CliRunner().invoke(build_app(), ["bench", "run", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "unknown [compare] keys ['epochs']" in result.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_method_or_variant(tmp_path):
    for methods, message in (("pix2pix,nope", "unknown synthesizer 'nope'"), ("ours:nope", "unknown variant 'nope'")):
        result = CliRunner().invoke(build_app(), ["compare", "--methods", methods, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.stderr


@pytest.mark.slow
def test_quick_suite_smoke_profile_writes_report_and_reuses_runs(tmp_path):
    out = tmp_path / "cmp"
    app = build_app()
    args = ["bench", "run", str(ROOT / "benchmarks/quick.toml"), "--profile", "smoke", "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + str(result.exception)
    report = out / "report"
    for name in ("leaderboard.md", "report.html", "results.csv", "results.json"):
        assert (report / name).is_file(), name
    board = (report / "leaderboard.md").read_text()
    for method in ("ours", "pix2pix", "spade"):
        assert method in board
    results = pd.read_csv(report / "results.csv")
    assert set(results["method"]) >= {"ours", "pix2pix", "spade"}
    assert set(results["seed"]) == {0, 1}  # --seeds 2 in the smoke profile: every method twice
    assert "mean ± SD across seeds" in board
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 6
    for run in runs:
        assert json.loads((run / "manifest.json").read_text())["status"] == "finished"
        assert (run / "synthesis" / "test_aug" / "complete").is_dir()  # Table II and the U-Net: test_aug
        assert not (run / "synthesis" / "test").exists()
    # the report states the images each table used and every method's test time and departures
    from synthbench.data.prepared import PreparedDataset

    data = PreparedDataset(out / "data")
    summary = json.loads((report / "results.json").read_text())
    assert summary["evaluation"]["image_quality"]["images"] == len(data.split("test_aug"))
    assert summary["evaluation"]["downstream"]["images"] == len(data.split("seg_test_aug"))
    assert summary["evaluation"]["downstream"]["test_split"] == "seg_test_aug"
    assert f"Images: {len(data.split('test_aug'))} images per method (test_aug)" in board
    assert "dropout on" in summary["test_time"]["pix2pix"] and summary["real_image_methods"] == []
    assert "### Departures from the papers" in board and "U-Net test set" in board
    # A second invocation reuses the finished runs (same resolved config) instead of retraining.
    mtimes = {r.name: (r / "final.pt").stat().st_mtime_ns for r in runs}
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert {r.name: (r / "final.pt").stat().st_mtime_ns for r in sorted((out / "runs").iterdir())} == mtimes


@pytest.mark.slow
def test_paper_suite_runs_at_smoke_size(tmp_path, phantom_dir):
    out = tmp_path / "paper"
    result = CliRunner().invoke(
        build_app(),
        ["bench", "run", str(ROOT / "benchmarks/paper.toml"), "--profile", "smoke", "--data", str(phantom_dir),
         "--out", str(out), "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    results = pd.read_csv(out / "report" / "results.csv")
    assert len({m for m in results["method"]}) == 15
