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
