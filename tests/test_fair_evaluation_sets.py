"""The paper's evaluation sets (Table I; issue 13): Table II on the augmented synthesis-test label
maps, the U-Net trained on them and tested on the augmented segmentation-test set, with the
paper's counts under the paper protocol's data options (computed, not generated)."""

from __future__ import annotations

from pathlib import Path

from synthbench.compare import evaluation_plan, prepare_options
from synthbench.data.prepare import augmented_counts
from synthbench.suites import load_suite, suite_config

ROOT = Path(__file__).resolve().parents[1]
PAPER_REAL = {"train": 300, "test": 73, "seg_test": 73}  # paper Sec. "Data": 446 slices -> 300 / 73 / 73


def _plan(suite: str, real: dict[str, int], tmp_path):
    cfg = suite_config(load_suite(ROOT / "benchmarks" / suite), tmp_path, "data")
    _, _, options = prepare_options(cfg, 512)
    counts = {**real, **augmented_counts(real, options)}
    return counts, evaluation_plan(counts, cfg.folds)


def test_paper_protocol_counts_and_folds(tmp_path):
    counts, plan = _plan("paper.toml", PAPER_REAL, tmp_path)
    assert counts == {"train": 300, "test": 73, "seg_test": 73,
                      "train_aug": 12_000, "test_aug": 10_220, "seg_test_aug": 10_220}
    assert plan["image_quality"] == {"split": "test_aug", "images": 10_220, "folds": 10, "requested_folds": 10,
                                     "fold_size": [1_022, 1_022]}
    ds = plan["downstream"]
    assert (ds["train_split"], ds["train_real"]) == ("test_aug", 10_220)
    assert (ds["test_split"], ds["images"], ds["folds"], ds["fold_size"]) == ("seg_test_aug", 10_220, 10, [1_022, 1_022])


def test_quick_protocol_follows_the_same_design(tmp_path):
    """The demo's scaled-down sizes: both test sets augmented by the same factor, 10 folds."""
    real = {"train": 80, "test": 32, "seg_test": 30}  # the quick suite's phantom (9 patients x 16 slices)
    counts, plan = _plan("quick.toml", real, tmp_path)
    assert counts["test_aug"] // real["test"] == counts["seg_test_aug"] // real["seg_test"] > 1
    assert plan["image_quality"]["split"] == plan["downstream"]["train_split"] == "test_aug"
    assert plan["downstream"]["test_split"] == "seg_test_aug"
    assert plan["image_quality"]["folds"] == plan["downstream"]["folds"] == 10
    assert plan["image_quality"]["images"] == counts["test_aug"] <= 200  # small: the demo runs in minutes


def test_small_splits_get_fewer_folds():
    plan = evaluation_plan({"test_aug": 7, "seg_test_aug": 3}, 10)
    assert plan["image_quality"]["folds"] == 3 and plan["image_quality"]["fold_size"] == [2, 3]
    assert plan["downstream"]["folds"] == 3 and plan["downstream"]["fold_size"] == [1, 1]
