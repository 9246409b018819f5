"""A comparison's job results keep what the report's settings table reads from them."""

from __future__ import annotations

import math

import pandas as pd

from synthbench.compare import _frame, _frame_record
from synthbench.report.settings import fid_weights


def test_job_result_frames_keep_their_attrs_and_exact_values():
    """Old (after jobs landed): evaluation frames crossed the job boundary as rows only, so the
    report's settings lost the FID Inception weights' sha256 (empty) under every launcher."""
    frame = pd.DataFrame({"metric": ["FID", "PSNR"], "value": [12.3456789012345, math.nan]})
    weights = {"name": "pt_inception-2015-12-05", "source": "pytorch-fid", "sha256": "ab" * 32}
    frame.attrs["conventions"] = {"complete": {"fid": {"weights": weights}}}
    back = _frame(_frame_record(frame))
    assert fid_weights([back]) == weights
    assert back["value"][0] == frame["value"][0] and math.isnan(back["value"][1])


def test_downstream_records_are_keyed_by_the_synthesis_not_only_its_folder(tmp_path):
    """Old: the U-Net record key held the synthesis folder's path only, so images remade in the same
    folder (a run retrained into its keyed directory) reused U-Nets trained on the old images."""
    from synthbench.downstream.experiment import _key
    from synthbench.downstream.mix import Mix
    from synthbench.downstream.sources import SyntheticSource
    from synthbench.downstream.train import UNetProtocol

    mix = Mix(experiment="replace", ratio=0.5, real_indices=(0, 1), synthetic_ids=("00002", "00003"))
    protocol = UNetProtocol.named("quick")
    first = SyntheticSource("ours", tmp_path, ["00002", "00003"], {"run": "r", "generate_seconds": 1.0})
    again = SyntheticSource("ours", tmp_path, ["00002", "00003"], {"run": "r", "generate_seconds": 1.7})
    assert _key("h", protocol, mix, first, 2) == _key("h", protocol, mix, first, 2)
    assert _key("h", protocol, mix, first, 2) != _key("h", protocol, mix, again, 2)
    real_only = Mix(experiment="replace", ratio=0.0, real_indices=(0, 1, 2, 3), synthetic_ids=())
    assert _key("h", protocol, real_only, first, 2) == _key("h", protocol, real_only, again, 2)  # no synthetic images used
