"""End to end, as a third party: scaffold a plugin, install it with pip offline, see it in
`synthbench plugins`, train it with the smoke protocol and compare it with pix2pix.

The package is installed (non-editable, no network, no build isolation) into a private
``--target`` directory that only this test's subprocesses see through ``PYTHONPATH``: the shared
environment of concurrently running tests never sees the throwaway plugin. Entry points are
discovered from the installed ``.dist-info`` exactly as from site-packages. The directory is
removed in ``finally`` (the uninstall).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from synthbench.scaffold import create_plugin, module_name

NAME = "e2egan"


def _run(args, env, cwd, timeout=600):
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, f"{args[:6]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None,
                    reason="setuptools is not installed: an offline pip install (--no-build-isolation) needs it")
def test_scaffolded_plugin_installs_trains_and_compares(tmp_path):
    from synthbench.data.prepare import prepare_phantom

    package = create_plugin(NAME, tmp_path / f"synthbench-{NAME}")
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k not in ("SYNTHBENCH_PLUGINS", "PYTHONPATH")}
    env.update({"OMP_NUM_THREADS": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PYTHONPATH": str(site)})
    cli = [sys.executable, "-m", "synthbench.cli.main"]
    try:
        _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
              "--target", str(site), str(package)], env, tmp_path)
        assert (site / module_name(NAME) / "model.py").is_file()

        plugins = json.loads(_run([*cli, "plugins", "--json"], env, tmp_path).stdout)
        record = {r["name"]: r for r in plugins}[NAME]
        assert record["error"] is None
        assert record["distribution"] == f"synthbench-{NAME}" and record["version"] == "0.1.0"
        assert record["registered"]["synthesizers"] == [NAME] and record["api_version"] == 1

        # 20 test slices: compare evaluates in 10 folds of at least 2 images
        data = tmp_path / "data"
        prepare_phantom(data, size=32, patients=7, slices_per_patient=20, train_factor=1, test_factor=1,
                        keep_all_slices=True)

        run = tmp_path / "run"
        _run([*cli, "train", NAME, "--data", str(data), "--protocol", "smoke", "--out", str(run), "--quiet",
              "--device", "cpu"], env, tmp_path)
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "finished" and manifest["plugin"]["distribution"] == f"synthbench-{NAME}"
        stages = [json.loads(line)["stage"] for line in (run / "log.jsonl").read_text().splitlines()]
        assert {"warmup", "adversarial"} <= set(stages)

        out = tmp_path / "cmp"
        _run([*cli, "compare", "--methods", f"{NAME},pix2pix", "--protocol", "smoke", "--data", str(data),
              "--experiments", "", "--out", str(out), "--device", "cpu"], env, tmp_path)
        results = pd.read_csv(out / "report" / "results.csv")
        assert {NAME, "pix2pix"} <= set(results["method"])
        assert NAME in (out / "report" / "leaderboard.md").read_text()
    finally:
        shutil.rmtree(site, ignore_errors=True)  # the uninstall
