"""Issue 21: the side-by-side benchmark against the official code (benchmarks/fetch_official.py,
benchmarks/official.py, ``perf.py official``): fetching stays outside the repository and checks out
pinned sources only, missing or failing official code is a row with its reason, never a number.
The timed comparison itself needs the official repositories and minutes of CPU: it is a benchmark
(benchmarks/perf_results/official_cpu.md), not a test."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from synthbench.errors import SynthbenchError

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_fetch_refuses_a_folder_inside_the_repository(capsys):
    fetch = _load("fetch_official")
    assert fetch.main(["--out", str(ROOT / "benchmarks" / "official-code")]) == 2
    assert "inside the synthbench repository" in capsys.readouterr().err
    assert not (ROOT / "benchmarks" / "official-code").exists()


def test_fetch_checks_out_the_pinned_commit_sources_only(tmp_path, monkeypatch):
    fetch = _load("fetch_official")
    upstream = tmp_path / "upstream" / "o+r"
    upstream.mkdir(parents=True)
    _git("init", "-q", cwd=upstream)
    (upstream / "models").mkdir()
    (upstream / "models" / "net.py").write_text("X = 1\n")
    (upstream / "LICENSE.txt").write_text("licence\n")
    (upstream / "big.jpg").write_bytes(b"\0" * 1000)
    _git("add", "-A", cwd=upstream)
    _git("commit", "-qm", "pinned", cwd=upstream)
    pinned = subprocess.run(["git", "rev-parse", "HEAD"], cwd=upstream, capture_output=True, text=True).stdout.strip()
    (upstream / "models" / "net.py").write_text("X = 2\n")
    _git("commit", "-qam", "later", cwd=upstream)
    monkeypatch.setattr(fetch, "OFFICIAL", {m: ("o/r", pinned) for m in ("pix2pixhd", "spade", "sean")})
    monkeypatch.setattr(fetch, "SYNC_BATCHNORM", ("o/r", pinned))
    (upstream / "sync_batchnorm").mkdir()  # not committed: the clone must not have it ...
    out = tmp_path / "official"
    url = str(tmp_path / "upstream" / "{owner}+{name}")
    with pytest.raises(FileNotFoundError):  # ... so SPADE's completion step finds nothing to copy
        fetch.main(["--out", str(out), "--url", url])
    (upstream / "sync_batchnorm" / "__init__.py").write_text("")
    _git("add", "-A", cwd=upstream)
    _git("commit", "-qm", "with sync_batchnorm", cwd=upstream)
    with_sync = subprocess.run(["git", "rev-parse", "HEAD"], cwd=upstream, capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(fetch, "SYNC_BATCHNORM", ("o/r", with_sync))
    assert fetch.main(["--out", str(out), "--url", url]) == 0
    assert (out / "pix2pixhd" / "models" / "net.py").read_text() == "X = 1\n"  # the pinned commit, not the newest
    assert (out / "pix2pixhd" / "LICENSE.txt").is_file() and not (out / "pix2pixhd" / "big.jpg").exists()
    assert (out / "spade" / "models" / "networks" / "sync_batchnorm" / "__init__.py").is_file()
    record = json.loads((out / "official.json").read_text())
    assert record["sean"]["commit"] == pinned and record["spade"]["sync_batchnorm"]["commit"] == with_sync


def test_run_without_fetched_code_is_a_clear_error(tmp_path):
    official = _load("official")
    with pytest.raises(SynthbenchError, match="fetch_official.py"):
        official.run(tmp_path, ["spade"], [64], 4, 0, 1, 1)


def test_absent_and_failing_official_code_are_rows_with_reasons(tmp_path, capsys):
    official = _load("official")
    broken = tmp_path / "spade"
    broken.mkdir()  # no options/ package: the worker fails
    (tmp_path / "official.json").write_text(json.dumps({"spade": {"dir": str(broken), "commit": "c" * 40}}))
    rows = official.run(tmp_path, ["spade", "sean"], [64], 1, 0, 1, 1, progress=lambda _msg: None)
    assert [r["status"] for r in rows] == ["failed", "absent"]
    assert "options" in rows[0]["reason"] and "official.json" in rows[1]["reason"]
    table = official.markdown(rows, {"cpu": "x"})
    assert "| spade | 64 |" in table and "failed:" in table and "absent:" in table
    failed_line = next(line for line in table.splitlines() if line.startswith("| spade"))
    assert "**" not in failed_line and "x |" not in failed_line  # no ratio for a failed row


def test_markdown_reports_the_ratio_of_medians():
    official = _load("official")
    row = {"method": "spade", "size": 64, "batch_size": 4, "threads": 1, "warmup": 1, "reps": 3, "status": "ok",
           "official_cpu_s": [3.0, 2.0, 4.0], "synthbench_cpu_s": [2.0, 1.0, 9.0], "cpu_ratio": 1.5,
           "wall_ratio": 1.4, "official_parameters": {"G": 2e6, "D": 1e6},
           "synthbench_parameters": {"G": 2e6, "D": 1e6}, "commit": "f" * 40}
    table = official.markdown([row], {"cpu": "cpu", "cpu_cores": 2, "torch": "t"})
    assert "| spade | 64 | 3.00 | 2.00 | **1.50x** | 1.40x |" in table


def test_official_command_lines_run_on_the_cpu_with_our_classes():
    official = _load("official")
    for method in official.METHODS:
        argv = official.official_argv(method, 128, 4, Path("/tmp/x"))
        joined = " ".join(argv)
        assert "--gpu_ids -1" in joined and "--label_nc 4" in joined and "--batchSize 4" in joined
        assert "--no_instance" in argv and "128" in argv


def test_failure_reason_names_the_exception_or_the_signal_not_a_trailing_warning():
    official = _load("official")
    stderr = ("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: betas must be floats\n"
              "/lib/module.py:1794: UserWarning: input's size does not match\n  return forward_call(*args)\n")
    assert official.failure_reason(1, stderr) == "ValueError: betas must be floats"
    assert official.failure_reason(-15, stderr) == "worker stopped by signal 15"
    assert official.failure_reason(3, "") == "exit code 3, no output"
