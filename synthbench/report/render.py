"""render_report: write leaderboard.md, report.html, results.csv, results.json (and figures/).

The directory is built under a temporary name and renamed when complete
(:func:`synthbench.io.atomic_directory`): the report directory is complete or absent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from synthbench.cli.console import progress
from synthbench.errors import SynthbenchError
from synthbench.io import atomic_directory, atomic_write_bytes, atomic_write_json, atomic_write_text
from synthbench.report.figures import image_grid, loss_curves, weight_curves
from synthbench.report.html import render_html
from synthbench.report.markdown import render_markdown
from synthbench.report.results import ComparisonResults, manifest_summary
from synthbench.report.settings import settings_rows
from synthbench.report.tables import downstream_tables, image_quality_table, significance_frame


@dataclass
class ReportPaths:
    """Where :func:`render_report` put each output."""

    root: Path
    markdown: Path
    html: Path
    csv: Path
    json: Path
    figures: list[Path] = field(default_factory=list)


def results_frame(results: ComparisonResults) -> pd.DataFrame:
    """Measured rows only, both tables stacked (``table`` says which), ``measured`` = True.

    ``folds`` is stored as a JSON list so the CSV round-trips.
    """
    iq = results.image_quality.copy()
    iq.insert(0, "table", "image_quality")
    ds = results.downstream.copy()
    ds.insert(0, "table", "downstream")
    frame = pd.concat([iq, ds], ignore_index=True, sort=False)
    frame["folds"] = [json.dumps([float(v) for v in f]) for f in frame["folds"]]
    frame["measured"] = True
    frame["source"] = "measured"
    frame["protocol"] = results.protocol
    frame["data_hash"] = results.data_hash
    frame["plugin"] = [results.plugin_label(str(m)) for m in frame["method"]]  # distribution and version
    return frame


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


def render_report(
    results: ComparisonResults, out_dir: str | Path, overwrite: bool = False, n_samples: int = 3
) -> ReportPaths:
    """Render the comparison (paper Tables II-IV, Figs. 6-7) into ``out_dir``; see module doc."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise SynthbenchError("report directory already exists (use overwrite to replace it)", out_dir)
    if not isinstance(results, ComparisonResults):
        raise SynthbenchError(f"render_report expects ComparisonResults, got {type(results).__name__}")
    steps = ["tables", "image grids", "training curves", "leaderboard.md", "report.html", "results"]
    figures: list[tuple[str, str, bytes]] = []  # caption, relative path, PNG
    with progress() as bar:
        task = bar.add_task("report", total=len(steps))
        iq = image_quality_table(results)
        downstream = downstream_tables(results)
        bar.advance(task)
        grids = [g for g in (image_grid(results, kind, n_samples) for kind in ("complete", "lung", "lesion")) if g is not None]
        for g in grids:
            figures.append((g.title, f"figures/grid_{g.kind}.png", g.png))
        bar.advance(task)
        losses, weights = loss_curves(results), weight_curves(results)
        if losses:
            figures.append(("Training losses", "figures/losses.png", losses))
        if weights:
            figures.append(("DESUM alpha and DFM beta", "figures/alpha_beta.png", weights))
        bar.advance(task)
        fig_links = {caption: rel for caption, rel, _ in figures}
        markdown = render_markdown(results, iq, downstream, fig_links)
        bar.advance(task)
        page = render_html(results, iq, downstream, grids, losses, weights)
        bar.advance(task)
        frame = results_frame(results)
        with atomic_directory(out_dir, overwrite=overwrite) as tmp:
            for _, rel, png in figures:
                atomic_write_bytes(tmp / rel, png)
            atomic_write_text(tmp / "leaderboard.md", markdown)
            atomic_write_text(tmp / "report.html", page)
            atomic_write_text(tmp / "results.csv", frame.to_csv(index=False))
            atomic_write_json(tmp / "results.json", _jsonable({
                "protocol": results.protocol,
                "dataset": results.dataset,
                "data_hash": results.data_hash,
                "methods": results.methods,
                "wall_times": results.wall_times,
                "runs": [
                    {"method": r.method, "seed": r.seed, "run_dir": str(r.run_dir) if r.run_dir else None,
                     "test_time": r.test_time(), "uses_real_image": r.uses_real_image(),
                     "synthesis_dir": str(r.synthesis_dir) if r.synthesis_dir else None,
                     "wall_times": r.wall_times, "manifest": manifest_summary(r.manifest()),
                     "plugin": r.provenance(), "status": "failed" if r.error else "finished",
                     "error": r.error, "failed_step": r.failed_step,
                     "synthesis": {k: r.synthesis().get(k) for k in ("seconds_per_image", "sampling", "seed")}}
                    for r in results.runs
                ],
                "rows": json.loads(frame.to_json(orient="records")),
                "leaderboard": json.loads(significance_frame([iq, *downstream]).to_json(orient="records")),
                "notes": results.notes,
                "evaluation": results.evaluation,
                "settings": results.settings,
                "settings_table": [{"setting": k, "value": v} for k, v in settings_rows(results)],
                "image_counts": results.image_counts(),
                "test_time": {r.method: r.test_time() for r in results.runs},
                "real_image_methods": sorted(results.real_image_methods()),
                "departures": [{"for": what, "rows": [d.to_dict() for d in rows]} for what, rows in results.departures()],
            }))
        bar.advance(task)
    return ReportPaths(
        root=out_dir,
        markdown=out_dir / "leaderboard.md",
        html=out_dir / "report.html",
        csv=out_dir / "results.csv",
        json=out_dir / "results.json",
        figures=[out_dir / rel for _, rel, _ in figures],
    )
