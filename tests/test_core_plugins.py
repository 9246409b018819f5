"""Plugin loading through real entry points: a working third-party plugin shows up, broken ones
are reported with their name and error, and the CLI keeps working."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.plugins import get_registry, reset_registry

GOOD = '''
import torch
from torch import nn
from synthbench import hookimpl, Synthesizer, OptimizerSpec, Update, Stage

SYNTHBENCH_API = 1

class Tiny(Synthesizer):
    name = "tiny-throwaway"
    summary = "1x1 conv"
    stages = (Stage("a", 0.5), Stage("b", 0.5))

    def build_networks(self):
        return {"G": nn.Sequential(nn.Conv2d(self.num_classes, 1, 1), nn.Tanh())}

    def optimizers(self, stage):
        return {"G": OptimizerSpec(tuple(self.nets["G"].parameters()))}

    def training_step(self, stage, batch):
        fake = self.train_nets["G"](batch.onehot)
        yield Update("G", (fake - batch.image).abs().mean())

@hookimpl
def register_synthesizers(register):
    register(Tiny)

@hookimpl
def register_commands(cli):
    @cli.command("tiny-hello")
    def tiny_hello():
        print("hello from tiny")
'''

BROKEN_IMPORT = "raise RuntimeError('boom at import')\n"

BROKEN_HOOK = '''
from synthbench import hookimpl

@hookimpl
def register_metrics(register):
    raise ValueError("boom in hook")
'''

OLD_API = '''
from synthbench import hookimpl
SYNTHBENCH_API = 0

@hookimpl
def register_metrics(register):
    raise AssertionError("must never be called")
'''


def _install_fake_dist(root: Path, dist: str, modules: dict[str, str]) -> None:
    """A real installed distribution: a module plus a .dist-info with entry_points.txt."""
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    eps = "\n".join(f"{m.removeprefix('sbt_')} = {m}" for m in modules)
    (info / "entry_points.txt").write_text(f"[synthbench]\n{eps}\n")


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    _install_fake_dist(
        tmp_path,
        "sbt-plugins",
        {"sbt_good": GOOD, "sbt_broken_import": BROKEN_IMPORT, "sbt_broken_hook": BROKEN_HOOK, "sbt_old_api": OLD_API},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "good,broken_import,broken_hook,old_api")
    reset_registry()
    yield tmp_path
    reset_registry()


def test_good_plugin_registers_and_broken_ones_are_reported(fake_plugins):
    registry = get_registry()
    good = registry.records["good"]
    assert good.error is None
    assert good.distribution == "sbt-plugins" and good.version == "0.3"
    assert good.registered["synthesizers"] == ["tiny-throwaway"]
    assert "tiny-throwaway" in registry.synthesizers
    assert "boom at import" in registry.records["broken_import"].error
    assert "boom in hook" in registry.records["broken_hook"].error
    assert "incompatible plugin API version" in registry.records["old_api"].error


def test_cli_lists_plugins_and_survives_broken_ones(fake_plugins):
    app = build_app()
    result = CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 1, result.output  # broken plugins are listed, and the exit status says so
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert records["good"]["registered"]["commands"] == ["tiny-hello"]
    assert records["broken_import"]["error"].startswith("import failed: RuntimeError")
    hello = CliRunner().invoke(app, ["tiny-hello"])
    assert hello.exit_code == 0 and "hello from tiny" in hello.stdout
    info = CliRunner().invoke(app, ["info", "tiny-throwaway", "--classes", "3", "--json"])
    assert info.exit_code == 0, info.output
    data = json.loads(info.stdout)
    assert data["parameters"] == {"G": 3 * 1 + 1}
    assert data["stages"] == ["a", "b"]


def test_unknown_method_is_a_one_line_error(fake_plugins):
    result = CliRunner().invoke(build_app(), ["info", "no-such-method"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: unknown synthesizer 'no-such-method'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_env_var_restricts_loading(fake_plugins, monkeypatch):
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "good")
    reset_registry()
    assert set(get_registry().records) == {"good", "metrics", "segmentation"}  # core plugins stay


def test_console_script_runs_with_broken_plugin(fake_plugins):
    """The installed console entry point, in a fresh process, with a broken plugin present."""
    env_path = f"{fake_plugins}"
    proc = subprocess.run(
        [sys.executable, "-m", "synthbench.cli.main", "plugins", "--json"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": env_path, "SYNTHBENCH_PLUGINS": "good,broken_import"},
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # the command ran; a plugin failed
    names = {r["name"]: r["error"] for r in json.loads(proc.stdout)}
    assert names["good"] is None and "boom at import" in names["broken_import"]
