"""benchmarks/perf.py and synthbench.perf on CPU at CI size (no timed assertion, issue 9)."""

from __future__ import annotations

import csv
import importlib.util
import json
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from synthbench import OptimizerSpec, Stage, Synthesizer, Update, hookimpl, perf
from synthbench.data.prepared import PreparedDataset
from synthbench.plugins import PluginRecord, get_registry

ROOT = Path(__file__).resolve().parents[1]


def _load_cli():
    spec = importlib.util.spec_from_file_location("bench_perf_cli", ROOT / "benchmarks" / "perf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class PerfTiny(Synthesizer):
    """A two-stage 1x1-conv synthesizer: a second, cheap method with a multi-stage cost sum."""

    name = "perf-tiny"
    stages = (Stage("first", 0.25), Stage("second", 0.75))

    def build_networks(self):
        return {"G": nn.Sequential(nn.Conv2d(self.num_classes, 1, 1), nn.Tanh())}

    def optimizers(self, stage):
        return {"G": OptimizerSpec(tuple(self.nets["G"].parameters()))}

    def training_step(self, stage, batch):
        fake = self.train_nets["G"](batch.onehot)
        yield Update("G", (fake - batch.image).abs().mean())


@pytest.fixture(scope="module")
def tiny_plugin():
    """Register PerfTiny like a third-party plugin; removed again afterwards."""
    module = types.ModuleType("perf_tiny_plugin")

    @hookimpl
    def register_synthesizers(register):
        register(PerfTiny)

    module.register_synthesizers = register_synthesizers
    registry = get_registry()
    registry.add_plugin(module, PluginRecord(name="perf_tiny", module="perf_tiny_plugin"))
    yield PerfTiny.name
    registry.synthesizers.pop(PerfTiny.name, None)
    registry.records.pop("perf_tiny", None)
    registry.pm.unregister(module)


@pytest.fixture(scope="module")
def bench(phantom_dir, tmp_path_factory, tiny_plugin):
    """One CLI run on the 64 px phantom: pix2pix + perf-tiny, batch 2, 1 warm-up + 2 reps, fp32."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("perf")
    cli = _load_cli()
    rc = cli.main(["run", "--methods", f"pix2pix,{tiny_plugin}", "--sizes", "64", "--batch-size", "2",
                   "--precisions", "fp32", "--channels-last", "off", "--warmup", "1", "--reps", "2",
                   "--steps-per-rep", "1", "--data", str(phantom_dir), "--loader-batches", "3",
                   "--flops-method", tiny_plugin, "--flops-size", "64", "--flops-precision", "fp32",
                   "--out", str(out), "--name", "ci"])
    assert rc == 0
    return out, cli


def test_outputs_have_expected_columns_and_rows(bench, phantom_dir):
    out, _ = bench
    with open(out / "ci.csv") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == perf.CSV_COLUMNS
        rows = list(reader)
    kinds = {(r["kind"], r["method"], r["stage"]) for r in rows}
    for method, stages in (("pix2pix", ["main"]), ("perf-tiny", ["first", "second"])):
        for stage in stages:
            assert ("train", method, stage) in kinds
        assert ("infer", method, "") in kinds
        assert any(r["kind"] == "cost" and r["method"] == method for r in rows)
    measured = [r for r in rows if r["kind"] in ("train", "infer", "loader")]
    assert all(r["status"] == "ok" for r in measured), [r["reason"] for r in measured if r["status"] != "ok"]
    for r in measured:
        med, lo, hi = (float(r[k]) for k in ("images_per_s_median", "images_per_s_min", "images_per_s_max"))
        assert 0 < lo <= med <= hi
        assert float(r["peak_memory_mb"]) > 0 and r["memory_kind"].startswith("cpu_peak_rss")
    loader = next(r for r in rows if r["kind"] == "loader")
    fastest = max(float(r["images_per_s_median"]) for r in rows if r["kind"] == "train")
    assert float(loader["loader_ratio"]) == pytest.approx(float(loader["images_per_s_median"]) / fastest)
    # paper cost = 20 epochs x 12,000 images / img/s / 3600 for a one-stage method
    p2p_train = next(r for r in rows if r["kind"] == "train" and r["method"] == "pix2pix")
    p2p_cost = next(r for r in rows if r["kind"] == "cost" and r["method"] == "pix2pix")
    assert float(p2p_cost["paper_cost_hours"]) == pytest.approx(
        20 * 12000 / float(p2p_train["images_per_s_median"]) / 3600)
    assert p2p_cost["cost_unit"] == "CPU-hours at this size"
    # two stages: 0.25 and 0.75 of 20 epochs = 5 + 15 epochs, each priced at its own throughput
    ips = {r["stage"]: float(r["images_per_s_median"]) for r in rows if r["kind"] == "train" and r["method"] == "perf-tiny"}
    tiny_cost = next(r for r in rows if r["kind"] == "cost" and r["method"] == "perf-tiny")
    assert tiny_cost["stage_epochs"] == "first:5 second:15"
    assert float(tiny_cost["paper_cost_hours"]) == pytest.approx(
        (5 * 12000 / ips["first"] + 15 * 12000 / ips["second"]) / 3600)
    # FLOPs of the 1x1 conv: forward 2*C*H*W per image; backward adds the weight gradient (same again)
    flops = next(r for r in rows if r["kind"] == "flops")
    c = PreparedDataset(phantom_dir).num_classes
    assert flops["status"] == "ok" and flops["stage"] == "second"
    assert float(flops["flops_per_image"]) == pytest.approx(2 * (2 * c * 64 * 64))

    md = (out / "ci.md").read_text()
    for heading in ("## Training", "## Inference", "## Data loader alone", "## Paper protocol cost",
                    "## Model FLOPs per image-step", "CPU-hours at this size"):
        assert heading in md
    assert torch.__version__ in md and "GPU **none**" in md
    raw = json.loads((out / "ci.json").read_text())
    assert raw["hardware"]["torch"] == torch.__version__ and len(raw["rows"]) == len(rows)


def test_combine_merges_runs_and_rejects_bad_input(bench, tmp_path, capsys):
    out, cli = bench
    raw = json.loads((out / "ci.json").read_text())
    other = dict(raw, rows=[dict(r, precision="bf16") for r in raw["rows"] if r["kind"] == "train"])
    (tmp_path / "b.json").write_text(json.dumps(other))
    assert cli.main(["combine", str(out / "ci.json"), str(tmp_path / "b.json"), "--out", str(tmp_path),
                     "--name", "all"]) == 0
    with open(tmp_path / "all.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["precision"] for r in rows if r["kind"] == "train"} == {"fp32", "bf16"}
    assert sum(r["kind"] == "loader" for r in rows) == 1
    (tmp_path / "bad.json").write_text("{")
    assert cli.main(["combine", str(tmp_path / "bad.json"), "--out", str(tmp_path), "--name", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0]


def test_failing_combination_is_recorded_not_fatal(phantom_dir, monkeypatch, tiny_plugin):
    """A combination that raises (e.g. torch.compile without a compiler) is a skipped row with its reason."""
    cfg = perf.PerfConfig(methods=[tiny_plugin], sizes=[64], batch_size=2, precisions=["fp32"], channels_last=[False],
                          warmup=0, reps=1, steps_per_rep=1, data_dir=phantom_dir, loader_batches=1,
                          inference=False, flops=False)

    def boom(*a, **k):
        raise RuntimeError("simulated compile failure")

    monkeypatch.setattr(perf, "make_train_step", boom)
    result = perf.run_benchmark(cfg, show_progress=False)
    train = [r for r in result["rows"] if r["kind"] == "train"]
    assert len(train) == 2 and all(r["status"] == "skipped" for r in train)
    assert "simulated compile failure" in train[0]["reason"]
    cost = next(r for r in result["rows"] if r["kind"] == "cost")
    assert cost["status"] == "skipped" and cost["paper_cost_hours"] is None
    assert "## Skipped combinations" in perf.to_markdown(result)


def test_bad_config_and_peak_table():
    with pytest.raises(perf.SynthbenchError, match="precision"):
        perf.PerfConfig(methods=["pix2pix"], precisions=["fp8"]).validate()
    with pytest.raises(perf.SynthbenchError, match="reps"):
        perf.PerfConfig(methods=["pix2pix"], reps=0).validate()
    assert perf.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert perf.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert perf.peak_bf16_tflops("NVIDIA H200") == 989.0
    assert perf.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert perf.peak_bf16_tflops("Some Unknown GPU") is None
    s = perf.summarize([1.0, 2.0, 3.0, 4.0])
    assert (s["images_per_s_median"], s["images_per_s_q1"], s["images_per_s_q3"]) == (2.5, 1.75, 3.25)


def test_flops_subcommand_merges_with_a_run(bench, phantom_dir, tmp_path, tiny_plugin):
    """``flops`` alone, then ``combine``: the FLOP row gets the run's throughput (achieved TFLOP/s)."""
    out, cli = bench
    assert cli.main(["flops", "--method", tiny_plugin, "--size", "64", "--precision", "fp32", "--batch-size", "2",
                     "--data", str(phantom_dir), "--out", str(tmp_path), "--name", "fl"]) == 0
    assert cli.main(["combine", str(out / "ci.json"), str(tmp_path / "fl.json"), "--out", str(tmp_path),
                     "--name", "both"]) == 0
    rows = json.loads((tmp_path / "both.json").read_text())["rows"]
    flops = [r for r in rows if r["kind"] == "flops"]
    second = next(r for r in rows if r["kind"] == "train" and r["method"] == tiny_plugin and r["stage"] == "second")
    assert flops and all(r["images_per_s_median"] == second["images_per_s_median"] for r in flops)
    assert flops[-1]["achieved_tflops"] == pytest.approx(flops[-1]["flops_per_image"] * second["images_per_s_median"] / 1e12)
    assert flops[-1]["peak_fraction"] is None  # CPU: no GPU peak
