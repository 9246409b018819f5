"""Issue 17: third-party plugins cannot silently take over a name, vanish, or end the tool.

Fake distributions are real ``.dist-info`` folders on a temporary ``sys.path`` entry, found
through ``importlib.metadata`` exactly as installed packages are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.errors import SynthbenchError
from synthbench.plugins import get_registry, reset_registry

IMPOSTOR = '''
from torch import nn
from synthbench import hookimpl, OptimizerSpec, Synthesizer, Update

SYNTHBENCH_API = 1

class Impostor(Synthesizer):
    name = "pix2pix"

    def build_networks(self):
        return {"G": nn.Sequential(nn.Conv2d(self.num_classes, 1, 1), nn.Tanh())}

    def optimizers(self, stage):
        return {"G": OptimizerSpec(tuple(self.nets["G"].parameters()))}

    def training_step(self, stage, batch):
        yield Update("G", (self.train_nets["G"](batch.onehot) - batch.image).abs().mean())

@hookimpl
def register_synthesizers(register):
    register(Impostor)
'''

LAZY = '''
from synthbench import hookimpl

SYNTHBENCH_API = 1

@hookimpl
def register_synthesizers(register):
    register("sbl_lazy_model:LazyTiny", name="lazy-tiny")
    register("sbl_lazy_model:NoSuchClass", name="lazy-missing")
'''

LAZY_MODEL = '''
from torch import nn
from synthbench import OptimizerSpec, Synthesizer, Update

class LazyTiny(Synthesizer):
    name = "lazy-tiny"

    def build_networks(self):
        return {"G": nn.Sequential(nn.Conv2d(self.num_classes, 1, 1), nn.Tanh())}

    def optimizers(self, stage):
        return {"G": OptimizerSpec(tuple(self.nets["G"].parameters()))}

    def training_step(self, stage, batch):
        yield Update("G", (self.train_nets["G"](batch.onehot) - batch.image).abs().mean())
'''

TYPO = '''
from synthbench import hookimpl

@hookimpl
def register_synthesizer(register):  # misspelt: the hook is register_synthesizers
    raise AssertionError("never called")
'''

UNMARKED = '''
def register_synthesizers(register):  # no @hookimpl: pluggy ignores it
    raise AssertionError("never called")
'''

EXITS = "import sys\nsys.exit(3)\n"

LONG_ERROR = "raise RuntimeError('" + "a long explanation of what went wrong, " * 6 + "END-OF-MESSAGE')\n"

SAME_KEY = '''
from synthbench import hookimpl
from synthbench.metrics.paired import PSNR

class Renamed(PSNR):
    name = "psnr-{x}"

@hookimpl
def register_metrics(register):
    register(Renamed)
'''


def make_dist(root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """A distribution ``dist`` 1.0 with ``modules`` on ``root`` and ``entry_points`` in group synthbench."""
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[synthbench]\n{eps}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A temporary site directory on sys.path; the registry is rebuilt before and after."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    for var in ("SYNTHBENCH_PLUGINS", "SYNTHBENCH_PREFER", "SYNTHBENCH_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    reset_registry()
    yield root
    reset_registry()
    for name in [m for m in sys.modules if m.startswith("sbl_")]:
        del sys.modules[name]


def _plugins_cli(*args, env=None):
    return CliRunner().invoke(build_app(), ["plugins", *args], env=env)


# --------------------------------------------------------------------------- name clashes
def test_a_plugin_cannot_displace_a_builtin(site, monkeypatch, phantom_dir):
    """Old: the impostor's entry point sorted first and `train pix2pix` trained it with exit 0."""
    make_dist(site, "evil-dist", {"sbl_evil": IMPOSTOR}, {"evil": "sbl_evil"})
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "evil,pix2pix")
    reset_registry()
    registry = get_registry()
    with pytest.raises(SynthbenchError) as err:
        registry.synthesizer("pix2pix")
    message = str(err.value)
    assert "registered by 2 plugins" in message and "evil-dist 1.0" in message and "synthbench 0.1.0" in message
    assert "SYNTHBENCH_PREFER=pix2pix=" in message and "\n" not in message
    # neither plugin as a whole failed: only the name is unusable, and `plugins` says so (exit 1)
    assert registry.records["evil"].error is None and registry.records["pix2pix"].error is None
    assert any("evil-dist 1.0" in c for c in registry.records["pix2pix"].clashes)
    result = _plugins_cli()
    assert result.exit_code == 1 and "also registered by" in result.output

    train = CliRunner().invoke(build_app(), ["train", "pix2pix", "--data", str(phantom_dir), "--out", str(site / "r")])
    assert train.exit_code == 2 and "evil-dist" in train.stderr and len(train.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("prefer", "expected"), [("synthbench", "Pix2Pix"), ("evil_dist", "Impostor")])
def test_the_user_chooses_with_prefer(site, monkeypatch, prefer, expected):
    make_dist(site, "evil-dist", {"sbl_evil": IMPOSTOR}, {"evil": "sbl_evil"})
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "evil,pix2pix")
    monkeypatch.setenv("SYNTHBENCH_PREFER", f"pix2pix={prefer}")
    reset_registry()
    registry = get_registry()
    assert registry.synthesizer("pix2pix").__name__ == expected
    chosen = registry.provenance("synthesizers", "pix2pix")["distribution"]
    assert chosen == ("synthbench" if expected == "Pix2Pix" else "evil-dist")
    assert _plugins_cli().exit_code == 0  # resolved: a note, not an error
    assert _plugins_cli("--check").exit_code == 1  # ... but --check still flags the shadowed one


def test_a_preference_for_a_missing_distribution_is_an_error(site, monkeypatch):
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "pix2pix")
    monkeypatch.setenv("SYNTHBENCH_PREFER", "pix2pix=not-installed")
    reset_registry()
    with pytest.raises(SynthbenchError, match="only synthbench 0.1.0"):
        get_registry().synthesizer("pix2pix")


def test_two_distributions_with_one_entry_point_key_are_both_reported(site, monkeypatch):
    """Old: the second distribution vanished without a word."""
    make_dist(site, "dist-a", {"sbl_a": SAME_KEY.format(x="a")}, {"same": "sbl_a"})
    make_dist(site, "dist-b", {"sbl_b": SAME_KEY.format(x="b")}, {"same": "sbl_b"})
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "same")
    reset_registry()
    registry = get_registry()
    same = [r for r in registry.records.values() if r.name == "same"]
    assert sorted(r.distribution for r in same) == ["dist-a", "dist-b"]
    for record in same:
        assert any("dist-a 1.0" in w and "dist-b 1.0" in w for w in record.warnings)
    assert registry.metric("psnr-a").name == "psnr-a" and registry.metric("psnr-b").name == "psnr-b"  # both loaded
    assert _plugins_cli().exit_code == 0 and _plugins_cli("--check").exit_code == 1


# --------------------------------------------------------------------------- authors' mistakes
@pytest.mark.parametrize(("source", "expected"), [
    (TYPO, "unknown hook 'register_synthesizer' (did you mean 'register_synthesizers'?)"),
    (UNMARKED, "'register_synthesizers' but is not marked @hookimpl"),
])
def test_misspelt_or_unmarked_hooks_warn(site, monkeypatch, source, expected):
    """Old: silent; the plugin simply registered nothing."""
    make_dist(site, "typo-dist", {"sbl_typo": source}, {"typo": "sbl_typo"})
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "typo")
    reset_registry()
    record = get_registry().records["typo"]
    assert record.error is None and any(expected in w for w in record.warnings), record.warnings
    result = _plugins_cli("--check")
    assert result.exit_code == 1 and expected in result.output
    with pytest.raises(SynthbenchError, match="plugin 'typo' registers nothing"):
        get_registry().synthesizer("typo-gan")


def test_sys_exit_at_import_is_contained(site):
    """Old: SystemExit escaped the loader and every command ended with no output."""
    make_dist(site, "exit-dist", {"sbl_exit": EXITS}, {"exiter": "sbl_exit"})
    env = {**os.environ, "PYTHONPATH": str(site), "SYNTHBENCH_PLUGINS": "exiter,pix2pix"}
    proc = subprocess.run([sys.executable, "-m", "synthbench", "plugins", "--json"], capture_output=True, text=True,
                          env=env, timeout=300, cwd=site)
    assert proc.returncode == 1, proc.stderr  # a failed plugin: non-zero, but the command ran
    records = {r["key"]: r for r in json.loads(proc.stdout)}
    assert records["exiter"]["error"] == "import failed: called sys.exit(3)"
    assert records["pix2pix"]["error"] is None


def test_import_failure_traceback_under_debug(site, monkeypatch, capsys):
    make_dist(site, "long-dist", {"sbl_long": LONG_ERROR}, {"long": "sbl_long"})
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "long")
    monkeypatch.setenv("SYNTHBENCH_DEBUG", "1")
    reset_registry()
    get_registry()
    err = capsys.readouterr().err
    assert "Traceback" in err and "sbl_long.py" in err and "END-OF-MESSAGE" in err


def test_plugins_exits_nonzero_and_prints_the_whole_error_at_any_width(site, monkeypatch):
    """Old: exit 0, and the rich table cut the error to the terminal width."""
    make_dist(site, "long-dist", {"sbl_long": LONG_ERROR}, {"long": "sbl_long"})
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "long")
    reset_registry()
    for width in ("30", "200"):
        result = _plugins_cli(env={"COLUMNS": width})
        assert result.exit_code == 1
        line = next(ln for ln in result.output.splitlines() if ln.startswith("FAILED long"))
        assert line.endswith("END-OF-MESSAGE") and "long-dist 1.0" in line


# --------------------------------------------------------------------------- lazy registration
def test_registration_by_path_imports_on_first_use(site, monkeypatch):
    make_dist(site, "lazy-dist", {"sbl_lazy": LAZY, "sbl_lazy_model": LAZY_MODEL}, {"lazy": "sbl_lazy"})
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "lazy")
    reset_registry()
    registry = get_registry()
    assert registry.records["lazy"].registered["synthesizers"] == ["lazy-missing", "lazy-tiny"]
    assert "sbl_lazy_model" not in sys.modules
    assert registry.synthesizer("lazy-tiny").__name__ == "LazyTiny"
    assert "sbl_lazy_model" in sys.modules
    with pytest.raises(SynthbenchError, match=r"synthesizer 'lazy-missing' from lazy-dist 1.0 .* cannot be loaded"):
        registry.synthesizer("lazy-missing")
    assert "NoSuchClass" in registry.records["lazy"].error
    assert _plugins_cli().exit_code == 1


def test_building_the_cli_imports_no_heavy_module():
    """Issue 21: plugins register by class path, so start-up never imports torch, pandas or scipy."""
    probe = ("import sys\nfrom synthbench.cli.main import build_app\nbuild_app()\n"
             "print(','.join(m for m in ('torch', 'pandas', 'scipy') if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k != "SYNTHBENCH_PLUGINS"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_core_plugins_stay_unless_excluded(site, monkeypatch):
    """Old: SYNTHBENCH_PLUGINS=pix2pix also dropped the metrics ('unknown metric psnr')."""
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "pix2pix")
    reset_registry()
    assert set(get_registry().records) == {"pix2pix", "metrics", "segmentation"}
    assert get_registry().metric("psnr").name == "psnr"
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "pix2pix,-metrics")
    reset_registry()
    assert set(get_registry().records) == {"pix2pix", "segmentation"}
    monkeypatch.setenv("SYNTHBENCH_PLUGINS", "-sean")
    reset_registry()
    assert "sean" not in get_registry().records and "ours" in get_registry().records


def test_python_m_synthbench_and_version():
    from synthbench import __version__

    for args in (["--version"], ["--help"]):
        proc = subprocess.run([sys.executable, "-m", "synthbench", *args], capture_output=True, text=True,
                              timeout=300, cwd=Path(__file__).parent)
        assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Usage: synthbench") == 1
    version = subprocess.run([sys.executable, "-m", "synthbench", "--version"], capture_output=True, text=True,
                             timeout=300, cwd=Path(__file__).parent)
    assert version.stdout.strip() == f"synthbench {__version__}"
