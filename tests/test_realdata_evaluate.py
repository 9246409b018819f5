"""`synthbench evaluate` as the README says (issue 15): a run directory's synthesis folders are
found (every split), small sets get fewer folds with a note, too few images name the folds."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from synthbench.cli.main import build_app


def _synthesis(root, n: int):
    rng = np.random.default_rng(n)
    for view in ("real", "fake", "complete", "mask", "label"):
        (root / view).mkdir(parents=True)
    for i in range(n):
        real = rng.integers(0, 256, (16, 16)).astype(np.uint8)
        fake = np.clip(real.astype(int) + rng.integers(-20, 20, real.shape), 0, 255).astype(np.uint8)
        mask = np.zeros((16, 16), np.uint8)
        mask[4:12, 4:12] = 255
        for view, arr in (("real", real), ("fake", fake), ("complete", np.where(mask > 0, fake, real)),
                          ("mask", mask), ("label", (mask > 0).astype(np.uint8))):
            Image.fromarray(arr).save(root / view / f"{i:05d}.png")
    return root


def _evaluate(*args):
    return CliRunner().invoke(build_app(), ["evaluate", *[str(a) for a in args]])


def test_run_directory_after_the_readme_synthesize_is_found(tmp_path):
    run = tmp_path / "runs" / "ours"
    _synthesis(run / "synthesis" / "test", 12)
    result = _evaluate(run, "--metrics", "psnr", "--folds", "3", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["source"]["real"] == str(run / "synthesis" / "test" / "real")
    assert (run / "synthesis" / "test" / "evaluation" / "results.json").is_file()
    # every split of the run: both evaluated, each into its own evaluation folder
    _synthesis(run / "synthesis" / "test_aug", 8)
    result = _evaluate(run, "--metrics", "psnr", "--folds", "2", "--json")
    assert result.exit_code == 0, result.output
    evaluations = json.loads(result.stdout)["evaluations"]
    assert [e["source"]["images"] for e in evaluations] == [12, 8]
    assert (run / "synthesis" / "test_aug" / "evaluation" / "results.json").is_file()
    result = _evaluate(tmp_path / "runs", "--metrics", "psnr")
    assert result.exit_code == 2 and "RUN/synthesis/<split>/" in result.output


def test_small_sets_get_fewer_folds_with_a_note(tmp_path):
    s = _synthesis(tmp_path / "s", 5)
    result = _evaluate(s, "--metrics", "psnr,rmse", "--json")  # 10 folds requested, 5 images
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["source"]["folds"] == 5 and {r["folds"] for r in out["results"]} == {5}
    assert any("results use 5 folds instead of 10" in n for n in out["notes"])
    saved = json.loads((s / "evaluation" / "results.json").read_text())
    assert saved["notes"] == out["notes"]
    table = _evaluate("--real", s / "real", "--fake", s / "fake", "--metrics", "psnr", "--folds", "8")
    assert table.exit_code == 0 and "5 images, 5 folds" in table.stdout
    assert "note: The image set" in table.stderr and "results use 5 folds instead of 8" in table.stderr
    # FID/KID need two images per fold: one image cannot form a fold, and the error says so
    one = _synthesis(tmp_path / "one", 1)
    result = _evaluate(one, "--metrics", "fid,psnr")
    assert result.exit_code == 2
    assert "has 1 image: not even 1 of the 10 requested folds can be formed (each fold needs at least 2 images)" in result.output
