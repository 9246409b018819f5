"""benchmarks/gpu_check.py (issue 18): the skip line on a machine without CUDA, its pure helpers,
and one of its training-step checks run for real on the CPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from synthbench.data.prepared import PreparedDataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("bench_gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_without_cuda_exits_0_with_the_skip_line(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gpu_check: skipped: no CUDA GPU is visible (")
    assert str(tmp_path / "gpu.md") in proc.stdout and list(tmp_path.iterdir()) == []


def test_step_plan_budget_status_and_table(gpu_check):
    plan = gpu_check.step_plan(["ours", "sdm"], ("fp32", "bf16", "fp16"))
    assert plan == [("ours", "fp32", False), ("ours", "bf16", False), ("ours", "fp16", False),
                    ("sdm", "fp32", False), ("sdm", "bf16", False), ("sdm", "fp16", False),
                    ("ours", "bf16", True), ("sdm", "bf16", True)]  # compiled last, with what is left
    assert all(not c for _, _, c in gpu_check.step_plan(["ours"], ("fp32",), ()))
    now = [100.0]
    budget = gpu_check.Budget(60, clock=lambda: now[0])
    now[0] = 130.0
    assert budget.left() == 30 and budget.allows(30) and not budget.allows(31)
    Check = gpu_check.Check
    ok, skipped = Check("a", "x", "ok", 1.0, "fine"), Check("a", "y", "skipped", None, "budget")
    assert gpu_check.overall_status([ok, skipped]) == 0
    assert gpu_check.overall_status([ok, Check("b", "z", "failed", None, "E|rr\nor")]) == 1
    table = gpu_check.markdown_checks([ok, Check("b", "z", "failed", None, "E|rr\nor")])
    assert table.splitlines()[2] == "| a | x | ok | 1.00 | fine |"
    assert table.splitlines()[3] == "| b | z | failed |  | E\\|rr or |"


def test_method_options_paper_networks_on_gpu_reduced_in_rehearsal(gpu_check):
    from synthbench_pix2pix.model import Pix2Pix

    gpu = gpu_check.method_options(["pix2pix", "sdm"], reduced=False)
    assert gpu == {"pix2pix": {}, "sdm": gpu_check.SDM_FAST}
    cpu = gpu_check.method_options(["pix2pix"], reduced=True)
    assert cpu == {"pix2pix": dict(Pix2Pix.reduced_options)}


def test_train_step_check_runs_the_engine_step(gpu_check, phantom_dir):
    ds = PreparedDataset(phantom_dir)
    opts = {"ngf": 8, "ndf": 8}
    check = gpu_check.train_step_check("pix2pix", "fp16", False, ds, torch.device("cpu"), 2, opts)
    assert check.status == "ok", check.detail
    assert check.section == "train step" and "losses D" in check.detail and "second" in check.detail
    bad = gpu_check.train_step_check("pix2pix", "fp32", False, ds, torch.device("cpu"), 2, {"ngf": -1})
    assert bad.status == "failed" and bad.detail


def test_arguments_and_budget_skips(gpu_check):
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(["--perf-sizes", "x"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--perf-precisions", "fp16"])
    args = gpu_check.parse_args(["--cpu-rehearsal"])
    assert (args.step_size, args.perf_sizes, args.name) == (64, [64], "cpu-rehearsal")
    now = [0.0]
    budget = gpu_check.Budget(10, clock=lambda: now[0])
    now[0] = 11.0  # spent: nothing more is started, and each skip is listed with its reason
    checks = []
    assert gpu_check.perf_tables(["ours"], [256, 512], budget, "cpu", {"ours": {}}, ["bf16"], 16, checks) is None
    assert [(c.name, c.status) for c in checks] == [("256 px", "skipped"), ("512 px", "skipped")]
    assert all("time budget" in c.detail for c in checks)


class _FakeInception:
    """Stands in for the Inception network (its cost is not what is tested here). ``shift``: added
    to the features of the first instance, which ``fid_check`` builds for the device under test."""

    shift = 0.0
    built = 0

    def __init__(self, device):
        self.device = torch.device(device)
        self.record = {"sha256": "f" * 64}
        self.offset = _FakeInception.shift if _FakeInception.built == 0 else 0.0
        _FakeInception.built += 1

    def __call__(self, images):
        return images.float().mean(dim=(2, 3)).repeat(1, 8) + self.offset


def test_fid_and_ddp_checks_on_a_cpu(gpu_check, phantom_dir, monkeypatch):
    """The FID check's code path (the CPU stands in for the GPU), features that differ between the
    devices failing it, and the DDP check's skip without two GPUs."""
    import synthbench.metrics.inception as inception

    monkeypatch.setattr(inception, "InceptionFeatures", _FakeInception)
    ds = PreparedDataset(phantom_dir)
    check = gpu_check.fid_check(ds, torch.device("cpu"), n_speed=16)
    assert check.status == "ok", check.detail
    assert check.detail.startswith("max |cpu - cpu| 0.00e+00") and "images/s at 64 px, batch 16" in check.detail
    monkeypatch.setattr(_FakeInception, "shift", 0.5)
    monkeypatch.setattr(_FakeInception, "built", 0)
    differs = gpu_check.fid_check(ds, torch.device("cpu"), n_speed=16)
    assert differs.status == "failed" and differs.detail.startswith("max |cpu - cpu| 5.00e-01")
    if torch.cuda.device_count() < 2:
        ddp = gpu_check.ddp_check(Path("unused"), Path("unused"), gpu_check.Budget(60))
        assert ddp.status == "skipped" and "needs 2" in ddp.detail
