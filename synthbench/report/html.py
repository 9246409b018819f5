"""report.html: one self-contained page (inline CSS and JS, images as base64 data URIs).

Sections: summary, measured leaderboard tables (paper Tables II-IV; best per column marked,
sortable by clicking a header), image grids (paper Figs. 6-7), loss curves, DESUM alpha / DFM
beta, run manifests, wall times, and the paper's published numbers in their own labelled
section. The page loads nothing from outside: no URL appears in it.

Two hooks for headless checks: an inline script records every page error into the
``data-js-errors`` attribute of ``<html>``; opening the page with the fragment ``#selftest``
(or ``#selftest-N``) clicks the header of column 1 (or N) of the first measured table twice
(ascending, then descending) and writes the row orders into ``data-selftest`` on ``<body>``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re

from synthbench.report import published
from synthbench.report.figures import Grid
from synthbench.report.markdown import (
    FID_NOTE,
    PUBLISHED_HEADING,
    PUBLISHED_UNITS,
    column_name,
    sampling_text,
    wall_time_text,
)
from synthbench.report.results import ComparisonResults, manifest_summary
from synthbench.report.settings import (
    CLASS_NAME_NOTE,
    DOWNSTREAM_DEFINITIONS,
    QUALITY_DEFINITIONS,
    notes_for,
    settings_rows,
)
from synthbench.report.tables import ALPHA, BASELINE_LABEL, SIG_MARK, Table, fmt

BASELINE_ROW = ' class="baseline" title="no synthetic images: the real-only baseline every method is compared with"'

CSS = """
:root{--ink:#1d2330;--muted:#5b6475;--line:#d9dee7;--accent:#1f5fbf;--best:#e3f1e4;--bestink:#145a1e;--pub:#fbf6e9}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Liberation Sans",sans-serif;color:var(--ink);background:#f5f7fa}
header{background:#18223a;color:#fff;padding:22px 36px}
header h1{margin:0 0 6px;font-size:24px;font-weight:600}
header .meta{color:#c4cde0;font-size:13px}
header code{color:#fff}
nav{background:#fff;border-bottom:1px solid var(--line);padding:8px 36px;position:sticky;top:0;z-index:2}
nav a{color:var(--accent);text-decoration:none;margin-right:18px;font-size:13px}
main{padding:8px 36px 40px;max-width:1800px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:18px 22px;margin:18px 0;overflow-x:auto}
h2{font-size:19px;margin:0 0 10px}
h3{font-size:15px;margin:18px 0 8px}
p.note{color:var(--muted);font-size:12.5px;margin:4px 0 10px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 4px}
th,td{border-bottom:1px solid var(--line);padding:5px 10px;text-align:right;white-space:nowrap}
th{background:#eef1f6;font-weight:600}
th.group{text-align:center;border-left:2px solid #fff}
td.rowhead,th.rowhead{text-align:left}
table.sortable thead tr:last-child th{cursor:pointer;user-select:none}
table.sortable thead tr:last-child th:hover{background:#dde4f0}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
td.best{background:var(--best);color:var(--bestink)}
td.sig{color:#7a3a12}
td.failed{color:#a40000;font-weight:600}
tr.baseline td{background:#f4f4f4;font-style:italic;border-bottom:2px solid #b9c0cc}
table.settings td{text-align:left;white-space:normal;max-width:900px;overflow-wrap:anywhere}
table.settings td.rowhead{font-weight:600;white-space:nowrap}
.warn{background:#fff4e0;border-left:4px solid #d08a00;padding:6px 10px;margin:6px 0;font-size:13px}
dl.defs{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;font-size:12.5px;color:var(--muted);margin:8px 0}
dl.defs dt{font-weight:600;color:var(--ink)}dl.defs dd{margin:0}
tbody tr:hover td{background:#f3f6fb}
tbody tr:hover td.best{background:#d3ead5}
.pub{background:var(--pub);border-color:#e8d9a8}
.pub .banner{display:inline-block;background:#8a6d1a;color:#fff;border-radius:4px;padding:2px 9px;font-size:12px;font-weight:600;letter-spacing:.02em}
.pub th{background:#f3ead0}
.grid{display:grid;gap:10px 8px;align-items:start;margin:8px 0 18px}
.tile{text-align:center;font-size:12px;color:var(--muted)}
.tile img{display:block;width:100%;height:auto;border-radius:3px;image-rendering:pixelated;background:#000}
.tile img.crop{margin-top:4px;outline:1px solid #d6b400}
.tile .cap{font-weight:600;color:var(--ink);margin-bottom:3px}
.sample{font-size:12px;color:var(--muted);margin:12px 0 2px}
img.plot{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
details{margin:4px 0}
pre{background:#f3f5f9;padding:8px;border-radius:4px;font-size:11.5px;overflow:auto;max-height:320px}
td.wrap{text-align:left;white-space:normal;max-width:240px;overflow-wrap:anywhere;font-size:12px}
footer{color:var(--muted);font-size:12px;padding:0 36px 30px}
"""

ERROR_HOOK = """
(function(){var el=document.documentElement;el.setAttribute('data-js-errors','0');
function rec(msg){var n=+el.getAttribute('data-js-errors')+1;el.setAttribute('data-js-errors',String(n));
el.setAttribute('data-js-error-messages',(el.getAttribute('data-js-error-messages')||'')+msg+'\\n');}
window.addEventListener('error',function(e){rec(String(e.message||e.type));},true);
window.addEventListener('unhandledrejection',function(e){rec('unhandled rejection: '+String(e.reason));});
var ce=console.error;console.error=function(){rec('console.error: '+Array.prototype.join.call(arguments,' '));return ce.apply(console,arguments);};
})();
"""

SORT_JS = """
(function(){
function keyOf(td){var v=td.getAttribute('data-sort');if(v===null||v===''){return {n:false,v:td.textContent.trim()};}
var f=parseFloat(v);return isNaN(f)?{n:false,v:v}:{n:true,v:f};}
function cmp(a,b){if(a.n&&b.n)return a.v-b.v;if(a.n)return -1;if(b.n)return 1;return a.v<b.v?-1:a.v>b.v?1:0;}
function sortBy(th){var table=th.closest('table');var tbody=table.tBodies[0];
var idx=+th.getAttribute('data-col');var dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
table.querySelectorAll('thead th[aria-sort]').forEach(function(h){h.removeAttribute('aria-sort');});
th.setAttribute('aria-sort',dir);var rows=Array.prototype.slice.call(tbody.rows);
rows.sort(function(r1,r2){var c=cmp(keyOf(r1.cells[idx]),keyOf(r2.cells[idx]));return dir==='ascending'?c:-c;});
function pinned(r){return r.classList.contains('baseline');}
rows.filter(pinned).concat(rows.filter(function(r){return !pinned(r);})).forEach(function(r){tbody.appendChild(r);});}
document.querySelectorAll('table.sortable thead tr:last-child th').forEach(function(th){
th.addEventListener('click',function(){sortBy(th);});});
var st=location.hash.match(/^#selftest(?:-(\\d+))?$/);
if(st){var t=document.querySelector('table.sortable');var out={};
var th=t?t.querySelectorAll('thead tr:last-child th')[st[1]?+st[1]:1]:null;
if(th){
function order(){return Array.prototype.map.call(t.tBodies[0].rows,function(r){return r.cells[0].textContent.trim();});}
out.initial=order();th.click();out.ascending=order();th.click();out.descending=order();out.column=th.textContent.trim();}
document.body.setAttribute('data-selftest',JSON.stringify(out));}
})();
"""


def e(text) -> str:
    return html.escape(str(text), quote=True)


_HASH = re.compile(r"\b[0-9a-fA-F]{20,}\b")


def abbrev(text: str) -> str:
    """Long hex digests shortened to 12 characters (the full text stays in the cell's title)."""
    return _HASH.sub(lambda m: m.group(0)[:12] + "\u2026", str(text))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def table_html(table: Table) -> str:
    """A measured table: two header rows when columns come in groups, sortable, best marked."""
    groups = list(dict.fromkeys(c.group for c in table.columns))
    nh = len(table.row_headers)
    head = []
    if len(groups) > 1:
        cells = [f'<th class="rowhead" colspan="{nh}"></th>']
        for g in groups:
            span = sum(1 for c in table.columns if c.group == g)
            cells.append(f'<th class="group" colspan="{span}">{e(g)}</th>')
        head.append("<tr>" + "".join(cells) + "</tr>")
    cells = [f'<th class="rowhead" data-col="{i}">{e(h)}</th>' for i, h in enumerate(table.row_headers)]
    cells += [
        f'<th data-col="{nh + j}" title="{"higher" if c.higher_is_better else "lower"} is better">{e(c.label)}</th>'
        for j, c in enumerate(table.columns)
    ]
    head.append("<tr>" + "".join(cells) + "</tr>")
    body = []
    for labels, row in table.rows:
        tds = [f'<td class="rowhead">{e(x)}</td>' for x in labels]
        if labels[0] in table.failed:  # one cell per column, so that sorting still finds every cell
            tds.append(f'<td class="failed wrap" data-sort="">FAILED: {e(table.failed[labels[0]])}</td>')
            tds += ['<td data-sort="">-</td>'] * (len(table.columns) - 1)
            body.append("<tr>" + "".join(tds) + "</tr>")
            continue
        for column, cell in zip(table.columns, row, strict=True):
            if cell is None:
                tds.append('<td data-sort="">-</td>')
                continue
            classes = [c for c, on in (("best", cell.best), ("sig", cell.significant)) if on]
            tip = [f"seeds: {', '.join(f'{s}: {fmt(v, cell.mean)}' for s, v in cell.per_seed.items())}"]
            if cell.best:
                tip.append("best in column")
            elif column_name(column) in table.unranked:
                tip.append("column not ranked: no best, no test")
            elif cell.p_vs_best is not None and not math.isnan(cell.p_vs_best):
                tip.append(f"paired t-test vs best: p = {cell.p_vs_best:.3g} (Holm-adjusted over the table's "
                           f"{table.n_tests} tests: {cell.p_adjusted:.3g})")
            text = e(cell.text())
            text = f"<strong>{text}</strong>" if cell.best else text
            sort = "" if math.isnan(cell.mean) else repr(float(cell.mean))
            tds.append(
                f'<td class="{" ".join(classes)}" data-sort="{sort}" data-column="{e(column.key)}" '
                f'title="{e("; ".join(tip))}">{text}</td>'
            )
        body.append(f'<tr{BASELINE_ROW if labels[0] == BASELINE_LABEL else ""}>' + "".join(tds) + "</tr>")
    return (
        f'<table class="sortable measured" id="t-{e(table.key)}"><thead>{"".join(head)}</thead>'
        f'<tbody>{"".join(body)}</tbody></table>'
    )


def grid_html(grid: Grid) -> str:
    ncol = len(grid.rows[0])
    out = [f"<h3>{e(grid.title)}</h3>",
           '<p class="note">Per sample: full slice (yellow box: zoomed lesion region) and the zoomed crop beneath it.</p>']
    for name, row in zip(grid.samples, grid.rows, strict=True):
        out.append(f'<div class="sample">slice {e(name)}</div>')
        out.append(f'<div class="grid" style="grid-template-columns:repeat({ncol},minmax(90px,170px))">')
        for tile in row:
            out.append(
                f'<div class="tile"><div class="cap">{e(tile.caption)}</div>'
                f'<img class="full" alt="{e(tile.caption)} {e(name)}" src="{data_uri(tile.full)}">'
                f'<img class="crop" alt="{e(tile.caption)} {e(name)} zoomed lesion" src="{data_uri(tile.crop)}"></div>'
            )
        out.append("</div>")
    return "\n".join(out)


def published_html() -> str:
    out = [
        f'<section class="pub" id="published"><h2>{e(PUBLISHED_HEADING)}</h2>',
        '<span class="banner">PUBLISHED &mdash; NOT MEASURED HERE</span>',
        f'<p class="note">Source: {e(published.CITATION)}. Copied from the paper for orientation only; '
        f"{e(FID_NOTE)} {e(PUBLISHED_UNITS)} {e(CLASS_NAME_NOTE)}</p>",
    ]
    for key, (title, row_header, columns, rows) in published.TABLES.items():
        out.append(f"<h3>{e(title)} (published)</h3>")
        head = "".join(f"<th>{e(c)}</th>" for c in columns)
        body = "".join(
            f'<tr><td class="rowhead">{e(name)}</td>' + "".join(f"<td>{e(v)}</td>" for v in values) + "</tr>"
            for name, values in rows.items()
        )
        out.append(
            f'<table class="published" id="published-{e(key)}"><thead><tr><th class="rowhead">{e(row_header)}</th>'
            f"{head}</tr></thead><tbody>{body}</tbody></table>"
        )
    out.append("</section>")
    return "\n".join(out)


def runs_html(results: ComparisonResults) -> str:
    stages = list(dict.fromkeys(k for r in results.runs for k in r.wall_times))
    fields = ["seed", "versions", "git commit", "hardware", "data hash", "weights"]
    head = "".join(f"<th>{e(h)}</th>" for h in ["method", "plugin", "status", "test time", *fields[1:],
                                                 *[f"{s} time" for s in stages], "synthesis / image", "sampling"])
    rows, details = [], []
    for run in results.runs:
        manifest = run.manifest()
        summary = manifest_summary(manifest)
        cells = [f'<td class="rowhead">{e(run.method)} <span class="note">seed {run.seed}</span></td>',
                  f"<td>{e(run.plugin_text)}</td>",
                  f'<td class="wrap{" failed" if run.error else ""}">{e(run.status)}</td>',
                  f'<td class="wrap">{e(run.test_time())}</td>']
        cells += [
            f'<td class="wrap" title="{e(summary.get(f, ""))}">{e(abbrev(summary.get(f, "-")))}</td>' for f in fields[1:]
        ]
        cells += [f"<td>{e(wall_time_text(run.wall_times[s]) if s in run.wall_times else '-')}</td>" for s in stages]
        cells += [f"<td>{e(text)}</td>" for text in sampling_text(run.synthesis())]
        rows.append("<tr>" + "".join(cells) + "</tr>")
        config = run.config()
        details.append(
            f"<details><summary>{e(run.method)} seed {run.seed}: manifest.json"
            f"{' and config.json' if config else ''} ({e(run.run_dir or 'no run directory')})</summary>"
            f"<pre>{e(json.dumps(manifest, indent=2, sort_keys=True, default=str))}</pre>"
            + (f"<pre>{e(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre>" if config else "")
            + "</details>"
        )
    return (
        f'<table class="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        + "".join(details)
    )


def departures_html(results: ComparisonResults) -> str:
    """Every departure from the papers and official code that applies to this comparison."""
    parts = ['<h3>Departures from the papers</h3><p class="note">Where the evaluation and each compared method '
             "depart from the paper or the official code (docs/departures.md lists every method).</p>"]
    for what, rows in results.departures():
        body = "".join(f"<tr><td>{e(d.topic)}</td><td class=\"wrap\">{e(d.paper)}</td><td class=\"wrap\">{e(d.here)}</td>"
                       f"<td class=\"wrap\">{e(d.why)}</td></tr>" for d in rows)
        parts.append(f"<details><summary>{e(what)} ({len(rows)})</summary><table class=\"departures\"><thead><tr>"
                     "<th>what</th><th>paper / official code</th><th>here</th><th>why</th></tr></thead>"
                     f"<tbody>{body}</tbody></table></details>")
    return "".join(parts)


def settings_html(results: ComparisonResults) -> str:
    """The settings table (what the numbers were measured with) and the comparison-wide warnings."""
    rows = "".join(f'<tr><td class="rowhead">{e(k)}</td><td>{e(v)}</td></tr>' for k, v in settings_rows(results))
    return ('<section id="settings"><h2>Settings</h2><table class="settings"><tbody>' + rows + "</tbody></table>"
            + warnings_html(notes_for(results, "general")) + "</section>")


def warnings_html(notes: list[str]) -> str:
    return "".join(f'<div class="warn"><strong>Warning:</strong> {e(n)}</div>' for n in notes)


def definitions_html(rows) -> str:
    return ('<dl class="defs">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in rows) + "</dl>")


def render_html(
    results: ComparisonResults,
    iq: Table,
    downstream: list[Table],
    grids: list[Grid],
    losses: bytes | None,
    weights: bytes | None,
) -> str:
    """The whole report.html as a string."""
    nav = [("settings", "Settings"), ("leaderboard", "Image quality")]
    sections = [settings_html(results)]
    counts = results.image_counts()
    iq_count = f"Images: {counts['image_quality']}. " if "image_quality" in counts else ""
    ds_count = f'<p class="note">Images: {e(counts["downstream"])}.</p>' if "downstream" in counts else ""
    sections.append(
        '<section id="leaderboard"><h2>Image quality (measured; paper Table II)</h2>'
        f'<p class="note">{e(iq_count)}{e(iq.note.replace("**bold**", "green bold"))} {e(FID_NOTE)} '
        "Click a column header to sort.</p>"
        + warnings_html(notes_for(results, "image_quality"))
        + (table_html(iq) if iq.rows else "<p>No image-quality results.</p>")
        + definitions_html(QUALITY_DEFINITIONS)
        + "</section>"
    )
    if downstream:
        nav.append(("downstream", "Downstream"))
        parts = [f"<h3>{e(t.title)}</h3><p class=\"note\">{e(t.note.replace('**bold**', 'green bold'))}</p>{table_html(t)}" for t in downstream]
        sections.append('<section id="downstream"><h2>Downstream segmentation (measured; paper Tables III-IV)</h2>'
                        + ds_count + warnings_html(notes_for(results, "downstream"))
                        + f'<p class="note">{e(CLASS_NAME_NOTE)}</p>' + definitions_html(DOWNSTREAM_DEFINITIONS)
                        + "".join(parts) + "</section>")
    if grids:
        nav.append(("images", "Images"))
        sections.append('<section id="images"><h2>Synthetic images</h2>' + "".join(grid_html(g) for g in grids) + "</section>")
    if losses or weights:
        nav.append(("training", "Training"))
        body = ['<section id="training"><h2>Training</h2>']
        if losses:
            body.append(f'<h3>Loss curves</h3><img class="plot" alt="training losses per method" src="{data_uri(losses)}">')
        if weights:
            body.append(
                '<h3>DESUM &alpha; and DFM &beta; over training</h3>'
                f'<img class="plot" alt="alpha and beta over training" src="{data_uri(weights)}">'
            )
        body.append("</section>")
        sections.append("".join(body))
    nav.append(("runs", "Runs"))
    wall = ""
    if results.wall_times:
        wall = "<h3>Wall times</h3><table><tbody>" + "".join(
            f'<tr><td class="rowhead">{e(k)}</td><td>{e(wall_time_text(v))}</td></tr>' for k, v in results.wall_times.items()
        ) + "</tbody></table>"
    sections.append(f'<section id="runs"><h2>Runs and reproducibility</h2>{runs_html(results)}{wall}'
                    f"{departures_html(results)}</section>")
    nav.append(("published", "Published (paper)"))
    sections.append(published_html())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>synthbench report: {e(results.protocol)}</title>
<script>{ERROR_HOOK}</script>
<style>{CSS}</style></head>
<body>
<header><h1>synthbench leaderboard</h1>
<div class="meta">protocol <code>{e(results.protocol)}</code> &middot; data set {e(results.dataset)} &middot;
data hash <code title="{e(results.data_hash)}">{e(results.data_hash[:16])}</code> &middot;
methods {e(", ".join(results.methods))}</div></header>
<nav>{"".join(f'<a href="#{a}">{e(t)}</a>' for a, t in nav)}</nav>
<main>
{"".join(sections)}
</main>
<footer>Measured values: mean &plusmn; spread (see notes); {SIG_MARK}: paired t-test against the column's best, Holm-adjusted p &lt; {ALPHA} within each table.
Generated by synthbench.</footer>
<script>{SORT_JS}</script>
</body></html>
"""
