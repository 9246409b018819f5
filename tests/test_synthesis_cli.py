"""synthesize: output layout, completion (real outside the lung exactly), augmentation, L1 helper, train CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.data.prepared import PreparedDataset
from synthbench.engine import load_synthesizer
from synthbench.synthesis import FOLDERS, mean_l1_to_real, to_uint8
from synthbench.synthesizer import one_hot


@pytest.fixture(scope="module")
def run_dir(phantom_dir, tmp_path_factory):
    """A tiny pix2pix run trained through the CLI (3 steps)."""
    run = tmp_path_factory.mktemp("runs") / "p2p"
    args = ["train", "pix2pix", "--data", str(phantom_dir), "--protocol", "smoke", "--out", str(run),
            "--option", "ngf=8", "--option", "ndf=8", "--max-steps", "3", "--quiet"]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "finished: 3 steps" in result.output
    again = CliRunner().invoke(build_app(), args)
    assert again.exit_code == 2 and "not empty" in again.output and "\n" not in again.output.strip()
    return run


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_synthesize_layout_and_completion(phantom_dir, run_dir, tmp_path):
    out = tmp_path / "syn"
    # eval mode: deterministic, so the files can be compared with generate() (the default, pix2pix's
    # official test mode, keeps dropout on: tests/test_fair_test_time.py)
    result = CliRunner().invoke(build_app(), ["synthesize", str(run_dir), "--data", str(phantom_dir),
                                              "--out", str(out), "--batch-size", "3", "--test-mode", "mode=eval"])
    assert result.exit_code == 0, result.output
    ds = PreparedDataset(phantom_dir)
    test = ds.split("test")
    n = len(test)
    record = json.loads((out / "synthesis.json").read_text())
    assert record["count"] == n and record["method"] == "pix2pix" and record["split"] == "test"
    assert record["style_mode"] == "none" and record["data_hash"] == ds.content_hash and record["augment"] == 0
    for folder in FOLDERS:
        assert sorted(p.name for p in (out / folder).iterdir()) == [f"{i:05d}.png" for i in range(n)]
    synth = load_synthesizer(run_dir)
    synth.set_test_mode(mode="eval")
    lung_any = False
    for i in range(n):
        label, mask = _png(out / "label" / f"{i:05d}.png"), _png(out / "mask" / f"{i:05d}.png")
        real, fake = _png(out / "real" / f"{i:05d}.png"), _png(out / "fake" / f"{i:05d}.png")
        comp, lr, lf = (_png(out / k / f"{i:05d}.png") for k in ("complete", "lung_real", "lung_fake"))
        assert np.array_equal(label, np.asarray(test.label[i]))
        lung = np.isin(label, ds.spec.lung_region_ids)
        lung_any |= lung.any()
        assert np.array_equal(mask, lung.astype(np.uint8) * 255)
        assert np.array_equal(real, to_uint8(np.asarray(test.image[i], np.float32)))
        assert np.array_equal(comp[~lung], real[~lung])  # completion: real outside the lung, exactly
        assert np.array_equal(comp[lung], fake[lung])
        assert np.array_equal(lr[lung], real[lung]) and (lr[~lung] == 0).all() and (lf[~lung] == 0).all()
        expected = synth.generate(one_hot(torch.from_numpy(label.astype(np.int64))[None], ds.num_classes))
        assert np.abs(fake.astype(int) - to_uint8(expected[0, 0].numpy()).astype(int)).max() <= 1
    assert lung_any
    again = CliRunner().invoke(build_app(), ["synthesize", str(run_dir), "--data", str(phantom_dir), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_synthesize_augment_reproduces_prepared_test_aug(phantom_dir, run_dir, tmp_path):
    from synthbench.synthesis import synthesize

    ds = PreparedDataset(phantom_dir)
    record = synthesize(run_dir, phantom_dir, tmp_path / "aug", augment=2, show_progress=False)
    test, test_aug = ds.split("test"), ds.split("test_aug")
    assert record["count"] == 2 * len(test) and record["augment"] == 2
    lookup = {(s, a): j for j, (s, a) in enumerate(zip(test_aug.source_index, test_aug.augmentation, strict=True))}
    for i, entry in enumerate(record["samples"][:4]):
        j = lookup[(entry["source_index"], entry["augmentation"])]
        assert np.array_equal(_png(tmp_path / "aug" / "label" / f"{i:05d}.png"), np.asarray(test_aug.label[j]))
        comp, real = _png(tmp_path / "aug" / "complete" / f"{i:05d}.png"), _png(tmp_path / "aug" / "real" / f"{i:05d}.png")
        lung = np.isin(np.asarray(test_aug.label[j]), ds.spec.lung_region_ids)
        assert np.array_equal(comp[~lung], real[~lung])


def test_mean_l1_to_real_matches_direct_computation(phantom_dir, run_dir):
    ds = PreparedDataset(phantom_dir)
    synth = load_synthesizer(run_dir)
    synth.set_test_mode(mode="eval")  # deterministic (the official mode keeps dropout on)
    arrays = ds.split("test")
    real = torch.from_numpy(np.asarray(arrays.image[:5], np.float32)).unsqueeze(1)
    fake = synth.generate(one_hot(torch.from_numpy(np.asarray(arrays.label[:5], np.int64)), ds.num_classes))
    expected = float((fake - real).abs().mean())
    assert mean_l1_to_real(synth, ds, "test", max_images=5, batch_size=2) == pytest.approx(expected, rel=1e-5)
