"""One list of departures (issue 13): docs/departures.md is generated and up to date, every option
of a built-in method that differs from its paper's value has a listed departure, ``info`` prints
them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.departures import (
    EVALUATION,
    UNSTATED,
    builtin_synthesizers,
    method_departures,
    render_markdown,
    undocumented_options,
)

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = builtin_synthesizers()


def test_departures_page_is_up_to_date():
    page = (ROOT / "docs" / "departures.md").read_text()
    assert page == render_markdown(), "docs/departures.md is stale: python -m synthbench.departures docs/departures.md"
    assert "training set of the image synthesis task" in page and "seg_test_aug" in page
    for name in ("ours", "pix2pix", "pix2pixhd", "spade", "sean"):
        assert f"## {name}\n" in page


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_option_off_the_paper_value_has_a_departure(name):
    cls = BUILTIN[name]
    assert cls.paper_options, f"{name} declares no paper_options"
    assert undocumented_options(cls) == []
    for row in cls.departures(cls.default_options()):
        assert row.topic and row.paper and row.here and row.why


def test_the_check_catches_an_undocumented_default():
    pix2pix = BUILTIN["pix2pix"]

    class Drifted(pix2pix):
        @classmethod
        def default_options(cls):
            return {**super().default_options(), "lambda_l1": 10.0, "new_knob": 1}

    assert undocumented_options(Drifted) == ["lambda_l1 (default 10.0, paper 100.0)", "new_knob (no paper value declared)"]


def test_explicit_options_and_variants_appear_as_departures():
    ours = BUILTIN["ours"]
    rows = method_departures(ours, ours.resolve_options({"lambda_dfm": 1.0}, "no_dfm"))
    extra = {r.option: (r.paper, r.here) for r in rows if r.topic.startswith("option ")}
    assert extra == {"lambda_dfm": ("10.0", "1.0"), "feature_matching": ("'dynamic'", "'none'")}
    assert all(r.paper != UNSTATED or r.option for r in rows)
    assert any(r.topic.startswith("U-Net test set") for r in EVALUATION)


def test_info_prints_departures_and_test_time():
    runner = CliRunner()
    out = runner.invoke(build_app(), ["info", "sean", "--size", "64", "--json"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.stdout)
    assert info["test_time"]["uses_style"] is True
    assert any(d["option"] == "synthesize --style real" for d in info["departures"])
    text = runner.invoke(build_app(), ["info", "pix2pix", "--size", "64"])
    assert text.exit_code == 0 and "departures from the paper" in text.output
    assert "test time: mode=official" in text.output
