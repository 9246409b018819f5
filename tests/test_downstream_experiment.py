"""Downstream task end to end on the phantom: the U-Net learns, both experiments, CLI, plugin."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from synthbench import DownstreamContext
from synthbench.cli.main import build_app
from synthbench.data.prepared import PreparedDataset
from synthbench.downstream import (
    UNetProtocol,
    paper_table,
    predict,
    run_experiment,
    segmentation_scores,
    train_unet,
)
from synthbench.downstream.experiment import COLUMNS
from synthbench.downstream.train import lesion_targets
from synthbench.plugins import get_registry

TINY = UNetProtocol.quick(steps=3, log_every=1)


def test_unet_segments_phantom_lesions_better_than_chance(phantom_dir):
    """Quick protocol (300 steps) on the phantom's synthesis-train patients, scored on the other
    patients. A predictor independent of the image that marks a fraction p of pixels reaches an
    expected Dice 2pq/(p+q) <= 2q/(1+q) (q: lesion prevalence, a few %), all-background 0."""
    data = PreparedDataset(phantom_dir)
    spec = data.spec
    train = data.split("train")
    x = np.asarray(train.image, np.float32)
    y = lesion_targets(np.asarray(train.label), spec.lesion_ids, spec.num_classes)
    test_img = np.concatenate([data.split("seg_test").image, data.split("test").image]).astype(np.float32)
    test_lab = lesion_targets(np.concatenate([data.split("seg_test").label, data.split("test").label]), spec.lesion_ids, spec.num_classes)
    names = [spec.classes[i].name for i in spec.lesion_ids]
    model, log = train_unet(x, y, len(names) + 1, UNetProtocol.quick())  # the quick protocol as used by tests and smoke runs
    scores = segmentation_scores(predict(model, test_img), torch.from_numpy(test_lab), names)
    q = float((test_lab > 0).mean())
    chance = 2 * q / (1 + q)
    assert q < 0.1 and chance < 0.15
    assert scores["infection"]["dice"] > 0.5, scores
    assert scores["infection"]["dice"] > 4 * chance
    assert scores["infection"]["sensitivity"] > 0.4 and scores["infection"]["specificity"] > 0.98
    assert log["loss"][-1][1] < log["loss"][0][1]


def _fake_synthesis(data_dir, out, method, noise, seed):
    """A synthesis folder in the documented layout from the phantom's test_aug split (real + noise)."""
    data = PreparedDataset(data_dir)
    arrays = data.split("test_aug")
    rng = np.random.default_rng(seed)
    for sub in ("complete", "label"):
        (out / sub).mkdir(parents=True)
    for i in range(len(arrays)):
        img = np.clip(np.asarray(arrays.image[i], np.float32) + rng.normal(0, noise, arrays.image[i].shape), -1, 1)
        Image.fromarray(np.round((img + 1) * 127.5).astype(np.uint8)).save(out / "complete" / f"{i:05d}.png")
        Image.fromarray(np.asarray(arrays.label[i])).save(out / "label" / f"{i:05d}.png")
    record = {"method": method, "variant": None, "split": "test_aug", "count": len(arrays), "data_hash": data.content_hash}
    (out / "synthesis.json").write_text(json.dumps(record))
    return out


@pytest.fixture(scope="module")
def synth_dirs(phantom_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return {
        "alpha": _fake_synthesis(phantom_dir, root / "alpha", "alpha", 0.05, 1),
        "beta": _fake_synthesis(phantom_dir, root / "run_beta" / "synthesis" / "test_aug", "beta", 0.3, 2),
    }


def _records(out):
    return {p.name: json.loads(p.read_text()) for p in (out / "configs").glob("*.json")}


def test_replace_and_add_end_to_end(phantom_dir, synth_dirs, tmp_path):
    out = tmp_path / "ds"
    df = run_experiment(phantom_dir, synth_dirs, "replace", ratios=(0, 0.1, 0.5), out_dir=out, protocol=TINY, folds=4)
    assert list(df.columns) == COLUMNS
    n = len(PreparedDataset(phantom_dir).split("test_aug"))  # the augmented synthesis-test set: 8 x 4 = 32
    assert n == 32
    counts = df.drop_duplicates(["method", "ratio"])[["method", "role", "ratio", "n_real", "n_synthetic"]]
    assert counts.values.tolist() == [
        ["alpha", "sweep", 0.0, n, 0], ["alpha", "sweep", 0.1, n - 3, 3],
        ["alpha", "sweep", 0.5, n - 16, 16], ["beta", "compare", 0.5, n - 16, 16],
    ]
    assert set(df["class"]) == {"ground_glass", "consolidation", "infection"}
    assert df["n_folds"].max() == 4 and all(len(f) == 4 for f in df["folds"])
    finite = df[np.isfinite(df["mean"])]
    assert ((finite["mean"] >= 0) & (finite["mean"] <= 1)).all()
    table = paper_table(df, "replace")
    assert list(table.index) == ["0%", "10%", "50%", "50% from beta"] and table.shape[1] == 9
    written = out / "replace"
    for name in ("results.csv", "results.json", "table.csv", "table.md", "experiment.json"):
        assert (written / name).is_file()
    assert "t(0.975, 3)" in (written / "table.md").read_text()
    assert len(pd.read_csv(written / "results.csv")) == len(df)

    records = _records(out)
    assert len(records) == 4
    at50 = [r for r in records.values() if r["ratio"] == 0.5]
    assert at50[0]["synthetic_ids"] == at50[1]["synthetic_ids"] and at50[0]["real_indices"] == at50[1]["real_indices"]
    assert {r["method"] for r in at50} == {"alpha", "beta"} and at50[0]["synthesis"] != at50[1]["synthesis"]
    # replace swaps each dropped real image for the synthetic image of the same label map
    dropped = sorted(set(range(n)) - set(at50[0]["real_indices"]))
    assert at50[0]["synthetic_ids"] == [f"{i:05d}" for i in dropped]
    assert all(r["protocol"] == TINY.to_dict() for r in records.values())

    # add: the ratio-0 model is the replace one (same key, reused); add keeps all real images
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "configs").glob("*.json")}
    add = run_experiment(phantom_dir, synth_dirs, "add", ratios=(0, 0.5), out_dir=out, protocol=TINY, folds=4)
    pairs = add.drop_duplicates(["method", "ratio"])[["method", "n_real", "n_synthetic"]].values.tolist()
    assert pairs == [["alpha", n, 0], ["alpha", n, 16], ["beta", n, 16]]
    assert len(_records(out)) == 6
    assert all((out / "configs" / k).stat().st_mtime_ns == v for k, v in mtimes.items())
    zero = add[(add["ratio"] == 0) & (add["metric"] == "dice")].set_index("class")["mean"]
    zero_r = df[(df["ratio"] == 0) & (df["metric"] == "dice")].set_index("class")["mean"]
    assert zero.equals(zero_r)
    assert list(paper_table(add, "add").index) == ["0%", "50%", "50% from beta"]


def test_cli_downstream_and_errors(phantom_dir, synth_dirs, tmp_path):
    runner = CliRunner()
    app = build_app()
    beta_run = synth_dirs["beta"].parent.parent  # a run folder holding synthesis/test_aug
    args = ["downstream", "--data", str(phantom_dir), "--runs", f"{synth_dirs['alpha']},{beta_run}",
            "--experiment", "add", "--ratios", "0,0.5", "--out", str(tmp_path / "o"), "--protocol", "quick",
            "--steps", "2", "--folds", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Table IV" in result.output and "beta" in result.output
    assert "50% from beta" in (tmp_path / "o" / "add" / "table.csv").read_text()
    meta = json.loads((tmp_path / "o" / "add" / "experiment.json").read_text())
    assert meta["protocol"]["steps"] == 2 and set(meta["synthetic"]) == {"alpha", "beta"}

    bad = runner.invoke(app, args[:4] + [str(tmp_path / "missing")] + args[5:])
    assert bad.exit_code == 2 and "missing: no such run or synthesis folder" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    too_many = runner.invoke(app, args[:-1] + ["99"])
    assert too_many.exit_code == 2 and "fewer than the 99 folds" in too_many.output


def test_plugin_registered_and_runs(phantom_dir, synth_dirs, tmp_path):
    task_cls = get_registry().downstream_task("segmentation")
    assert task_cls.experiments == ("replace", "add")
    ctx = DownstreamContext(phantom_dir, {"alpha": synth_dirs["alpha"]}, "replace", tmp_path, ratios=(0.5,),
                            options={"protocol": "quick", "steps": 2, "folds": 2})
    rows = task_cls().run(ctx)
    assert {r["class"] for r in rows} == {"ground_glass", "consolidation", "infection"}
    assert all(r["n_synthetic"] == 16 and r["n_real"] == 16 for r in rows)
    assert all(r["mean"] is None or 0 <= r["mean"] <= 1 for r in rows) and not any(
        isinstance(r["mean"], float) and math.isnan(r["mean"]) for r in rows)
