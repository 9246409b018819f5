"""Tests of the leaderboard report renderer (synthbench.report): Markdown, CSV, JSON, HTML.

A small fake comparison is fabricated on disk (run dirs with log.jsonl / manifest.json, synthesis
dirs with 32x32 PNGs, tidy metric tables); the HTML is opened in headless Chromium when present.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthbench.data.spec import PAPER_CLASSES, DatasetSpec
from synthbench.errors import SynthbenchError
from synthbench.report import ComparisonResults, MethodRun, published, render_report
from synthbench.report.figures import loss_keys, weight_keys
from synthbench.report.markdown import PUBLISHED_HEADING
from synthbench.stats import mean_ci, paired_test

SIZE = 32
K = 5  # folds
HIB = {"FID": False, "KID": False, "PSNR": True, "SSIM": True, "RMSE": False}
#: Per-method fold means (complete setting); lung values are derived. Chosen so the best differs
#: per column: ours best FID/KID/RMSE (lower), sean best PSNR (higher), pix2pix best SSIM.
BASE = {
    "ours": {"FID": 40.0, "KID": 0.020, "PSNR": 26.0, "SSIM": 0.80, "RMSE": 0.080},
    "sean": {"FID": 45.0, "KID": 0.030, "PSNR": 27.0, "SSIM": 0.81, "RMSE": 0.090},
    "pix2pix": {"FID": 60.0, "KID": 0.050, "PSNR": 24.0, "SSIM": 0.85, "RMSE": 0.120},
}
SEEDS = {"ours": [0, 1], "sean": [0, 1], "pix2pix": [0]}


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def make_synthesis(root: Path, method: str, rng: np.random.Generator, spec: DatasetSpec, n: int = 3) -> Path:
    """A synthesis dir in the docs/architecture.md layout with ``n`` 32x32 slices."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(n):
        name = f"{i:05d}.png"
        label = np.zeros((SIZE, SIZE), np.uint8)
        label[((yy - 16) / 12) ** 2 + ((xx - 10) / 6) ** 2 < 1] = 1
        label[((yy - 16) / 12) ** 2 + ((xx - 22) / 6) ** 2 < 1] = 1
        label[((yy - 12 - i) / (2 + i)) ** 2 + ((xx - 22) / 3) ** 2 < 1] = 2
        label[((yy - 20) / 2) ** 2 + ((xx - 9) / 2) ** 2 < 1] = 3
        real = (60 + 40 * np.sin(xx / 5.0) + 30 * (label == 0)).clip(0, 255)
        fake = (real + rng.normal(0, 12, real.shape)).clip(0, 255)
        lung = np.isin(label, spec.lung_region_ids)
        comp = np.where(lung, fake, real)
        for sub, arr in [("label", label), ("mask", lung * 255), ("real", real), ("fake", fake),
                         ("complete", comp), ("lung_real", np.where(lung, real, 0)),
                         ("lung_fake", np.where(lung, fake, 0))]:
            _png(root / sub / name, arr)
    (root / "synthesis.json").write_text(json.dumps({"method": method, "count": n, "spec": spec.to_dict()}))
    return root


def make_run(root: Path, method: str, seed: int, steps: int = 30) -> Path:
    root.mkdir(parents=True)
    lines = []
    for step in range(steps):
        g, d = 2.0 * np.exp(-step / 10) + 0.5, 0.7 - 0.1 * np.sin(step / 3)
        if method == "ours":  # the engine's flat record (engine/loop.py)
            rec = {"step": step + 1, "stage": f"stage{step * 3 // steps}", "epoch": step // 10 + 1, "batch": 1,
                   "images_per_second": 50.0, "time": 1.7e9 + step, "loss/G": g, "loss/D": d,
                   "lr/G": 2e-4, "lr/D": 2e-4, "alpha": 0.5 + 0.3 * step / steps, "alpha_G1": 0.4,
                   "beta": 0.5 - 0.2 * step / steps}
        else:  # a record without "loss/" keys: heuristic selection skips bookkeeping
            rec = {"step": step, "epoch": step // 10, "G_gan": g, "D_real": d, "lr": 2e-4, "seconds": 0.1,
                   "images_per_second": 20.0, "opt": {"lr": 1e-4}}
        lines.append(json.dumps(rec))
    (root / "log.jsonl").write_text("\n".join(lines) + "\n")
    (root / "config.json").write_text(json.dumps({"method": method, "seed": seed, "epochs": 3}))
    (root / "manifest.json").write_text(json.dumps({
        "seed": seed, "versions": {"torch": "2.15", "synthbench": "0.1.0"}, "git": {"commit": f"c0ffee{seed}"},
        "hardware": {"device": "cpu", "cpus": 2}, "data": {"content_hash": "ab" * 32},
        "pretrained_weights": [{"name": "vgg19", "sha256": "12" * 32}],
    }))
    return root


def make_image_quality(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for method, base in BASE.items():
        for seed in SEEDS[method]:
            for setting, scale in (("complete", 1.0), ("lung", 1.1)):
                for metric, mu in base.items():
                    folds = list(mu * scale + rng.normal(0, abs(mu) * 0.01, K))
                    value, ci = mean_ci(folds)
                    rows.append({"method": method, "seed": seed, "setting": setting, "metric": metric,
                                 "value": value, "ci95": ci, "n": 20, "folds": folds,
                                 "higher_is_better": HIB[metric]})
    return pd.DataFrame(rows)


def make_downstream(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    # Dice well below the paper's 72-90%: shown in %, no measured cell can equal a published value
    classes = {"ground_glass": 0.62, "consolidation": 0.58, "infection": 0.66}
    for experiment, ratios in (("replace", [0.0, 0.1, 0.5]), ("add", [0.0, 0.5])):
        for ratio in ratios:
            for cls, mu in classes.items():
                for metric, m in (("Dice", mu), ("sensitivity", mu + 0.03), ("specificity", 0.97)):
                    bonus = 0.02 if (experiment == "add" and ratio == 0.5) else -0.01 * ratio
                    folds = list(m + bonus + rng.normal(0, 0.002, K))
                    mean, ci = mean_ci(folds)
                    rows.append({"experiment": experiment, "method": "ours", "seed": 0, "ratio": ratio,
                                 "n_real": 100, "n_synthetic": int(100 * ratio), "class": cls,
                                 "metric": metric, "mean": mean, "ci95": ci, "folds": folds})
    for cls in ("ground_glass", "consolidation", "infection"):
        folds = list(0.50 + rng.normal(0, 0.002, K))
        mean, ci = mean_ci(folds)
        rows.append({"experiment": "replace", "method": "pix2pix", "seed": 0, "ratio": 0.5, "n_real": 50,
                     "n_synthetic": 50, "class": cls, "metric": "Dice", "mean": mean, "ci95": ci, "folds": folds})
    return pd.DataFrame(rows)


def make_results(tmp: Path, seed: int = 0, synthesis: bool = True) -> ComparisonResults:
    rng = np.random.default_rng(seed)
    spec = DatasetSpec(name="phantom", classes=PAPER_CLASSES)
    runs = []
    for method, seeds in SEEDS.items():
        for s in seeds:
            runs.append(MethodRun(
                method, s, run_dir=make_run(tmp / "runs" / f"{method}-{s}", method, s),
                synthesis_dir=make_synthesis(tmp / "synth" / f"{method}-{s}", method, rng, spec) if synthesis else None,
                wall_times={"train": 12.5 + s, "synthesize": 1.25},
            ))
    return ComparisonResults(
        protocol="paper-small", dataset="phantom 32x32 (3 test slices)", data_hash="ab" * 32, runs=runs,
        image_quality=make_image_quality(rng), downstream=make_downstream(rng),
        wall_times={"metrics": 3.0, "downstream": 75.0},
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    results = make_results(tmp)
    paths = render_report(results, tmp / "out")
    return results, paths


def _md_table(md: str, heading: str) -> list[list[str]]:
    """Rows (cells stripped) of the first Markdown table after ``heading``."""
    section = md.split(heading, 1)[1]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    first = section.index(lines[0])
    block = []
    for ln in section[first:].splitlines():
        if not ln.startswith("|"):
            break
        block.append([c.strip() for c in ln.strip("|").split("|")])
    return block


def test_outputs_exist_and_no_temporaries(report):
    _, paths = report
    for p in (paths.markdown, paths.html, paths.csv, paths.json, *paths.figures):
        assert p.is_file() and p.stat().st_size > 0, p
    assert {p.name for p in paths.figures} == {"grid_complete.png", "grid_lung.png", "losses.png", "alpha_beta.png"}
    assert not [p for p in paths.root.parent.iterdir() if p.name.startswith(".")]


def test_markdown_best_marking_and_values(report):
    results, paths = report
    md = paths.markdown.read_text()
    rows = _md_table(md, "## Image quality (Table II) (measured)")
    header, body = rows[0], rows[2:]
    assert [r[0] for r in body] == ["ours", "sean", "pix2pix"]
    iq = results.image_quality
    for j, col in enumerate(header[1:], start=1):
        setting, metric = col.split()[0], col.split()[1]
        sub = iq[(iq.setting == setting) & (iq.metric == metric)]
        means = sub.groupby("method")["value"].mean()
        best = means.idxmin() if not HIB[metric] else means.idxmax()
        bold = [r[0] for r in body if r[j].startswith("**")]
        assert bold == [best], (col, bold, best)
        # the number shown is the across-seed mean (ours/sean: 2 seeds) or the single value (pix2pix)
        for r in body:
            shown = float(r[j].strip("*").split()[0])
            assert shown == pytest.approx(means[r[0]], rel=1e-3, abs=1e-4), (col, r[0])
    # several seeds -> mean +- SD across seeds; one seed -> value +- fold CI
    ours_fid = iq[(iq.method == "ours") & (iq.setting == "complete") & (iq.metric == "FID")]["value"]
    assert f"{ours_fid.std(ddof=1):.2f}" in body[0][header.index("complete FID \u2193")]
    p2p = iq[(iq.method == "pix2pix") & (iq.setting == "complete") & (iq.metric == "PSNR")].iloc[0]
    assert f"{p2p.value:.2f} \u00b1 {p2p.ci95:.2f}" in body[2][header.index("complete PSNR (dB) \u2191")]


def test_significance_vs_best(report):
    results, paths = report
    md = paths.markdown.read_text()
    prow = _md_table(md, "### Paired test against the best method (p-values)")
    header, body = prow[0], {r[0]: r for r in prow[2:]}
    j = header.index("complete FID \u2193")
    assert body["ours"][j] == "best"
    iq = results.image_quality
    sel = (iq.setting == "complete") & (iq.metric == "FID")
    folds = lambda m: [v for s in (0, 1) for v in iq[sel & (iq.method == m) & (iq.seed == s)]["folds"].iloc[0]]  # noqa: E731
    expected = paired_test(folds("sean"), folds("ours"))
    assert float(body["sean"][j]) == pytest.approx(expected, rel=1e-2)
    # pix2pix shares seed 0 only with ours: 5 fold pairs
    pfold = iq[sel & (iq.method == "pix2pix")]["folds"].iloc[0]
    ofold = iq[sel & (iq.method == "ours") & (iq.seed == 0)]["folds"].iloc[0]
    assert float(body["pix2pix"][j]) == pytest.approx(paired_test(pfold, ofold), rel=1e-2)
    rows = _md_table(md, "## Image quality (Table II) (measured)")
    assert "\u2020" in rows[2 + 2][j]  # 60 vs 40 with 1% noise: clearly significant


def test_downstream_tables(report):
    results, paths = report
    md = paths.markdown.read_text()
    rows = _md_table(md, "### Replace real with synthetic (Table III): Dice")
    assert rows[0] == ["method", "synthetic", "ground_glass", "consolidation", "infection"]
    labels = [(r[0], r[1]) for r in rows[2:]]
    assert labels == [("real only (baseline)", "0%"), ("ours", "10%"), ("ours", "50%"), ("pix2pix", "50%")]
    ds = results.downstream
    sub = ds[(ds.experiment == "replace") & (ds.metric == "Dice") & (ds["class"] == "infection")]
    best_ratio = sub.loc[sub["mean"].idxmax(), "ratio"]
    bold = [(r[0], r[1]) for r in rows[2:] if r[4].startswith("**")]
    assert bold == [("real only (baseline)" if best_ratio == 0 else "ours", f"{100 * best_ratio:g}%")]
    add = _md_table(md, "### Add synthetic to real (Table IV): Dice")
    assert [r[1] for r in add[2:] if r[2].startswith("**")] == ["50%"]


def test_published_only_in_their_section(report):
    results, paths = report
    md = paths.markdown.read_text()
    measured, pub = md.split(f"## {PUBLISHED_HEADING}")
    assert md.count(f"## {PUBLISHED_HEADING}") == 1
    for values in list(published.TABLE2.values()) + list(published.TABLE3.values()):
        for v in values:
            assert v in pub
            assert v not in measured, v
    csv_text = paths.csv.read_text()
    assert "26.89" not in csv_text and "0.0327" not in csv_text
    html = paths.html.read_text()
    pub_html = html.split('id="published"', 1)[1]
    assert "0.8936" in pub_html and "0.8936" not in html.split('id="published"', 1)[0]


def test_csv_and_json_match_results(report):
    results, paths = report
    frame = pd.read_csv(paths.csv)
    assert frame["measured"].all() and set(frame["source"]) == {"measured"}
    assert len(frame) == len(results.image_quality) + len(results.downstream)
    iq = frame[frame.table == "image_quality"].reset_index(drop=True)
    orig = results.image_quality
    assert np.allclose(iq["value"], orig["value"])
    assert [json.loads(f) for f in iq["folds"]] == [pytest.approx(f) for f in orig["folds"]]
    assert list(iq["higher_is_better"].astype(bool)) == list(orig["higher_is_better"])
    ds = frame[frame.table == "downstream"]
    assert np.allclose(ds["mean"], results.downstream["mean"])
    data = json.loads(paths.json.read_text())
    assert data["data_hash"] == results.data_hash and data["protocol"] == "paper-small"
    assert all(r["measured"] for r in data["rows"]) and len(data["rows"]) == len(frame)
    best = {(r["table"], r["column"]): r["row"] for r in data["leaderboard"] if r["best"]}
    assert best[("image_quality", "complete/PSNR")] == "sean"
    assert best[("image_quality", "lung/SSIM")] == "pix2pix"
    assert data["runs"][0]["manifest"]["git commit"] == "c0ffee0"


def test_html_self_contained(report):
    _, paths = report
    html = paths.html.read_text()
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert not re.search(r"(https?:)?//[a-z0-9]|\burl\(|@import", text, re.I), "external reference in report.html"
    assert not re.search(r'<(link|iframe)\b', html) and 'src="http' not in html
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert imgs and all(s.startswith("data:image/png;base64,") for s in imgs)
    # 2 grids x 3 samples x (label, real, 3 methods) x (full + crop) + loss + alpha/beta plots
    assert len(imgs) == 2 * 3 * 5 * 2 + 2
    # Table II + {replace, add} x {Dice, sensitivity, specificity}
    assert html.count('class="sortable measured"') == 1 + 2 * 3
    assert "c0ffee1" in html and "vgg19" in html


def test_log_key_selection(report):
    results, _ = report
    ours = next(r for r in results.runs if r.method == "ours").log()
    assert loss_keys(ours) == ["loss/G", "loss/D"]
    assert weight_keys(ours) == ["alpha", "alpha_G1", "beta"]
    sean = next(r for r in results.runs if r.method == "sean").log()
    assert loss_keys(sean) == ["G_gan", "D_real"] and weight_keys(sean) == []


def test_existing_directory_and_bad_input(tmp_path):
    results = make_results(tmp_path, synthesis=False)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SynthbenchError, match="already exists"):
        render_report(results, out)
    bad = results.image_quality.copy()
    bad.loc[0, "higher_is_better"] = not bad.loc[0, "higher_is_better"]
    with pytest.raises(SynthbenchError, match="higher_is_better"):
        ComparisonResults("p", "d", "h", results.runs, bad)
    with pytest.raises(SynthbenchError, match="missing column"):
        ComparisonResults("p", "d", "h", results.runs, bad.drop(columns=["folds"]))
    (results.runs[0].run_dir / "log.jsonl").write_text('{"step": 0}\nnot json\n')
    with pytest.raises(SynthbenchError, match="log.jsonl"):
        render_report(results, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out2")]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--enable-logging=stderr", "--v=0"]


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_html_renders_in_chromium(report, tmp_path):
    _, paths = report
    url = paths.html.resolve().as_uri() + "#selftest-2"  # complete PSNR
    shot = tmp_path / "shot.png"
    proc = _chromium(tmp_path, "--dump-dom", "--window-size=1400,2400", f"--screenshot={shot}", url)
    dom = proc.stdout
    assert "<table" in dom, proc.stderr[-2000:]
    assert 'data-js-errors="0"' in dom, re.findall(r'data-js-error-messages="[^"]*"', dom)
    console_errors = [ln for ln in proc.stderr.splitlines() if "Uncaught" in ln or ("CONSOLE" in ln and "ERROR" in ln)]
    assert not console_errors, console_errors
    assert dom.count("<img") == 62 and dom.count('class="sortable measured"') >= 1
    # the in-page self test clicked the complete-PSNR header twice (ascending, then descending)
    m = re.search(r"data-selftest=\"([^\"]*)\"", dom)
    assert m, "self-test did not run"
    order = json.loads(m.group(1).replace("&quot;", '"'))
    assert order["initial"] == ["ours", "sean", "pix2pix"]
    assert order["column"] == "PSNR (dB) \u2191"
    assert order["ascending"] == ["pix2pix", "ours", "sean"]  # 24 < 26 < 27 (BASE)
    assert order["descending"] == ["sean", "ours", "pix2pix"]


def test_minimal_results_without_runs_or_downstream(tmp_path):
    """Only an image-quality table (one seed, FID without folds): still a complete report."""
    iq = pd.DataFrame([
        {"method": m, "seed": 0, "setting": "complete", "metric": "FID", "value": v, "ci95": float("nan"),
         "n": 10, "folds": None, "higher_is_better": False}
        for m, v in (("a", 12.0), ("b", 10.0))
    ])
    results = ComparisonResults("p", "tiny", "00" * 32, [MethodRun("a", 0), MethodRun("b", 0)], iq)
    paths = render_report(results, tmp_path / "r")
    assert paths.figures == []
    rows = _md_table(paths.markdown.read_text(), "## Image quality (Table II) (measured)")
    assert rows[0] == ["method", "FID \u2193"]
    assert rows[2] == ["a", "12.00"] and rows[3] == ["b", "**10.00**"]
    assert "Downstream" not in paths.markdown.read_text().split(PUBLISHED_HEADING)[0]
    assert len(pd.read_csv(paths.csv)) == 2


def test_accepts_metrics_module_frames(tmp_path):
    """Frames as synthbench.metrics.evaluate writes them (lower-case names, folds = count,
    per-fold values in fold_values, a kid_std row) and downstream frames (dice, role column)."""
    rows = []
    for method, psnr in (("a", [20.0, 21.0, 22.0]), ("b", [25.0, 26.0, 26.5])):
        for metric, vals, hib in (("psnr", psnr, True), ("kid", [0.1, 0.2, 0.15], False), ("kid_std", [0.01] * 3, False)):
            mean, ci = mean_ci(vals)
            rows.append({"setting": "complete", "metric": metric, "value": mean, "ci95": ci, "all_images": mean,
                         "n": 9, "folds": 3, "fold_values": vals, "higher_is_better": hib, "method": method, "seed": 0})
    ds = pd.DataFrame([{"experiment": "replace", "method": "a", "role": "sweep", "ratio": 0.0, "n_real": 9,
                        "n_synthetic": 0, "class": "infection", "metric": "dice", "mean": 0.8, "ci95": 0.01,
                        "n_folds": 3, "folds": [0.79, 0.8, 0.81], "seed": 0}])
    results = ComparisonResults("p", "d", "h", [], pd.DataFrame(rows), ds)
    assert set(results.image_quality["metric"]) == {"PSNR", "KID", "kid_std"}
    assert results.image_quality["folds"].iloc[0] == [20.0, 21.0, 22.0]
    md = render_report(results, tmp_path / "r").markdown.read_text()
    table = _md_table(md, "## Image quality (Table II) (measured)")
    assert table[0] == ["method", "PSNR (dB) \u2191", "KID \u2193"]
    assert table[3][1].startswith("**25.83") and "\u2020" in table[2][1]  # b best, a differs (p < 0.05)
    assert "### Replace real with synthetic (Table III): Dice" in md
    with pytest.raises(SynthbenchError, match="per-fold values"):
        ComparisonResults("p", "d", "h", [], pd.DataFrame(rows).drop(columns=["fold_values"]))


def test_grid_png_is_composed_from_the_tiles(monkeypatch):
    """The leaderboard's grid PNG (issue 21: composed with PIL, no matplotlib figure): one cell per
    tile, full row then crop row per sample, each tile scaled to the cell; the bitmap font works too."""
    import io

    from PIL import Image, ImageFont

    from synthbench.report import figures

    def tile(value, size):
        return figures.png_bytes(Image.new("RGB", (size, size), (value, value, value)))

    rows = [[figures.Tile(f"m{j}", tile(10 * j + 100 * i, 64), tile(10 * j + 100 * i + 5, 128)) for j in range(3)]
            for i in range(2)]
    for font in (figures._font, lambda size: ImageFont.load_default()):
        monkeypatch.setattr(figures, "_font", font)
        with Image.open(io.BytesIO(figures._grid_figure(rows, "A title", cell=40))) as im:
            grid = np.asarray(im.convert("RGB"))
        assert grid.shape == (48 + 4 * 44 + 4, 3 * 40 + 4 * 4, 3)
        for i in range(2):
            for k in range(2):
                for j in range(3):
                    y, x = 48 + (2 * i + k) * 44, 4 + j * 44
                    assert (grid[y:y + 40, x:x + 40] == 10 * j + 100 * i + 5 * k).all()
        assert (grid[:48] < 128).any()  # title and captions were drawn
