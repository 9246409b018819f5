"""Issue 17: typed ``--option`` values, a variant's keys over the reduced build, ``info --protocol``,
plain progress lines off a terminal."""

from __future__ import annotations

import io
import json

import pytest
from torch import nn
from typer.testing import CliRunner

from synthbench import OptimizerSpec, Synthesizer, Update
from synthbench.cli import console
from synthbench.cli.main import build_app
from synthbench.engine import train
from synthbench.errors import SynthbenchError
from synthbench.options import build_options, typed_options
from synthbench.plugins import get_registry
from synthbench.testing import registered


class Widths(Synthesizer):
    """A conv of ``width`` channels; the quick/smoke build narrows it, the 'wide' variant widens it."""

    name = "opt-widths"
    reduced_options = {"width": 2, "depth": 1}
    variants = {"wide": {"width": 16}}

    @classmethod
    def default_options(cls):
        return {"width": 8, "depth": 2, "lambda_l1": 100.0, "dropout": True, "betas": (0.5, 0.999), "norm": "instance"}

    def build_networks(self):
        w = self.options["width"]
        return {"G": nn.Sequential(nn.Conv2d(self.num_classes, w, 1), nn.Conv2d(w, 1, 1), nn.Tanh())}

    def optimizers(self, stage):
        return {"G": OptimizerSpec(tuple(self.nets["G"].parameters()))}

    def training_step(self, stage, batch):
        yield Update("G", (self.train_nets["G"](batch.onehot) - batch.image).abs().mean())


def test_option_text_is_typed_by_the_default():
    typed = typed_options(Widths, {"width": "4", "lambda_l1": "1e2", "dropout": "False", "betas": "0.4,0.9",
                                   "norm": "batch"})
    assert typed == {"width": 4, "lambda_l1": 100.0, "dropout": False, "betas": (0.4, 0.9), "norm": "batch"}
    assert typed_options(Widths, {"betas": "(0.1, 0.2)"})["betas"] == (0.1, 0.2)


@pytest.mark.parametrize(("item", "message"), [
    ("lambda_l1=nan", "option 'lambda_l1' takes a finite number (default 100.0)"),
    ("lambda_l1=inf", "takes a finite number"),
    ("width=1.5", "option 'width' takes an integer"),
    ("dropout=maybe", "takes true or false"),
    ("betas=0.5", "takes 2 items"),
    ("betas=0.5,x", "takes 2 items"),
    ("no_such=1", "opt-widths has no option 'no_such' (known: betas, depth"),
])
def test_a_value_the_option_cannot_take_is_a_one_line_error(item, message, phantom_dir, tmp_path):
    """Old: lambda_l1=nan reached the plugin as the string 'nan' and crashed inside it."""
    with registered(Widths):
        result = CliRunner().invoke(build_app(), ["train", Widths.name, "--data", str(phantom_dir), "--protocol",
                                                  "smoke", "--out", str(tmp_path / "r"), "--option", item])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_list_option_takes_any_nonempty_length_a_tuple_option_its_own():
    """Old: every list option had to keep its default's length, so SDM's reduced build
    (attention_resolutions [16, 8] of the default [32, 16, 8]) failed its own option check."""
    from synthbench.options import check_option, parse_option

    assert parse_option("fm_layers", "1,2", [1, 2, 3]) == [1, 2]
    assert parse_option("fm_layers", "[4, 5, 6, 7]", [1, 2, 3]) == [4, 5, 6, 7]
    check_option("attention_resolutions", [16, 8], [32, 16, 8])
    with pytest.raises(ValueError, match="one or more items"):
        check_option("attention_resolutions", [], [32, 16, 8])
    with pytest.raises(ValueError, match="takes an integer"):
        parse_option("fm_layers", "1,x", [1, 2, 3])
    with pytest.raises(ValueError, match="takes 2 items"):
        check_option("betas", [0.5, 0.9, 0.99], (0.5, 0.999))


def test_suite_and_api_options_are_type_checked_too():
    with pytest.raises(SynthbenchError, match="option 'lambda_l1' takes a finite number"):
        build_options(Widths, None, False, None, {"lambda_l1": "nan"})
    with pytest.raises(SynthbenchError, match="protocol method_options: opt-widths option 'width' takes an integer"):
        build_options(Widths, None, False, {"width": 2.5}, None)


def test_a_variant_wins_over_the_reduced_build(phantom_dir, tmp_path):
    """Old: --variant wide trained narrow under quick/smoke while the run recorded 'wide'."""
    assert build_options(Widths, "wide", True, None, None) == {"depth": 1}
    assert build_options(Widths, None, True, None, None) == {"width": 2, "depth": 1}
    assert build_options(Widths, "wide", True, None, {"width": 3}) == {"depth": 1, "width": 3}  # explicit wins
    with registered(Widths):
        result = train(Widths.name, phantom_dir, tmp_path / "run", "smoke", variant="wide",
                       overrides={"max_steps": 1, "device": "cpu"}, show_progress=False)
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["variant"] == "wide" and config["options"]["width"] == 16 and config["options"]["depth"] == 1
    assert result.synthesizer.nets["G"][0].out_channels == 16


def test_info_shows_the_networks_a_protocol_trains():
    c = 4
    with registered(Widths):
        def info(*args):
            result = CliRunner().invoke(build_app(), ["info", Widths.name, "--classes", str(c), "--json", *args])
            assert result.exit_code == 0, result.output
            return json.loads(result.stdout)

        def params(w):
            return (c * w + w) + (w + 1)

        assert info()["parameters"] == {"G": params(8)}
        quick = info("--protocol", "quick")
        assert quick["parameters"] == {"G": params(2)} and quick["size"] == 64 and quick["protocol"] == "quick"
        assert info("--protocol", "quick", "--variant", "wide")["parameters"] == {"G": params(16)}
        assert info("--protocol", "paper")["parameters"] == {"G": params(8)}
        assert info("--option", "width=5")["parameters"] == {"G": params(5)}
    assert get_registry().synthesizers.get(Widths.name) is None


# --------------------------------------------------------------------------- progress off a terminal
class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_plain_progress_lines_with_rate_and_eta(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(console, "_clock", clock)
    out = io.StringIO()
    bar = console.PlainProgress(stream=out, min_interval=5, heartbeat=60)
    task = bar.add_task("pix2pix", total=100, info="")
    for step in range(1, 101):
        clock.now += 1.0  # one step a second
        description = "pix2pix main ep 1" if step <= 50 else "pix2pix main ep 2"
        bar.update(task, advance=1, description=description, info=f"G {1 / step:.3g}")
    lines = out.getvalue().splitlines()
    # a line at the start of each epoch, at every 10% (5 s apart at least) and at completion
    assert lines[0].endswith("pix2pix main ep 1: 1/100 (1%) 1/s eta 0:01:39 | G 1")
    assert any("pix2pix main ep 2: 51/100 (51%)" in ln for ln in lines)
    assert any(": 30/100 (30%) 1/s eta 0:01:10 |" in ln for ln in lines)
    assert lines[-1].endswith("100/100 (100%) done in 0:01:40 | G 0.01")
    assert 10 <= len(lines) <= 13


def test_plain_progress_heartbeat_for_slow_steps(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(console, "_clock", clock)
    out = io.StringIO()
    bar = console.PlainProgress(stream=out, min_interval=5, heartbeat=60)
    task = bar.add_task("train", total=10_000)
    for _ in range(30):
        clock.now += 20.0  # 20 s a step: 10% would take 5.5 hours
        bar.advance(task)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "0.05/s" not in lines[0] and "20 s each" in lines[0]


def test_training_off_a_terminal_prints_progress_lines(phantom_dir, tmp_path, capsys, monkeypatch):
    """Old: nothing at all when stderr was not a terminal (compare was silent for 17-30 minutes)."""
    monkeypatch.delenv(console.ENV_PROGRESS, raising=False)
    assert console.progress_mode() == "plain"  # pytest captures stderr: not a terminal
    with registered(Widths):
        train(Widths.name, phantom_dir, tmp_path / "run", "smoke", overrides={"max_steps": 3, "device": "cpu"})
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if f"{Widths.name} main ep" in ln]
    assert lines and "/3 (" in lines[0] and "done in" in lines[-1], err
    monkeypatch.setenv(console.ENV_PROGRESS, "off")
    assert type(console.progress()).__name__ == "Progress"
    monkeypatch.setenv(console.ENV_PROGRESS, "rich")
    assert console.progress_mode() == "rich"
