"""Sampling cost is reported like everything else (issue 19): ``synthesis.json`` records the
sampler, its steps, the seed and the wall time per image for every method; the report's run table
shows them; the perf benchmark measures SDM's training and sampling with its sampling steps."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from synthbench import perf
from synthbench.data.prepared import PreparedDataset
from synthbench.plugins import get_registry
from synthbench.report import ComparisonResults, MethodRun
from synthbench.report.html import runs_html
from synthbench.report.markdown import runs_md
from synthbench.report.results import IMAGE_QUALITY_COLUMNS
from synthbench.synthesis import synthesize

TINY = {"model_channels": 8, "norm_groups": 4, "num_res_blocks": 1, "num_head_channels": 8, "spade_hidden": 8,
        "attention_resolutions": [16, 8], "sampler": "ddim", "sampling_steps": 2}


def _synth(method, ds, options):
    torch.manual_seed(0)
    return get_registry().synthesizer(method)(ds.num_classes, ds.size, options)


def test_synthesis_records_sampling_cost_and_repeats_with_its_seed(phantom_dir, tmp_path):
    torch.set_num_threads(1)
    ds = PreparedDataset(phantom_dir)
    sdm = _synth("sdm", ds, TINY)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    record = synthesize(None, phantom_dir, tmp_path / "a", split="test", synth=sdm, show_progress=False, seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream is untouched
    assert record["sampling"] == {"sampler": "ddim", "steps": 2, "guidance_scale": 1.5, "network_evaluations": 4,
                                  "weights": "ema"}
    assert record["seed"] == 7 and record["seconds_per_image"] > 0
    assert record["seconds_per_image"] * record["count"] == pytest.approx(record["generate_seconds"])
    synthesize(None, phantom_dir, tmp_path / "b", split="test", synth=sdm, show_progress=False, seed=7)
    fakes = sorted((tmp_path / "a" / "fake").iterdir())
    assert fakes and all(f.read_bytes() == (tmp_path / "b" / "fake" / f.name).read_bytes() for f in fakes)
    synthesize(None, phantom_dir, tmp_path / "c", split="test", synth=sdm, show_progress=False, seed=8)
    assert any(f.read_bytes() != (tmp_path / "c" / "fake" / f.name).read_bytes() for f in fakes)

    gan = synthesize(None, phantom_dir, tmp_path / "gan", split="test", synth=_synth("pix2pix", ds, {"ngf": 8, "ndf": 8}),
                     show_progress=False)
    assert gan["sampling"] == {"sampler": "single forward pass", "steps": 1} and gan["seconds_per_image"] > 0


def test_run_table_shows_synthesis_time_per_image(tmp_path):
    runs = []
    sdm = {"sampler": "ddim", "steps": 2, "guidance_scale": 1.5, "network_evaluations": 4, "weights": "ema"}
    gan = {"sampler": "single forward pass", "steps": 1}
    for method, record in (("sdm", {"seconds_per_image": 2.5, "sampling": sdm}),
                           ("pix2pix", {"seconds_per_image": 0.004, "sampling": gan})):
        folder = tmp_path / method
        folder.mkdir()
        (folder / "synthesis.json").write_text(json.dumps(record))
        runs.append(MethodRun(method, 0, synthesis_dir=folder, wall_times={"train": 10.0}))
    runs.append(MethodRun("old", 0, synthesis_dir=tmp_path / "missing"))
    results = ComparisonResults(protocol="quick", dataset="phantom", data_hash="h", runs=runs,
                                image_quality=pd.DataFrame(columns=list(IMAGE_QUALITY_COLUMNS)))
    md = runs_md(results)
    assert "synthesis / image | sampling" in md
    assert "| 10.0 s | 2.5 s | ddim, 2 step(s), 4 network evaluations |" in md
    assert "| 10.0 s | 4.0 ms | single forward pass, 1 step(s) |" in md
    assert "| old | 0 | - | finished | not recorded | - | - | - |" in md
    html = runs_html(results)
    assert "<th>synthesis / image</th><th>sampling</th>" in html and "<td>2.5 s</td>" in html


def test_perf_measures_sdm_training_and_sampling(phantom_dir):
    torch.set_num_threads(1)
    cfg = perf.PerfConfig(methods=["sdm"], sizes=[64], batch_size=2, precisions=["fp32"], channels_last=[False],
                          warmup=1, reps=1, steps_per_rep=2, data_dir=phantom_dir, loader_batches=1, flops=False,
                          method_options={"sdm": TINY})
    result = perf.run_benchmark(cfg, show_progress=False)
    rows = {(r["kind"], r["stage"]): r for r in result["rows"] if r["method"] == "sdm"}
    assert rows[("train", "train")]["status"] == "ok" and rows[("train", "finetune")]["status"] == "ok"
    infer = rows[("infer", None)]
    assert infer["status"] == "ok" and infer["sampling_steps"] == 2
    assert infer["steps_per_rep"] == 1 and infer["images_per_s_median"] > 0  # one full sampling per repetition
    assert rows[("cost", "train+finetune")]["status"] == "ok"
    assert "| sdm | 64 | 2 | fp32 |" in perf.to_markdown(result)
