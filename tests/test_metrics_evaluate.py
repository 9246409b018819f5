"""evaluate_folders and `synthbench evaluate`: settings via synthbench.composite, folds, errors, output."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from synthbench import composite
from synthbench.cli.main import build_app
from synthbench.errors import SynthbenchError
from synthbench.metrics import evaluate_folders, load_results, save_results
from synthbench.metrics import functional as Fm
from synthbench.stats import folds, mean_ci

PAIRED = ["psnr", "ssim", "rmse"]


def make_synthesis(root, n=12, size=32, seed=0):
    """A synthesis-output folder (real/, fake/, mask/, complete/, synthesis.json) of smooth images."""
    rng = np.random.default_rng(seed)
    for d in ("real", "fake", "mask", "complete"):
        (root / d).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        base = gaussian_filter(rng.normal(size=(size, size)), 2)
        base = (base - base.min()) / np.ptp(base)
        fake = np.clip(base + rng.normal(0, 0.05 + 0.02 * i, base.shape), 0, 1)
        mask = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 3 + i % 3) ** 2
        r, f = np.round(base * 255).astype(np.uint8), np.round(fake * 255).astype(np.uint8)
        name = f"{i:05d}.png"
        Image.fromarray(r).save(root / "real" / name)
        Image.fromarray(f).save(root / "fake" / name)
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "mask" / name)
        Image.fromarray(np.where(mask, f, r)).save(root / "complete" / name)
    (root / "synthesis.json").write_text(json.dumps({"method": "test", "split": "test", "count": n}))
    return root


def _load(folder):
    files = sorted(folder.glob("*.png"))
    return torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in files])[:, None].astype(np.float32) / 127.5 - 1)


def test_settings_use_composite_and_folds(tmp_path):
    s = make_synthesis(tmp_path / "s")
    df = evaluate_folders(s / "real", s / "fake", s / "mask", metrics=PAIRED, folds=4, batch_size=5, show_progress=False)
    # the lung setting adds the paper's whole-image lung-only SSIM as its own, labelled metric
    assert set(df.setting) == {"complete", "lung"} and set(df.metric) == {*PAIRED, "ssim_paper"}
    assert set(df[df.metric == "ssim_paper"].setting) == {"lung"}
    real, fake, mask = _load(s / "real"), _load(s / "fake"), _load(s / "mask") > 0
    parts = folds(12, 4)
    lung_r, lung_f = composite.lung_only(real, mask), composite.lung_only(fake, mask)
    for setting, metric, per in (
        ("complete", "ssim", Fm.ssim_per_image(real, composite.complete(fake, real, mask)).numpy()),
        ("lung", "ssim", Fm.ssim_per_image(lung_r, lung_f, mask=mask).numpy()),  # over lung pixels
        ("lung", "ssim_paper", Fm.ssim_per_image(lung_r, lung_f).numpy()),  # whole lung-only image
    ):
        row = df[(df.setting == setting) & (df.metric == metric)].iloc[0]
        fold_vals = [per[p].mean() for p in parts]
        assert row.fold_values == pytest.approx(fold_vals)
        mean, half = mean_ci(fold_vals)
        assert row.value == pytest.approx(mean) and row.ci95 == pytest.approx(half)
        assert row.all_images == pytest.approx(per.mean())
        assert row.n == 12 and row.folds == 4 and row.interval == "folds"
    # complete() is idempotent: the completed folder gives the same complete-image numbers
    df2 = evaluate_folders(s / "real", s / "complete", s / "mask", metrics=PAIRED, folds=4, show_progress=False)
    assert np.allclose(df2.value, df.value)
    # lung-only differs from complete for SSIM (background is black in lung-only)
    ssim = df[df.metric == "ssim"].set_index("setting").value
    assert ssim["lung"] != pytest.approx(ssim["complete"])
    for setting in ("complete", "lung"):  # one conventions record per setting
        conv = df.attrs["conventions"][setting]
        assert conv["ssim"]["sigma"] == 1.5 and conv["psnr"]["data_range"] == 2.0


def test_no_mask_means_complete_only(tmp_path):
    s = make_synthesis(tmp_path / "s")
    df = evaluate_folders(s / "real", s / "complete", metrics=["rmse"], folds=3, show_progress=False)
    assert list(df.setting) == ["complete"]
    with pytest.raises(SynthbenchError, match="need a mask"):
        evaluate_folders(s / "real", s / "complete", metrics=["rmse"], folds=3, settings=["lung"], show_progress=False)


def test_bad_inputs_name_file_and_problem(tmp_path):
    s = make_synthesis(tmp_path / "s")
    (s / "fake" / "00003.png").unlink()
    with pytest.raises(SynthbenchError, match=r"11 images vs 12.*missing 00003.png"):
        evaluate_folders(s / "real", s / "fake", metrics=["rmse"], show_progress=False)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(s / "fake" / "zzz.png")
    with pytest.raises(SynthbenchError, match="not in the real folder: zzz.png"):
        evaluate_folders(s / "real", s / "fake", metrics=["rmse"], show_progress=False)
    (s / "fake" / "zzz.png").unlink()
    Image.fromarray(np.zeros((40, 32), np.uint8)).save(s / "fake" / "00003.png")
    with pytest.raises(SynthbenchError, match=r"00003.png: synthetic image is 32x40"):
        evaluate_folders(s / "real", s / "fake", metrics=["rmse"], show_progress=False)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(s / "fake" / "00003.png")
    with pytest.raises(SynthbenchError, match="mode RGB"):
        evaluate_folders(s / "real", s / "fake", metrics=["rmse"], show_progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynthbenchError, match="no PNG images"):
        evaluate_folders(s / "real", tmp_path / "empty", show_progress=False)
    with pytest.raises(SynthbenchError, match="does not exist"):
        evaluate_folders(s / "real", tmp_path / "nope", show_progress=False)
    with pytest.raises(SynthbenchError, match="12 images into 20 folds"):
        evaluate_folders(s / "real", s / "complete", metrics=["rmse"], folds=20, show_progress=False)
    with pytest.raises(SynthbenchError, match="unknown metric 'lpips'"):
        evaluate_folders(s / "real", s / "complete", metrics=["lpips"], show_progress=False)


def test_missing_fid_weights_is_a_clear_error(tmp_path, monkeypatch):
    s = make_synthesis(tmp_path / "s")
    monkeypatch.setenv("SYNTHBENCH_FID_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(SynthbenchError, match="missing.pth: FID Inception weights given by"):
        evaluate_folders(s / "real", s / "complete", metrics=["fid"], folds=2, show_progress=False)


def test_save_and_load_results(tmp_path):
    s = make_synthesis(tmp_path / "s")
    df = evaluate_folders(s / "real", s / "fake", s / "mask", metrics=["psnr"], folds=3, show_progress=False)
    paths = save_results(df, tmp_path / "out", {"synthesis": {"method": "x"}})
    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns) == list(df.columns) and len(csv) == 2
    assert json.loads(csv.fold_values[0]) == pytest.approx(df.fold_values[0])
    back = load_results(tmp_path / "out")
    assert back.value.tolist() == pytest.approx(df.value.tolist())
    assert back.attrs["source"]["images"] == 12
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic writes leave no temporaries


def test_cli_synthesis_and_run_dirs(tmp_path):
    run = tmp_path / "run"
    make_synthesis(run / "synthesis")
    runner = CliRunner()
    app = build_app()
    res = runner.invoke(app, ["evaluate", str(run), "--metrics", "ssim,rmse", "--folds", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {(r["setting"], r["metric"]) for r in out["results"]} == {
        *((s, m) for s in ("complete", "lung") for m in ("ssim", "rmse")), ("lung", "ssim_paper")}
    assert out["synthesis"]["method"] == "test"
    assert (run / "synthesis" / "evaluation" / "results.csv").is_file()
    # folder pair with --out, table output
    res = runner.invoke(app, ["evaluate", "--real", str(run / "synthesis" / "real"), "--fake",
                              str(run / "synthesis" / "fake"), "--metrics", "psnr", "--folds", "2", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "psnr" in res.stdout and (tmp_path / "o" / "results.json").is_file()


def test_cli_errors_exit_2_one_line(tmp_path):
    s = make_synthesis(tmp_path / "s")
    shutil.rmtree(s / "mask")
    (s / "fake" / "00000.png").unlink()
    runner = CliRunner()
    app = build_app()
    res = runner.invoke(app, ["evaluate", "--real", str(s / "real"), "--fake", str(s / "fake"), "--metrics", "rmse"])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "error:" in res.output and "00000.png" in res.output
    res = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert res.exit_code == 2 and "not a synthesis folder" in res.output
    res = runner.invoke(app, ["evaluate", "--real", str(s / "real")])
    assert res.exit_code == 2
