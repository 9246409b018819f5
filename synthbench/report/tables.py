"""Leaderboard tables: seed aggregation, best-per-column marking and paired significance tests.

One structure (:class:`Table`) feeds both leaderboard.md and report.html, so both always show
the same numbers. Conventions (paper Sec. "Evaluation": mean +- 95% CI over 10 folds):

* one seed: the cell is the metric value +- its 95% interval half-width; the ``interval`` column
  of the results says which (paired metrics: mean and Student-t CI over the test-set folds;
  FID/KID/FRD: the value on all images and a delete-one-fold jackknife interval);
* several seeds: the mean of the per-seed values +- their sample standard deviation (the spread
  across seeds);
* best: the best mean in the column (lower for FID/KID/RMSE, higher otherwise); ties all count;
  a column whose defined values are all identical (e.g. a Dice of 0 in every row) or that holds
  fewer than two values is not ranked: no best mark and no test; nor is a KID column with a
  negative value (below its sampling noise);
* a metric that could not be computed (e.g. FRD without pyradiomics) shows its status, never a number;
* significance: a paired t-test (:func:`synthbench.stats.paired_test`) of each method against the
  column's best method, pairing fold i of seed s with fold i of seed s (seeds both methods ran);
  without per-fold values it pairs the per-seed values. The p-values of one table form one
  family and are Holm-adjusted (Holm 1979, :func:`holm`); an adjusted ``p < ALPHA`` marks the
  cell with a dagger: significantly different from the best. The p-value tables show both;
* downstream scores (Dice, sensitivity, specificity: fractions in the results) are shown as
  percentages, like the paper's Tables III/IV; the real-only configuration (synthetic share 0%)
  is one row, labelled :data:`BASELINE_LABEL`, above the methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from synthbench.report.results import (
    DOWNSTREAM_METRICS,
    HIGHER_IS_BETTER,
    METRICS,
    NONNEGATIVE,
    SETTINGS,
    ComparisonResults,
)

#: Significance level of the paired test against the best method.
ALPHA = 0.05
SIG_MARK = "\u2020"  # dagger
#: Marks a method that saw the real target slice at test time (``--style real``).
REAL_MARK = "\u2021"  # double dagger
REAL_NOTE = f"{REAL_MARK}: synthesized with the real target slice as style image (reconstruction: the method saw the answer)"
#: Units shown in a column header (the definitions beside the table give every scale).
METRIC_UNITS = {"PSNR": " (dB)"}
#: Row label of the downstream configuration without synthetic images (the paper's "0%" row).
BASELINE_LABEL = "real only (baseline)"
#: Downstream metrics stored as fractions and shown as percentages (paper Tables III/IV: Dice %).
PERCENT_METRICS = frozenset({"Dice", "Dice (per image)", "sensitivity", "specificity"})


def _row_name(method: str, real: set[str]) -> str:
    return f"{method} {REAL_MARK}" if method in real else method


def _with_real_note(note: str, methods, real: set[str]) -> str:
    return f"{note} {REAL_NOTE}." if real & set(methods) else note


@dataclass
class Cell:
    """One aggregated table entry."""

    mean: float
    spread: float
    n_seeds: int
    seeds: list[int]
    per_seed: dict[int, float]
    folds: dict[int, list[float]]
    best: bool = False
    p_vs_best: float | None = None
    #: ``p_vs_best`` Holm-adjusted over every test of the table (what the dagger uses).
    p_adjusted: float | None = None
    #: Magnitude that sets the number of decimals (the column's median, so a column is uniform).
    ref: float = math.nan
    #: "ok", or why there is no value (e.g. "not installed (...)"): shown instead of a number.
    status: str = "ok"

    @property
    def significant(self) -> bool:
        return self.p_adjusted is not None and not math.isnan(self.p_adjusted) and self.p_adjusted < ALPHA

    def text(self) -> str:
        """``mean ± spread`` with a dagger when significantly different from the best."""
        if self.status != "ok":
            return self.status.split(" (")[0]
        ref = self.mean if math.isnan(self.ref) else self.ref
        s = fmt(self.mean, ref)
        if not math.isnan(self.spread):
            spread = fmt(self.spread, ref)
            if self.spread > 0 and not spread.strip("0.-"):  # too small for the column's decimals
                spread = f"{self.spread:.1g}"
            s += f" \u00b1 {spread}"
        if self.significant:
            s += f" {SIG_MARK}"
        return s


@dataclass
class Column:
    key: str
    label: str
    group: str
    higher_is_better: bool


@dataclass
class Table:
    """Rows x columns of :class:`Cell` (``None`` where a method lacks the value)."""

    key: str
    title: str
    row_headers: list[str]
    columns: list[Column]
    rows: list[tuple[list[str], list[Cell | None]]] = field(default_factory=list)
    note: str = ""
    #: Row label (the method) -> why it failed; such a row has no values and shows the reason.
    failed: dict[str, str] = field(default_factory=dict)
    #: Paired tests in the table (the Holm family); column labels that were not ranked.
    n_tests: int = 0
    unranked: list[str] = field(default_factory=list)
    #: "%" when the values are percentages (downstream), else "".
    unit: str = ""

    def best_rows(self, col: int) -> list[str]:
        return [" ".join(labels) for labels, cells in self.rows if cells[col] is not None and cells[col].best]


def fmt(value: float, ref: float | None = None) -> str:
    """Decimals from the magnitude of ``ref`` (the column's median): 4 below 2, 2 below 100, else 1."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    ref = abs(value if ref is None or math.isnan(ref) else ref)
    if ref >= 100:
        return f"{value:.1f}"
    if ref >= 2:
        return f"{value:.2f}"
    return f"{value:.4f}"


def _aggregate(group: pd.DataFrame, value_col: str) -> Cell:
    if "status" in group and len(group) and (group["status"].fillna("ok") != "ok").all():
        status = str(group["status"].iloc[0])
        return Cell(math.nan, math.nan, len(group), sorted(group["seed"]), {}, {}, status=status)
    if "status" in group:
        group = group[group["status"].fillna("ok") == "ok"]
    group = group.sort_values("seed")
    per_seed = {int(s): float(v) for s, v in zip(group["seed"], group[value_col], strict=True)}
    folds = {int(s): list(f) for s, f in zip(group["seed"], group["folds"], strict=True)}
    values = np.array([v for v in per_seed.values() if not math.isnan(v)], dtype=np.float64)
    if len(group) == 1:
        mean, spread = float(group[value_col].iloc[0]), float(group["ci95"].iloc[0])
    elif values.size == 0:
        mean, spread = math.nan, math.nan
    else:
        mean = float(values.mean())
        spread = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return Cell(mean, spread, len(per_seed), sorted(per_seed), per_seed, folds)


def paired_p(cell: Cell, best: Cell) -> float | None:
    """Paired test of ``cell`` against ``best`` over folds of the common seeds (see module doc)."""
    from synthbench.stats import paired_test  # single definition of the test (metrics engineer)

    seeds = sorted(set(cell.seeds) & set(best.seeds))
    a: list[float] = []
    b: list[float] = []
    folds_ok = bool(seeds)
    for s in seeds:
        fa, fb = cell.folds.get(s, []), best.folds.get(s, [])
        if not fa or len(fa) != len(fb):
            folds_ok = False
            break
        a.extend(fa)
        b.extend(fb)
    if not folds_ok:
        a = [cell.per_seed[s] for s in seeds]
        b = [best.per_seed[s] for s in seeds]
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    if len(pairs) < 2:
        return None
    return float(paired_test([p[0] for p in pairs], [p[1] for p in pairs]))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979): with the m p-values sorted ascending, the
    i-th smallest (i = 0..m-1) becomes ``min(1, max_{j <= i} (m - j) p_(j))``. Same order as given."""
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: p_values[k])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _mark(table: Table) -> Table:
    """Mark the best cell(s) per column, test every other cell against the best one, and
    Holm-adjust the table's p-values.

    A column is not ranked (no best, no test) when its defined values are all identical or fewer
    than two (nothing to rank), or when it is a :data:`NONNEGATIVE` metric (KID) holding a
    negative value: the estimate is below its noise there. The note says which columns.
    """
    negative = []
    for j, column in enumerate(table.columns):
        cells = [cells[j] for _, cells in table.rows if cells[j] is not None and not math.isnan(cells[j].mean)]
        if not cells:
            continue
        # percentages get 2 decimals whatever their size (the paper's Tables III/IV)
        ref = 50.0 if table.unit == "%" else float(np.median([abs(c.mean) for c in cells]))
        for c in cells:
            c.ref = ref
        name = f"{column.group} {column.label}" if column.group != column.label else column.label
        if column.key.split("/")[-1] in NONNEGATIVE and min(c.mean for c in cells) < 0:
            negative.append(name)
            continue
        if len({c.mean for c in cells}) < 2:
            table.unranked.append(name)
            continue
        best_value = max(c.mean for c in cells) if column.higher_is_better else min(c.mean for c in cells)
        best_cells = [c for c in cells if c.mean == best_value]
        for c in best_cells:
            c.best = True
        best_cell = best_cells[0]
        for c in cells:
            if not c.best:
                c.p_vs_best = paired_p(c, best_cell)
    tested = [c for _, cells in table.rows for c in cells
              if c is not None and c.p_vs_best is not None and not math.isnan(c.p_vs_best)]
    for c, p in zip(tested, holm([c.p_vs_best for c in tested]), strict=True):
        c.p_adjusted = p
    table.n_tests = len(tested)
    if table.unranked:
        table.note += (f" Not ranked (every value identical, or fewer than two values): {', '.join(table.unranked)}: "
                       "no best and no test.")
    if negative:
        table.unranked += negative
        table.note += (f" Not ranked: {', '.join(negative)} (a negative KID is below its sampling noise: "
                       "no measurable difference from the real images).")
    if table.n_tests:
        table.note += (f" Multiple comparisons: {table.n_tests} paired tests in this table; {SIG_MARK} uses their "
                       f"Holm-adjusted p-values (family: this table); the p-value table lists unadjusted and Holm p.")
    return table


def _spread_note(frame: pd.DataFrame) -> str:
    seeds = frame.groupby("method")["seed"].nunique() if len(frame) else pd.Series(dtype=int)
    parts = []
    if (seeds == 1).any():
        parts.append("one seed: value \u00b1 95% interval over test-set folds")
    if (seeds > 1).any():
        parts.append("several seeds: mean \u00b1 SD across seeds")
    parts.append("**bold**: best in column")
    parts.append(f"{SIG_MARK}: paired t-test vs the column's best, Holm-adjusted p < {ALPHA}")
    return "; ".join(parts) + "."


def _with_plugin(results: ComparisonResults, headers: list[str]) -> list[str]:
    """Row headers plus a "plugin" column (distribution and version) when any run records one."""
    if any(results.plugin_label(m) for m in results.methods):
        return [headers[0], "plugin", *headers[1:]]
    return headers


def _labels(table: Table, results: ComparisonResults, method: str, *rest: str) -> list[str]:
    """A row's header cells: the method (marked when its synthesis saw the real image), its plugin
    when the table has that column, then ``rest``."""
    name = _row_name(method, results.real_image_methods())
    if "plugin" in table.row_headers:
        return [name, results.plugin_label(method) or "-", *rest]
    return [name, *rest]


def _quality_note(iq: pd.DataFrame) -> str:
    """Which interval each metric carries, what the extra columns are, and the edge-case counts."""
    parts = []
    if "interval" in iq and len(iq):
        by_kind = {k: sorted(set(iq.loc[iq["interval"] == k, "metric"])) for k in ("jackknife", "folds")}
        if by_kind["jackknife"]:
            parts.append(f"{', '.join(by_kind['jackknife'])}: value on all test images \u00b1 95% delete-one-fold "
                         "jackknife interval")
        if by_kind["folds"]:
            parts.append(f"{', '.join(by_kind['folds'])}: mean over test-set folds \u00b1 95% Student-t interval")
    present = set(iq["metric"]) if len(iq) else set()
    if "SSIM" in present and "SSIM (paper)" in present:
        parts.append("lung SSIM: the SSIM map averaged over lung pixels; SSIM (paper): the paper's definition, "
                     "the whole lung-only image, mostly the constant outside (labelled, not comparable)")
    if "FRD" in present:
        parts.append("FRD: Frechet radiomics distance (frd-score v1, PyRadiomics features), a feature space made "
                     "for medical images")
    for column, text, levels in (
        ("excluded", "images with an empty lung mask left out of every metric", ["method"]),
        ("identical", "identical pairs (scored; PSNR at its 8-bit ceiling)", ["method", "setting"]),
    ):
        if column in iq and len(iq) and iq[column].fillna(0).max() > 0:
            per = iq.groupby(levels)[column].max().fillna(0)
            per = per[per > 0]
            parts.append(f"{text}: " + ", ".join(
                f"{' '.join(k) if isinstance(k, tuple) else k} {int(v)}" for k, v in per.items()))
    return (" " + "; ".join(parts) + ".") if parts else ""


def image_quality_table(results: ComparisonResults) -> Table:
    """Paper Table II: methods x {complete, lung} x {FID, PSNR, SSIM, RMSE, KID}."""
    iq = results.image_quality
    present = set(iq["metric"])
    # Table II's metrics first, then plugin metrics; auxiliary spreads ("kid_std") stay in the CSV only.
    extra = sorted(m for m in present - set(METRICS) if not m.lower().endswith("_std"))
    metrics = [m for m in METRICS if m in present] + extra
    columns: list[Column] = []
    for setting in SETTINGS:
        for metric in metrics:
            sub = iq[(iq["setting"] == setting) & (iq["metric"] == metric)]
            if len(sub):
                hib = bool(sub["higher_is_better"].iloc[0])
                arrow = "\u2191" if hib else "\u2193"
                columns.append(Column(f"{setting}/{metric}", f"{metric}{METRIC_UNITS.get(metric, '')} {arrow}", setting, hib))
    real = results.real_image_methods()
    failures = results.failures
    methods = [m for m in results.methods if m in set(iq["method"]) or m in failures]
    table = Table("image_quality", "Image quality (Table II)", _with_plugin(results, ["method"]), columns,
                  note=_with_real_note(_spread_note(iq) + _quality_note(iq), methods, real))
    for method in methods:
        if method in failures:  # no values from a method with a failed run: only the reason
            table.failed[method] = failures[method]
            table.rows.append((_labels(table, results, method), [None] * len(columns)))
            continue
        cells: list[Cell | None] = []
        for column in columns:
            setting, metric = column.key.split("/", 1)
            sub = iq[(iq["method"] == method) & (iq["setting"] == setting) & (iq["metric"] == metric)]
            cells.append(_aggregate(sub, "value") if len(sub) else None)
        table.rows.append((_labels(table, results, method), cells))
    return _mark(table)


def ratio_label(ratio: float) -> str:
    return f"{100 * float(ratio):g}%"


#: What each downstream metric is (synthbench.downstream.scores).
DOWNSTREAM_NOTES = {
    "Dice": " Pixel counts pooled within each fold (the paper's Dice).",
    "Dice (per image)": " Mean over the fold's images of each image's Dice (MONAI DiceMetric, "
                        "ignore_empty=True: images without the class in the ground truth are left out).",
    "specificity": " Pooled specificity is dominated by the true negatives of the body's outside and the "
                   "healthy lung, so it stays near 100%: read Dice and sensitivity for the lesions.",
}


def _as_percent(frame: pd.DataFrame) -> pd.DataFrame:
    """Fractions (value, interval, per-fold values) times 100; paired tests are unchanged by it."""
    out = frame.copy()
    out["mean"] = out["mean"].astype(float) * 100.0
    out["ci95"] = out["ci95"].astype(float) * 100.0
    out["folds"] = [[100.0 * v for v in f] for f in out["folds"]]
    return out


def downstream_tables(results: ComparisonResults) -> list[Table]:
    """Paper Tables III (replace) and IV (add): one table per experiment and metric, rows
    method x synthetic ratio, columns the segmented classes. Scores in %; the configuration
    without synthetic images (ratio 0) is one row, :data:`BASELINE_LABEL`, above the methods."""
    ds = results.downstream
    tables: list[Table] = []
    if not len(ds):
        return tables
    titles = {"replace": "Replace real with synthetic (Table III)", "add": "Add synthetic to real (Table IV)"}
    present_metrics = set(ds["metric"])
    metrics = [m for m in DOWNSTREAM_METRICS if m in present_metrics] + sorted(present_metrics - set(DOWNSTREAM_METRICS))
    method_order = {m: i for i, m in enumerate(results.methods)}
    real = results.real_image_methods()
    for experiment in [e for e in titles if e in set(ds["experiment"])]:
        for metric in metrics:
            sub = ds[(ds["experiment"] == experiment) & (ds["metric"] == metric)]
            if not len(sub):
                continue
            unit = "%" if metric in PERCENT_METRICS else ""
            if unit:
                sub = _as_percent(sub)
            hib = HIGHER_IS_BETTER.get(metric, True)
            classes = list(dict.fromkeys(sub["class"]))
            columns = [Column(str(c), str(c), metric, hib) for c in classes]
            table = Table(
                f"downstream_{experiment}_{metric}",
                f"{titles[experiment]}: {metric}{' (%)' if unit else ''}",
                _with_plugin(results, ["method", "synthetic"]),
                columns,
                note=_with_real_note(_spread_note(sub) + DOWNSTREAM_NOTES.get(metric, ""), set(sub["method"]), real),
                unit=unit,
            )
            keys = sorted(
                {(m, float(r)) for m, r in zip(sub["method"], sub["ratio"], strict=True)},
                key=lambda k: (k[1] != 0.0, method_order.get(k[0], len(method_order)), k[1]),
            )
            baseline = next((k for k in keys if k[1] == 0.0), None)  # real only: the same for every method
            for method, ratio in keys:
                if ratio == 0.0 and (method, ratio) != baseline:
                    continue
                cells: list[Cell | None] = []
                for cls in classes:
                    g = sub[(sub["method"] == method) & (sub["ratio"].astype(float) == ratio) & (sub["class"] == cls)]
                    cells.append(_aggregate(g, "mean") if len(g) else None)
                if ratio == 0.0:
                    labels = [BASELINE_LABEL, *(["-"] if "plugin" in table.row_headers else []), ratio_label(ratio)]
                else:
                    labels = _labels(table, results, method, ratio_label(ratio))
                table.rows.append((labels, cells))
            tables.append(_mark(table))
    return tables


def significance_frame(tables: list[Table]) -> pd.DataFrame:
    """Long table of every cell: best flag and p-value against the best (for results.json)."""
    rows = []
    for t in tables:
        for labels, cells in t.rows:
            labels = [x for h, x in zip(t.row_headers, labels, strict=True) if h != "plugin"]
            for column, cell in zip(t.columns, cells, strict=True):
                if cell is None:
                    continue
                rows.append({
                    "table": t.key, "row": " ".join(labels), "column": column.key, "mean": cell.mean,
                    "spread": cell.spread, "unit": t.unit, "n_seeds": cell.n_seeds, "best": cell.best,
                    "p_vs_best": cell.p_vs_best, "p_holm": cell.p_adjusted, "significant": cell.significant,
                })
    return pd.DataFrame(rows)
