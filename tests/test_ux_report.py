"""The report a researcher publishes from (issue 22): no "best" among ties, Holm within a table,
one real-only baseline row, Dice in % with one class naming in both sections, a settings table at
the top, units and definitions beside the tables, warnings next to the numbers they concern."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_report_render import _md_table, make_results

from synthbench.data.spec import PAPER_CLASSES, DatasetSpec
from synthbench.downstream.train import UNetProtocol
from synthbench.engine.protocol import get_protocol
from synthbench.report import ComparisonResults, MethodRun, render_report
from synthbench.report.markdown import PUBLISHED_HEADING
from synthbench.report.settings import comparison_settings
from synthbench.report.tables import BASELINE_LABEL, SIG_MARK, Cell, downstream_tables, holm
from synthbench.stats import mean_ci

K = 5


def _ds_row(method, ratio, cls, folds, metric="Dice", experiment="replace"):
    mean, ci = mean_ci(folds)
    return {"experiment": experiment, "method": method, "seed": 0, "ratio": ratio, "n_real": 10,
            "n_synthetic": int(10 * ratio), "class": cls, "metric": metric, "mean": mean, "ci95": ci,
            "folds": list(folds)}


def _tied_results() -> ComparisonResults:
    """consolidation Dice is 0 in every fold of every row (the class never predicted): a tie."""
    rng = np.random.default_rng(1)
    rows = []
    for method, ratio, mu in (("ours", 0.0, 0.60), ("ours", 0.5, 0.64), ("spade", 0.5, 0.50)):
        rows.append(_ds_row(method, ratio, "ground_glass", mu + rng.normal(0, 0.01, K)))
        rows.append(_ds_row(method, ratio, "consolidation", [0.0] * K))
    iq = pd.DataFrame([{"method": m, "seed": 0, "setting": "complete", "metric": "PSNR", "value": v, "ci95": 0.1,
                        "n": 10, "folds": [v] * K, "higher_is_better": True} for m, v in (("ours", 25.0), ("spade", 25.0))])
    return ComparisonResults("smoke", "tiny", "00" * 32, [MethodRun("ours", 0), MethodRun("spade", 0)], iq,
                             pd.DataFrame(rows))


def test_identical_column_has_no_best_and_no_test(tmp_path):
    results = _tied_results()
    table = downstream_tables(results)[0]
    col = [c.key for c in table.columns].index("consolidation")
    cells = [cells[col] for _, cells in table.rows]
    assert not any(c.best for c in cells) and all(c.p_vs_best is None for c in cells)
    assert "Dice consolidation" in table.unranked and "no best and no test" in table.note
    gg = [cells[0] for _, cells in table.rows]
    assert sum(c.best for c in gg) == 1  # a column with different values is still ranked
    paths = render_report(results, tmp_path / "r")
    md = paths.markdown.read_text()
    rows = _md_table(md, "### Replace real with synthetic (Table III): Dice (%)")
    assert [r[3] for r in rows[2:]] == ["0.00 \u00b1 0.00"] * 3  # not bold, no dagger
    p_rows = _md_table(md.split("### Replace real with synthetic (Table III): Dice (%)")[1], "p-values against the best")
    assert {r[3] for r in p_rows[2:]} == {"not ranked"}
    iq = _md_table(md, "## Image quality (Table II) (measured)")
    assert iq[2][1] == iq[3][1] == "25.00 \u00b1 0.10"  # a tie of two methods: no bold either
    page = paths.html.read_text()
    assert not re.search(r'<td class="best[^"]*" [^>]*data-column="consolidation"', page)
    board = json.loads(paths.json.read_text())["leaderboard"]
    assert not [r for r in board if r["column"] in ("consolidation", "complete/PSNR") and r["best"]]


def test_holm_adjustment_and_dagger():
    # p-values 0.01, 0.04, 0.03, 0.005 (m = 4): 0.005*4, 0.01*3, 0.03*2, max(0.04*1, 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == []
    cell = Cell(1.0, 0.1, 1, [0], {0: 1.0}, {}, p_vs_best=0.03, p_adjusted=0.06)
    assert not cell.significant and SIG_MARK not in cell.text()  # raw p < 0.05 but Holm p is not


def test_report_counts_tests_and_says_holm(tmp_path):
    paths = render_report(make_results(tmp_path), tmp_path / "r")
    md = paths.markdown.read_text()
    measured = md.split(PUBLISHED_HEADING)[0]
    assert re.search(r"Multiple comparisons: \d+ paired tests in this table; \u2020 uses their Holm-adjusted", measured)
    assert "Holm-adjusted over those tests" in measured and "(unadjusted; " in measured
    assert "Holm" in paths.html.read_text()


def test_baseline_row_once_above_methods_and_dice_in_percent(tmp_path):
    results = make_results(tmp_path)
    paths = render_report(results, tmp_path / "r")
    md = paths.markdown.read_text()
    for heading in ("### Replace real with synthetic (Table III): Dice (%)", "### Add synthetic to real (Table IV): Dice (%)"):
        rows = _md_table(md, heading)
        labels = [r[0] for r in rows[2:]]
        assert labels[0] == BASELINE_LABEL and labels.count(BASELINE_LABEL) == 1 and rows[2][1] == "0%"
        assert "ours" in labels[1:]
    ds = results.downstream
    base = ds[(ds.experiment == "replace") & (ds.metric == "Dice") & (ds.ratio == 0) & (ds["class"] == "infection")].iloc[0]
    rows = _md_table(md, "### Replace real with synthetic (Table III): Dice (%)")
    shown = rows[2][rows[0].index("infection")].strip("*").split()
    assert float(shown[0]) == pytest.approx(100 * base["mean"], abs=0.006)  # a percentage, 2 decimals
    assert float(shown[2]) == pytest.approx(100 * base["ci95"], abs=0.006)
    page = paths.html.read_text()
    assert page.count('<tr class="baseline"') == len([t for t in downstream_tables(results)])
    assert "| ours | 0% |" not in md


def test_one_class_naming_in_measured_and_published(tmp_path):
    md = render_report(make_results(tmp_path), tmp_path / "r").markdown.read_text()
    measured, published = md.split(f"## {PUBLISHED_HEADING}")
    header = _md_table(measured, "### Replace real with synthetic (Table III): Dice (%)")[0]
    pub_header = _md_table(published, "### Table III")[0]
    assert header[2:] == pub_header[1:] == ["ground_glass", "consolidation", "infection"]
    assert "GGO" not in "".join(pub_header) and "ground_glass is the paper's GGO" in published
    assert "ground_glass is the paper's GGO" in measured  # the mapping is shown beside the measured tables too
    assert "PSNR (dB)" in published and "PSNR (dB)" in measured


def test_settings_table_at_top_with_weights_and_hardware(tmp_path):
    results = make_results(tmp_path)
    data = SimpleNamespace(size=32, spec=DatasetSpec(name="phantom", classes=PAPER_CLASSES),
                           manifest={"splits": {"train": {"count": 40}, "test_aug": {"count": 12},
                                                "seg_test_aug": {"count": 9}}})
    frame = pd.DataFrame()
    frame.attrs["conventions"] = {"complete": {"fid": {"weights": {"name": "pt_inception-2015-12-05",
                                                                   "source": "cache", "sha256": "f" * 64}}}}
    results.settings = comparison_settings(get_protocol("quick"), UNetProtocol.quick(), [0, 1], data, [frame], "cpu")
    results.notes = ["FID over 12 images (< 2048): the feature covariance is rank-deficient and FID is biased upward",
                     "The augmented segmentation-test split has 9 images: results use 9 folds instead of 10.",
                     "source: slices split, not patients"]
    paths = render_report(results, tmp_path / "r")
    md = paths.markdown.read_text()
    settings = dict((r[0], r[1]) for r in _md_table(md, "## Settings")[2:])
    assert md.index("## Settings") < md.index("## Image quality")
    assert settings["seeds"] == "0, 1" and "f" * 64 in settings["FID Inception weights"]
    assert "test_aug 12" in settings["images per split"] and "seg_test_aug 9" in settings["images per split"]
    assert "depth 3" in settings["U-Net"] and "steps 300" in settings["U-Net"]
    assert "epochs 10" in settings["protocol fields"] and "batch_size 4" in settings["protocol fields"]
    assert "32 px (the prepared data's size" in settings["image size"]  # quick names 64 px
    assert "cpu" in settings["hardware"]
    # each warning beside the numbers it concerns, not only at the bottom
    iq_part = md.split("## Image quality")[1].split("### Paired test")[0]
    ds_part = md.split("## Downstream segmentation (measured)")[1].split("### ")[0]
    top = md.split("## Image quality")[0]
    assert "FID over 12 images" in iq_part and "segmentation-test split has 9 images" in ds_part
    assert "slices split, not patients" in top
    assert "FID over 12 images" not in md.split("## Runs")[1]
    summary = json.loads(paths.json.read_text())
    assert summary["settings"]["seeds"] == [0, 1] and summary["settings"]["fid_weights"]["sha256"] == "f" * 64
    assert {"setting": "seeds", "value": "0, 1"} in summary["settings_table"]
    page = paths.html.read_text()
    assert page.index('id="settings"') < page.index('id="leaderboard"') and "f" * 64 in page
    leaderboard = page.split('id="leaderboard"')[1].split('id="downstream"')[0]
    assert "FID over 12 images" in leaderboard


def test_units_and_definitions_beside_tables(tmp_path):
    paths = render_report(make_results(tmp_path), tmp_path / "r")
    md = paths.markdown.read_text()
    iq_part = md.split("## Image quality")[1].split("## Downstream")[0]
    for text in ("**PSNR**: in dB", "**RMSE**: sqrt(MSE) / R: on the [0, 1] intensity scale", "**complete**",
                 "**lung (region-only)**", "complete PSNR = lung PSNR + 10 log10(all pixels / region pixels)"):
        assert text in iq_part, text
    assert "**Dice (%)**" in md.split("## Downstream")[1]
    page = paths.html.read_text()
    assert "<dt>PSNR</dt><dd>in dB" in page and "<dt>Dice (%)</dt>" in page


def test_complete_psnr_exceeds_lung_psnr_by_the_stated_amount():
    """The definition's claim, on the metric functions themselves."""
    import torch

    from synthbench.composite import complete as paste
    from synthbench.metrics.functional import psnr_per_image

    rng = np.random.default_rng(0)
    real = torch.tensor(rng.uniform(-1, 1, (1, 1, 32, 32)), dtype=torch.float32)
    fake = torch.tensor(rng.uniform(-1, 1, (1, 1, 32, 32)), dtype=torch.float32)
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    mask[..., 8:24, 4:20] = True  # 256 of 1024 pixels
    full = float(psnr_per_image(real, paste(fake, real, mask))[0])
    lung = float(psnr_per_image(real, fake, mask=mask)[0])
    assert full - lung == pytest.approx(10 * np.log10(1024 / 256), abs=1e-4)
