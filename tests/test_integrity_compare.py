"""compare publishes recorded work times (issue 14): a re-run that reuses finished runs reports
the time the training and synthesis took when they ran, not ~0 s; the data set is verified."""

from __future__ import annotations

import json

import pytest

from synthbench.compare import CompareConfig, parse_methods, run_comparison
from synthbench.errors import SynthbenchError


def _config(phantom_dir, out):
    return CompareConfig(methods=parse_methods("pix2pix"), out_dir=out, data=str(phantom_dir), protocol="smoke",
                         method_options={"pix2pix": {"ngf": 8, "ndf": 8}}, experiments=(), metrics=("psnr",),
                         folds=2, device="cpu", show_progress=False)


def test_rerun_reports_recorded_wall_times(phantom_dir, tmp_path):
    """Old behaviour: the second invocation published its own times (0.0 s of training)."""
    out = tmp_path / "cmp"
    first = run_comparison(_config(phantom_dir, out)).results
    second = run_comparison(_config(phantom_dir, out)).results
    run = first.runs[0]
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    for results in (first, second):
        times = results.runs[0].wall_times
        assert times["train"] == pytest.approx(manifest["wall_time_s"]) and times["train"] > 0
        assert times["synthesize"] == pytest.approx(run.wall_times["synthesize"]) and times["synthesize"] > 0
        data_manifest = json.loads((phantom_dir / "manifest.json").read_text())
        assert results.wall_times["data"] == pytest.approx(data_manifest["prepare_seconds"])
    recorded = json.loads((out / "wall_times.json").read_text())
    assert sum(v for k, v in recorded.items() if k.startswith("synthesize")) == pytest.approx(run.wall_times["synthesize"])
    assert second.wall_times["this invocation"] < second.wall_times["total"]


def test_compare_verifies_the_prepared_files(phantom_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    label = data / "splits" / "seg_test" / "label.npy"
    raw = bytearray(label.read_bytes())
    raw[-1] ^= 0xFF
    label.write_bytes(bytes(raw))
    with pytest.raises(SynthbenchError, match="seg_test/label.npy: changed since it was prepared"):
        run_comparison(_config(data, tmp_path / "cmp"))
