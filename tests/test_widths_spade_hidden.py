"""Issue 21: the SPADE modulation's hidden width is an option (``spade_hidden``, official 128) that
the reduced builds of the quick and smoke protocols narrow with the other widths (128 -> 32)."""

from __future__ import annotations

import json

import pytest
import torch
from synthbench_sean import SEANSynthesizer
from synthbench_spade import SPADESynthesizer
from synthbench_spade.networks import SPADEModulation
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.departures import render_markdown
from synthbench.options import build_options
from synthbench.synthesizer import SynthesizerConfigError, count_parameters


def hidden_widths(module: torch.nn.Module) -> set[int]:
    """The shared-conv output width of every SPADE modulation inside ``module``."""
    mods = [m for m in module.modules() if isinstance(m, SPADEModulation)]
    assert mods, "no SPADE modulation found"
    return {m.mlp_shared[0].out_channels for m in mods} | {m.mlp_gamma.in_channels for m in mods}


def test_reduced_build_narrows_the_modulation_to_32():
    cls = SPADESynthesizer
    options = build_options(cls, None, True, None, None)  # what the quick and smoke protocols pass
    assert options["spade_hidden"] == 32
    synth = cls(num_classes=4, image_size=64, options=options)
    assert hidden_widths(synth.nets["G"]) == {32}
    assert synth.options["spade_hidden"] == 32
    assert any("32" in v and "spade_hidden" in v for v in synth.describe().values())


def test_seans_reduced_build_keeps_the_official_width():
    """SEAN's quick run does not learn with a 32-wide modulation (tests/test_spade_learning.py)."""
    options = build_options(SEANSynthesizer, None, True, None, None)
    synth = SEANSynthesizer(num_classes=4, image_size=64, options=options)
    assert synth.options["spade_hidden"] == 128 and hidden_widths(synth.nets["G"]) == {128}


@pytest.mark.parametrize(("cls", "g_count"), [(SPADESynthesizer, 92_088_385), (SEANSynthesizer, 207_358_757)])
def test_default_build_keeps_the_official_128_and_the_reference_count(cls, g_count):
    with torch.device("meta"):
        synth = cls(num_classes=4, image_size=256)
    assert synth.options["spade_hidden"] == cls.paper_options["spade_hidden"] == 128
    assert hidden_widths(synth.nets["G"]) == {128}
    assert count_parameters(synth.nets["G"]) == g_count


@pytest.mark.parametrize("cls", [SPADESynthesizer, SEANSynthesizer])
@pytest.mark.parametrize("bad", [0, -4, 1.5, "32", True])
def test_bad_hidden_width_is_refused_in_one_line(cls, bad):
    with pytest.raises(SynthesizerConfigError) as err:
        cls(num_classes=4, image_size=64, options={"ngf": 16, "ndf": 16, "spade_hidden": bad})
    message = str(err.value)
    assert "\n" not in message
    assert f"{cls.name}: option spade_hidden must be a positive integer" in message


def test_cli_refuses_zero_and_info_shows_the_quick_width():
    runner = CliRunner()
    bad = runner.invoke(build_app(), ["info", "spade", "--size", "64", "--option", "spade_hidden=0"])
    assert bad.exit_code == 2, bad.output
    assert "spade_hidden must be a positive integer" in bad.output
    quick = runner.invoke(build_app(), ["info", "spade", "--protocol", "quick", "--json"])
    assert quick.exit_code == 0, quick.output
    info = json.loads(quick.output)
    assert info["options"]["spade_hidden"] == 32 and info["options"]["ngf"] == 16


def test_departures_page_lists_each_reduced_build():
    page = render_markdown({"spade": SPADESynthesizer, "sean": SEANSynthesizer})
    assert "`ngf=16`, `ndf=16`, `spade_hidden=32`" in page
    assert "`ngf=16`, `ndf=16`, `style_dim=64`." in page
