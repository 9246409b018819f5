"""The transcribed published numbers (synthbench.report.published) against paper.md's text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from synthbench.report import published

PAPER = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "paper.md"
pytestmark = pytest.mark.skipif(not PAPER.exists(), reason=f"paper summary not found at {PAPER}")


def _section(text: str, start: str, end: str | None) -> str:
    body = text.split(start, 1)[1]
    if end is not None:
        body = body.split(end, 1)[0]
    return " ".join(body.split())


def test_table2_matches_paper():
    text = PAPER.read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 9 and cells[0] != "method":
            rows[cells[0]] = tuple(cells[1:])
    assert rows == published.TABLE2


@pytest.mark.parametrize("key,start,end", [("III", "Table III", "Table IV"), ("IV", "Table IV", "Table V")])
def test_tables3_4_match_paper(key, start, end):
    section = _section(PAPER.read_text(), start, end)
    rows = published.TABLES[key][3]
    for name, values in rows.items():
        label = name.replace("50% from ", "") if name.startswith("50% from ") else name
        assert f"{label}: {' / '.join(values)}" in section, name
    # every "a / b / c" triple in the text is transcribed
    assert len(re.findall(r"\d+\.\d+ / \d+\.\d+ / \d+\.\d+", section)) == len(rows)


def test_table5_matches_paper():
    section = _section(PAPER.read_text(), "Table V", None)
    for name, values in published.TABLE5.items():
        assert f"{name} {' / '.join(values)}" in section, name
    assert len(re.findall(r"\d+\.\d+ / \d+\.\d+ / \d+\.\d+", section)) == len(published.TABLE5)


def test_as_float_and_directions():
    assert published.as_float(published.TABLE2["SPADE"][1]) == 26.5
    assert published.TABLE2_HIGHER_IS_BETTER == (False, True, True, False, False, True, True, False)
