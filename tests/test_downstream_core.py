"""Downstream task, fast parts: counts, selection, scores, U-Net shape, tables and their CI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import stats as st

from synthbench.cli.commands.downstream import parse_ratios
from synthbench.downstream import (
    UNet,
    UNetProtocol,
    mix_counts,
    open_synthesis,
    paper_table,
    resolve_synthesis_dir,
    round_half_up,
    scores_from_counts,
    segmentation_counts,
    segmentation_scores,
    select_mix,
    table_markdown,
)
from synthbench.downstream.experiment import _rows, ci_caption
from synthbench.downstream.train import lesion_targets, soft_dice_loss
from synthbench.errors import SynthbenchError
from synthbench.stats import mean_ci

RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def test_counts_n73_replace_and_add():
    # 73 * r = 0, 7.3, 14.6, 21.9, 29.2, 36.5 -> round half up
    synth = [0, 7, 15, 22, 29, 37]
    assert [mix_counts("replace", r, 73) for r in RATIOS] == [(73 - k, k) for k in synth]
    assert [mix_counts("add", r, 73) for r in RATIOS] == [(73, k) for k in synth]


def test_counts_n7_and_exact_halves():
    # 7 * r = 0, 0.7, 1.4, 2.1, 2.8, 3.5
    assert [mix_counts("replace", r, 7) for r in RATIOS] == [(7, 0), (6, 1), (6, 1), (5, 2), (4, 3), (3, 4)]
    assert [mix_counts("add", r, 7)[1] for r in RATIOS] == [0, 1, 1, 2, 3, 4]
    # binary floating point gives 0.7 * 5 = 3.4999999999999996; the decimal rule gives 4
    assert round_half_up(0.7, 5) == 4 and round_half_up(0.25, 2) == 1 and round_half_up(0.05, 10) == 1
    with pytest.raises(SynthbenchError):
        mix_counts("swap", 0.1, 7)
    with pytest.raises(SynthbenchError):
        mix_counts("add", 1.5, 7)


def test_selection_seeded_nested_paired_and_method_independent():
    ids = [f"{i:05d}" for i in range(73)]  # synthetic image i is made from real sample i's label map
    mixes = [select_mix("replace", r, 73, ids, seed=3) for r in (0.1, 0.2, 0.5)]
    assert [m.n_real for m in mixes] == [66, 58, 36] and [m.n_synthetic for m in mixes] == [7, 15, 37]
    kept = [set(m.real_indices) for m in mixes]
    assert kept[2] < kept[1] < kept[0] <= set(range(73))  # drops are nested
    for m in mixes:  # replace: the dropped real images' own label maps, synthesized
        assert sorted(int(i) for i in m.synthetic_ids) == sorted(set(range(73)) - set(m.real_indices))
    assert select_mix("replace", 0.5, 73, ids, seed=3) == mixes[2]
    other = select_mix("replace", 0.5, 73, ids, seed=4)
    assert other.real_indices != mixes[2].real_indices
    add = select_mix("add", 0.3, 7, ids[:7], seed=0)
    assert add.real_indices == tuple(range(7)) and add.n_synthetic == 2
    assert set(add.synthetic_ids) <= set(ids[:7])
    with pytest.raises(SynthbenchError, match="10 synthetic images for 73 real"):
        select_mix("replace", 0.5, 73, ids[:10])


def test_scores_match_hand_computed_reference():
    # classes: 0 background, 1 ggo, 2 consolidation; 2 images of 2x3 pixels
    target = torch.tensor([[[0, 1, 1], [2, 2, 0]], [[1, 0, 0], [0, 2, 1]]])
    pred = torch.tensor([[[0, 1, 0], [2, 1, 0]], [[1, 1, 0], [0, 0, 2]]])
    counts = segmentation_counts(pred, target, ["ggo", "cons"])
    # ggo: tp at (0,0,1),(1,0,0) = 2; fp at (0,1,1),(1,0,1) = 2; fn at (0,0,2),(1,1,2) = 2; tn = 12-6 = 6
    assert counts["ggo"] == (2, 2, 6, 2)
    # cons: tp (0,1,0) = 1; fp (1,1,2) = 1; fn (0,1,1),(1,1,1) = 2; tn = 8
    assert counts["cons"] == (1, 1, 8, 2)
    # infection = any lesion: target 7 px, pred 6 px, overlap 5 -> tp 5, fp 1, fn 2, tn 4
    assert counts["infection"] == (5, 1, 4, 2)
    s = segmentation_scores(pred, target, ["ggo", "cons"])
    assert s["ggo"] == pytest.approx({"dice": 0.5, "sensitivity": 0.5, "specificity": 0.75})
    assert s["infection"] == pytest.approx({"dice": 10 / 13, "sensitivity": 5 / 7, "specificity": 0.8})
    assert math.isnan(scores_from_counts(0, 0, 5, 0)["dice"])


def test_single_lesion_class_union_and_targets():
    label = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)  # background, lung, infection
    y = lesion_targets(label, (2,), 3)
    assert y.tolist() == [[0, 0, 1], [1, 0, 0]]  # lung is not a target
    four = lesion_targets(np.array([[0, 1, 2, 3]]), (2, 3), 4)
    assert four.tolist() == [[0, 0, 1, 2]]
    t = torch.from_numpy(y)[None]
    assert list(segmentation_counts(t, t, ["infection"])) == ["infection"]
    assert list(segmentation_counts(t, t, ["lesion"])) == ["lesion", "infection"]


def test_unet_original_size_and_shapes():
    # Ronneberger et al. 2015, 1 input channel, 2 classes: 31,030,658 parameters
    # (contracting 18,842,048 + expanding 12,188,480 + 1x1 head 130, counted by hand)
    unet = UNet(2, 1, depth=4, width=64, batch_norm=False)
    assert sum(p.numel() for p in unet.parameters()) == 31_030_658
    small = UNet(4, 1, depth=3, width=4)
    assert small(torch.zeros(2, 1, 32, 32)).shape == (2, 4, 32, 32)
    with pytest.raises(SynthbenchError, match="divisible"):
        small(torch.zeros(1, 1, 20, 20))


def test_soft_dice_loss_perfect_and_wrong():
    target = torch.tensor([[[0, 1], [2, 0]]])
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert float(soft_dice_loss(perfect, target)) < 1e-3
    assert float(soft_dice_loss(-perfect, target)) > 0.5


def _fold_counts(values_per_fold):
    """Fold records whose 'x' Dice equals the given value: tp=v*100, fp+fn=(1-v)*200."""
    out = []
    for v in values_per_fold:
        tp = int(round(v * 100))
        out.append({"x": [tp, 200 - 2 * tp, 1000, 0], "infection": [tp, 200 - 2 * tp, 1000, 0]})
    return out


def test_tables_use_student_t_interval_over_folds():
    from synthbench.downstream.mix import Mix

    vals = [0.80, 0.85, 0.90, 0.75, 0.70]
    mix = Mix("replace", 0.0, tuple(range(10)), ())
    rows = pd.DataFrame(_rows("replace", "m", "sweep", mix, _fold_counts(vals)))
    dice = rows[(rows["class"] == "x") & (rows["metric"] == "dice")].iloc[0]
    expected_half = st.t.ppf(0.975, 4) * np.std(vals, ddof=1) / math.sqrt(5)
    assert dice["mean"] == pytest.approx(0.8) and dice["ci95"] == pytest.approx(expected_half)
    assert (dice["mean"], dice["ci95"]) == pytest.approx(mean_ci(vals))
    assert dice["folds"] == pytest.approx(vals) and dice["n_folds"] == 5
    # sensitivity is tp/(tp+fn) = 1 in every fold -> zero-width interval
    sens = rows[(rows["class"] == "x") & (rows["metric"] == "sensitivity")].iloc[0]
    assert sens["mean"] == 1.0 and sens["ci95"] == 0.0
    mix50 = Mix("replace", 0.5, tuple(range(5)), tuple("abcde"))
    rows50 = pd.DataFrame(_rows("replace", "m", "sweep", mix50, _fold_counts([0.5] * 5)))
    rows_b = pd.DataFrame(_rows("replace", "b", "compare", mix50, _fold_counts([0.6] * 5)))
    table = paper_table(pd.concat([rows50, rows_b, rows]), "replace")
    assert list(table.index) == ["0%", "50%", "50% from b"]
    assert table.loc["0%", ("x", "dice")] == f"80.00 ± {expected_half * 100:.2f}"
    assert table.loc["50% from b", ("infection", "dice")] == "60.00 ± 0.00"
    numeric = paper_table(pd.concat([rows50, rows]), "replace", numeric=True)
    assert numeric.loc["50%", ("x", "dice")] == pytest.approx(50.0)
    caption = ci_caption(10)
    assert "t(0.975, 9) · s / √10" in caption
    md = table_markdown(table, caption)
    assert md.count("\n| ") == 4 and "x dice" in md


def test_nan_folds_are_left_out():
    from synthbench.downstream.mix import Mix

    folds = [{"x": [0, 0, 10, 0]}, {"x": [5, 0, 5, 5]}, {"x": [8, 2, 0, 0]}]
    rows = pd.DataFrame(_rows("add", "m", "sweep", Mix("add", 0.1, (0,), ("a",)), folds))
    dice = rows[rows["metric"] == "dice"].iloc[0]
    assert dice["n_folds"] == 2 and math.isnan(dice["folds"][0])
    assert dice["mean"] == pytest.approx((10 / 15 + 16 / 18) / 2)


def _synthesis(folder, record, n=3, size=8):
    for sub in ("complete", "label"):
        (folder / sub).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((size, size), 10 * i, np.uint8)).save(folder / "complete" / f"{i:05d}.png")
        Image.fromarray(np.full((size, size), i % 3, np.uint8)).save(folder / "label" / f"{i:05d}.png")
    (folder / "synthesis.json").write_text(json.dumps(record))
    return folder


def test_synthesis_folders_methods_and_runs(tmp_path):
    a = _synthesis(tmp_path / "run1" / "synthesis" / "test_aug", {"method": "ours", "variant": "no_dfm", "split": "test_aug"})
    _synthesis(tmp_path / "run1" / "synthesis" / "test", {"method": "ours", "split": "test"})
    assert resolve_synthesis_dir(tmp_path / "run1") == a  # the test_aug one of a run
    src = open_synthesis(tmp_path / "run1")
    assert src.method == "ours:no_dfm" and src.ids == ["00000", "00001", "00002"]
    img, lab = src.load(["00002"], 8, 3)
    assert img[0, 0, 0] == pytest.approx(20 / 127.5 - 1) and lab[0, 0, 0] == 2
    with pytest.raises(SynthbenchError, match="outside the data set.s 2 classes"):
        src.load(["00002"], 8, 2)
    with pytest.raises(SynthbenchError, match="8x8"):
        src.load(["00000"], 16, 3)
    plain = _synthesis(tmp_path / "my-folder", {"split": "test_aug"})
    assert open_synthesis(plain).method == "my-folder"
    with pytest.raises(SynthbenchError, match="another prepared data set"):
        open_synthesis(_synthesis(tmp_path / "h", {"data_hash": "abc"}), data_hash="def")
    with pytest.raises(SynthbenchError, match="no synthesis.json"):
        open_synthesis(tmp_path / "run1" / "synthesis" / "test" / "label")


def test_parse_ratios_and_protocol_named():
    assert parse_ratios("0,0.1, 0.5") == (0.0, 0.1, 0.5)
    assert parse_ratios("0%,30%") == (0.0, 0.3)
    with pytest.raises(SynthbenchError):
        parse_ratios("0,abc")
    with pytest.raises(SynthbenchError):
        parse_ratios("60")
    q = UNetProtocol.named("quick", steps=5)
    assert q.steps == 5 and q.width == 8 and UNetProtocol.from_dict(q.to_dict()) == q
    with pytest.raises(SynthbenchError):
        UNetProtocol.named("huge")
    with pytest.raises(SynthbenchError):
        UNetProtocol(augment="rotate")
