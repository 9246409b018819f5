"""leaderboard.md: the paper's Tables II-IV as measured here, then the published numbers apart.

Measured tables come from :mod:`synthbench.report.tables` (best per column in bold, dagger for a
significant difference from the best). The paper's own numbers (:mod:`synthbench.report.published`)
appear only under the heading :data:`PUBLISHED_HEADING`, never in a measured row.
"""

from __future__ import annotations

import math

from synthbench.report import published
from synthbench.report.results import ComparisonResults, manifest_summary
from synthbench.report.settings import (
    CLASS_NAME_NOTE,
    DOWNSTREAM_DEFINITIONS,
    QUALITY_DEFINITIONS,
    notes_for,
    settings_rows,
)
from synthbench.report.tables import Table, fmt

PUBLISHED_HEADING = "Published in the paper (not measured here)"
FID_NOTE = (
    "FID is measured in the standard pytorch-fid convention (2048-d Inception pool features) on all "
    "test images; the paper's FID values are on a different, unstated scale and are not comparable."
)
PUBLISHED_UNITS = ("Units as printed in the paper: PSNR in dB, SSIM unitless, Dice in %; the paper does not state "
                   "its RMSE scale (here RMSE is on [0, 1]) nor its FID convention.")


def _esc(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table_md(table: Table) -> str:
    """A measured table as GitHub Markdown (best in bold, daggers for significance)."""
    groups = {c.group for c in table.columns}
    labels = [f"{c.group} {c.label}" if len(groups) > 1 else c.label for c in table.columns]
    lines = [
        "| " + " | ".join(table.row_headers + labels) + " |",
        "|" + "---|" * len(table.row_headers) + "---:|" * len(table.columns),
    ]
    for row_labels, cells in table.rows:
        texts = []
        for cell in cells:
            if cell is None:
                texts.append("-")
            else:
                texts.append(f"**{cell.text()}**" if cell.best else cell.text())
        if row_labels[0] in table.failed and texts:
            texts[0] = f"FAILED ({_esc(table.failed[row_labels[0]])})"
        lines.append("| " + " | ".join([_esc(x) for x in row_labels] + texts) + " |")
    return "\n".join(lines)


def p_values_md(table: Table, adjusted: bool = False) -> str:
    """Per-cell p-values of the paired test against the column's best (``best`` for the best,
    ``not ranked`` in a column without a best); ``adjusted``: the Holm-adjusted ones."""
    unranked = set(table.unranked)
    lines = [
        "| " + " | ".join(table.row_headers + [f"{c.group} {c.label}" for c in table.columns]) + " |",
        "|" + "---|" * len(table.row_headers) + "---:|" * len(table.columns),
    ]
    for row_labels, cells in table.rows:
        texts = []
        for column, cell in zip(table.columns, cells, strict=True):
            p = None if cell is None else (cell.p_adjusted if adjusted else cell.p_vs_best)
            if cell is None:
                texts.append("-")
            elif cell.best:
                texts.append("best")
            elif column_name(column) in unranked:
                texts.append("not ranked")
            elif p is None or math.isnan(p):
                texts.append("n/a")
            else:
                texts.append(f"{p:.3g}")
        lines.append("| " + " | ".join([_esc(x) for x in row_labels] + texts) + " |")
    return "\n".join(lines)


def column_name(column) -> str:
    """How :func:`synthbench.report.tables._mark` names a column in ``Table.unranked``."""
    return f"{column.group} {column.label}" if column.group != column.label else column.label


def p_value_sections_md(table: Table, heading: str) -> list[str]:
    """The unadjusted and the Holm-adjusted p-value tables of a measured table."""
    if not table.n_tests:
        return [f"{heading}: no paired test (no column with a best and another value).", ""]
    return [f"{heading} (unadjusted; {table.n_tests} tests in this table):", "", p_values_md(table), "",
            "Holm-adjusted over those tests (what the dagger uses):", "", p_values_md(table, adjusted=True), ""]


def settings_md(results: ComparisonResults) -> list[str]:
    """The settings table, then the warnings that concern the whole comparison."""
    out = ["## Settings", "", "| setting | value |", "|---|---|"]
    out += [f"| {_esc(k)} | {_esc(v)} |" for k, v in settings_rows(results)]
    out.append("")
    out += warnings_md(notes_for(results, "general"))
    return out


def warnings_md(notes: list[str]) -> list[str]:
    return [line for note in notes for line in (f"> **Warning:** {_esc(note)}", "")]


def definitions_md(rows) -> list[str]:
    return ["Units and definitions:", "", *[f"- **{_esc(k)}**: {_esc(v)}" for k, v in rows], ""]


def published_md() -> str:
    """The paper's Tables II-V, verbatim, under their own heading."""
    out = [
        f"## {PUBLISHED_HEADING}",
        "",
        f"Source: {published.CITATION}. These numbers were **not** measured by this run; they are "
        "copied from the paper for orientation only. " + FID_NOTE + " " + PUBLISHED_UNITS + " " + CLASS_NAME_NOTE,
        "",
    ]
    for title, row_header, columns, rows in published.TABLES.values():
        out += [f"### {title} (published)", ""]
        out.append("| " + " | ".join([row_header, *columns]) + " |")
        out.append("|---|" + "---:|" * len(columns))
        for name, values in rows.items():
            out.append("| " + " | ".join([_esc(name), *values]) + " |")
        out.append("")
    return "\n".join(out)


def wall_time_text(seconds: float) -> str:
    if seconds is None or math.isnan(float(seconds)):
        return "n/a"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def sampling_text(record: dict) -> tuple[str, str]:
    """(synthesis time per image, sampler and steps) from a ``synthesis.json`` record; '-' if absent."""
    per_image = record.get("seconds_per_image")
    per_image = "-" if per_image is None else (f"{per_image * 1000:.1f} ms" if per_image < 1 else wall_time_text(per_image))
    sampling = record.get("sampling") or {}
    if not sampling:
        return per_image, "-"
    text = f"{sampling.get('sampler', '?')}, {sampling.get('steps', '?')} step(s)"
    if sampling.get("network_evaluations") not in (None, sampling.get("steps")):
        text += f", {sampling['network_evaluations']} network evaluations"
    return per_image, text


def runs_md(results: ComparisonResults) -> str:
    stages = list(dict.fromkeys(k for r in results.runs for k in r.wall_times))
    head = ["method", "seed", "plugin", "status", "test time", *[f"{s} time" for s in stages], "synthesis / image",
            "sampling", "git commit", "data hash", "hardware"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in results.runs:
        summary = manifest_summary(run.manifest())
        times = [wall_time_text(run.wall_times[s]) if s in run.wall_times else "-" for s in stages]
        lines.append("| " + " | ".join(_esc(x) for x in [
            run.method, str(run.seed), run.plugin_text, run.status, run.test_time(), *times, *sampling_text(run.synthesis()),
            summary.get("git commit", "-"),
            summary.get("data hash", "-")[:12], summary.get("hardware", "-"),
        ]) + " |")
    return "\n".join(lines)


def departures_md(results: ComparisonResults) -> str:
    """Every departure from the papers and official code that applies to this comparison."""
    out = ["Where the evaluation and each compared method depart from the paper or the official code "
           "(docs/departures.md lists every method):", ""]
    for what, rows in results.departures():
        out += [f"**{_esc(what)}**", "", "| what | paper / official code | here | why |", "|---|---|---|---|"]
        out += ["| " + " | ".join(_esc(x) for x in (d.topic, d.paper, d.here, d.why)) + " |" for d in rows]
        out.append("")
    return "\n".join(out)


def render_markdown(results: ComparisonResults, iq: Table, downstream: list[Table], figures: dict[str, str]) -> str:
    """The whole leaderboard.md; ``figures`` maps a caption to a relative PNG path."""
    counts = results.image_counts()
    out = [
        "# synthbench leaderboard",
        "",
        f"- Protocol: `{results.protocol}`",
        f"- Data set: {results.dataset}",
        f"- Data hash: `{results.data_hash}`",
        f"- Methods: {', '.join(results.methods)}",
        *[f"- **FAILED**: {_esc(m)} ({_esc(why)})" for m, why in results.failures.items()],
        "",
        "All numbers below were measured by this comparison, except the final section.",
        "",
        *settings_md(results),
        f"## {iq.title} (measured)",
        "",
        iq.note + " " + FID_NOTE,
        "",
        *([f"Images: {counts['image_quality']}.", ""] if "image_quality" in counts else []),
        *warnings_md(notes_for(results, "image_quality")),
        table_md(iq) if iq.rows else "_No image-quality results._",
        "",
        *definitions_md(QUALITY_DEFINITIONS),
    ]
    if iq.rows:
        out += ["### Paired test against the best method (p-values)", "",
                *p_value_sections_md(iq, "p-values of the paired t-test against the column's best")]
    if downstream:
        out += ["## Downstream segmentation (measured)", ""]
        if "downstream" in counts:
            out += [f"Images: {counts['downstream']}.", ""]
        out += warnings_md(notes_for(results, "downstream"))
        out += [CLASS_NAME_NOTE, "", *definitions_md(DOWNSTREAM_DEFINITIONS)]
        for t in downstream:
            out += [f"### {t.title}", "", t.note, "", table_md(t), "",
                    *p_value_sections_md(t, "p-values against the best")]
    if figures:
        out += ["## Figures", ""]
        out += [f"![{caption}]({path})" + "\n" for caption, path in figures.items()]
    out += ["## Runs", "", "Test time: the setting each method was synthesized with (every method sees only the label "
            "map unless marked).", "", runs_md(results), "", "### Departures from the papers", "", departures_md(results), ""]
    if results.wall_times:
        out += ["## Wall times", "", "| stage | time |", "|---|---:|"]
        out += [f"| {_esc(k)} | {wall_time_text(v)} |" for k, v in results.wall_times.items()]
        out.append("")
    out += [published_md()]
    return "\n".join(out).rstrip() + "\n"


__all__ = ["PUBLISHED_HEADING", "render_markdown", "table_md", "published_md", "fmt"]
