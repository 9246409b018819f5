"""Leaderboard report (issue 8): leaderboard.md, report.html, results.csv and results.json.

``render_report(results, out_dir)`` turns a :class:`ComparisonResults` into the paper's
Tables II-IV (measured, best marked, paired significance against the best), image grids like
Figs. 6-7, training curves, run manifests, and the paper's own numbers in a separate section.
"""

from synthbench.report.render import ReportPaths, render_report, results_frame
from synthbench.report.results import (
    DOWNSTREAM_COLUMNS,
    IMAGE_QUALITY_COLUMNS,
    ComparisonResults,
    MethodRun,
    manifest_summary,
)

__all__ = [
    "ComparisonResults",
    "MethodRun",
    "ReportPaths",
    "render_report",
    "results_frame",
    "manifest_summary",
    "IMAGE_QUALITY_COLUMNS",
    "DOWNSTREAM_COLUMNS",
]
