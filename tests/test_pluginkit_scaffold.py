"""`synthbench new-plugin`: name validation, refusal of non-empty targets, and a generated package
whose synthesizer passes the conformance kit and really learns; docs/plugins.md documents every
hook and every public type."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import synthbench
from synthbench import hookspecs
from synthbench.cli.main import build_app
from synthbench.errors import SynthbenchError
from synthbench.scaffold import class_name, create_plugin, module_name, validate_name
from synthbench.testing import check_synthesizer, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("bad", ["", "MyGan", "1gan", "my gan", "gan!", "-gan", "a" * 41, "class", "import"])
def test_invalid_names_are_refused(bad):
    with pytest.raises(SynthbenchError, match="invalid plugin name"):
        validate_name(bad)


def test_names_map_to_module_class_and_distribution():
    assert validate_name("my-gan_2") == "my-gan_2"
    assert module_name("my-gan_2") == "synthbench_my_gan_2"
    assert class_name("my-gan_2") == "MyGan2Synthesizer"


def test_cli_refuses_existing_nonempty_target_and_installed_names(tmp_path):
    app = build_app()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["new-plugin", "fresh", "--out", str(tmp_path / "full")])
    assert result.exit_code == 2 and "not empty" in result.stderr and str(tmp_path / "full") in result.stderr
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]
    result = CliRunner().invoke(app, ["new-plugin", "pix2pix", "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "already installed" in result.stderr and not (tmp_path / "p").exists()
    result = CliRunner().invoke(app, ["new-plugin", "Bad Name", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    # an existing empty directory is filled
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["new-plugin", "fresh", "--out", str(tmp_path / "empty")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "empty" / "synthbench_fresh" / "model.py").is_file()


@pytest.fixture
def generated(tmp_path, monkeypatch):
    """A freshly generated plugin package, importable from its directory (not installed)."""
    name = f"kitgen{tmp_path.name[-6:].replace('-', '').lower()}"
    name = re.sub(r"[^a-z0-9_]", "", name)
    target = create_plugin(name, tmp_path / "pkg")
    monkeypatch.syspath_prepend(str(target))
    module = importlib.import_module(module_name(name))
    yield name, target, module
    for key in [k for k in sys.modules if k.startswith(module_name(name))]:
        del sys.modules[key]


def test_generated_package_layout(generated):
    name, target, module = generated
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    mod = module_name(name)
    assert files == sorted(["README.md", "pyproject.toml", f"{mod}/__init__.py", f"{mod}/model.py",
                            "tests/test_conformance.py"])
    import tomllib

    project = tomllib.loads((target / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["synthbench"] == {name: mod}
    assert project["project"]["name"] == f"synthbench-{name}"
    assert module.SYNTHBENCH_API == synthbench.HOOK_API_VERSION
    for rel in (f"{mod}/__init__.py", f"{mod}/model.py", "tests/test_conformance.py"):
        ast.parse((target / rel).read_text())  # valid Python
    assert "check_" in (target / "tests/test_conformance.py").read_text() or "CHECKS" in (
        target / "tests/test_conformance.py").read_text()


def test_generated_synthesizer_passes_the_kit(generated, tmp_path):
    name, _, module = generated
    cls = getattr(importlib.import_module(f"{module.__name__}.model"), class_name(name))
    results = check_synthesizer(cls, classes=(2, 3), sizes=(32,), workdir=tmp_path / "kit")
    assert results and all(r.error is None for r in results)
    # the hook registers exactly this class, by its path (imported only when used)
    seen = []
    module.register_synthesizers(register=lambda target, name=None: seen.append((target, name)))
    assert seen == [(f"{module.__name__}.model:{cls.__name__}", name)]


def test_generated_synthesizer_learns(generated, tmp_path):
    """Quick protocol, 30 steps on tiny phantom data: the L1 error of the synthesized slices drops."""
    from synthbench.data.prepared import PreparedDataset
    from synthbench.engine import train
    from synthbench.testing import registered

    name, _, module = generated
    cls = getattr(importlib.import_module(f"{module.__name__}.model"), class_name(name))
    data = write_tiny_dataset(tmp_path / "d", 3, 32, count=4)
    ds = PreparedDataset(data)
    batch = ds.collate([ds.torch_dataset("train")[i] for i in range(4)])
    torch.manual_seed(0)
    before = (cls(3, 32).generate(batch.onehot) - batch.image).abs().mean().item()
    with registered(cls):
        result = train(name, data, tmp_path / "run", protocol="quick", show_progress=False,
                       overrides={"max_steps": 30, "epochs": 30, "device": "cpu", "batch_size": 2,
                                  "lr_schedule": "constant", "lr": 1e-3, "sample_every_epoch": False,
                                  "train_split": "train"})
    after = (result.synthesizer.generate(batch.onehot) - batch.image).abs().mean().item()
    assert result.status == "finished"
    log = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in log} == {"warmup", "adversarial"}
    assert after < 0.6 * before, (before, after)


# --------------------------------------------------------------------------- docs
DOC = ROOT / "docs" / "plugins.md"


def _doc_headings() -> set[str]:
    return set(re.findall(r"^#{2,5} `([^`]+)`", DOC.read_text(), flags=re.M))


def test_docs_reference_every_hook_and_public_type():
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "synthbench_spec")]
    assert set(hooks) == {"register_synthesizers", "register_metrics", "register_downstream_tasks", "register_commands"}
    headings = _doc_headings()
    missing = [n for n in [*hooks, *synthbench.__all__] if n not in headings]
    assert not missing, f"docs/plugins.md has no reference heading for {missing}"


def test_docs_tutorial_commands_exist():
    """Every `synthbench <command>` the tutorial runs is a real CLI command."""
    text = DOC.read_text()
    used = set(re.findall(r"^synthbench ([a-z-]+)", text, flags=re.M))
    assert {"new-plugin", "plugins", "info", "train", "compare", "data"} <= used
    names = {c.name for c in build_app().registered_commands} | {g.name for g in build_app().registered_groups}
    assert used <= names, used - names
    assert "SYNTHBENCH_API" in text and "[project.entry-points.synthbench]" in text
