"""The report states each table's images, every method's test time, marks rows that saw the real
image, and lists the departures (issue 13)."""

from __future__ import annotations

import json
import re

from test_report_render import make_results

from synthbench.compare import evaluation_plan
from synthbench.report import render_report
from synthbench.report.tables import REAL_MARK


def test_report_counts_test_time_real_image_mark_and_departures(tmp_path):
    results = make_results(tmp_path)
    for run in results.runs:
        record = json.loads((run.synthesis_dir / "synthesis.json").read_text())
        real = run.method == "sean"
        record.update(test_time="eval mode; style: the real target slice" if real else "eval mode",
                      uses_real_image=real, style_mode="real" if real else "none")
        (run.synthesis_dir / "synthesis.json").write_text(json.dumps(record))
    results.evaluation = evaluation_plan({"test_aug": 10_220, "seg_test_aug": 10_220}, 10)
    paths = render_report(results, tmp_path / "out")
    board = paths.markdown.read_text()
    assert "Images: 10,220 images per method (test_aug), 10 folds of 1,022." in board
    assert "tested on 10,220 images of seg_test_aug in 10 folds of 1,022" in board
    assert f"| sean {REAL_MARK} |" in board and f"| ours {REAL_MARK} |" not in board
    assert "real target slice as style image" in board
    assert re.search(r"^\| ours \| 0 \|[^\n]*\| finished \| eval mode \|", board, re.M)  # runs table: test time
    assert "### Departures from the papers" in board and "U-Net test set (Tables III/IV)" in board
    assert "**ours**" in board and "G1's upsampling path (Fig. 3)" in board  # ours' own list, from its run config
    page = paths.html.read_text()
    assert f"sean {REAL_MARK}" in page and "Departures from the papers" in page and "10,220 images" in page
    summary = json.loads(paths.json.read_text())
    assert summary["real_image_methods"] == ["sean"] and summary["evaluation"]["image_quality"]["images"] == 10_220
