"""A rich progress bar redraws twice a second (issue 21): rich's default of 10 redraws took ~5% of
a core in the process that shows it (a training, or a comparison whose workers share its cores)."""

from __future__ import annotations

from rich.progress import Progress

from synthbench.cli import console


def test_rich_bar_redraws_twice_a_second(monkeypatch):
    monkeypatch.setenv(console.ENV_PROGRESS, "rich")
    bar = console.progress()
    assert isinstance(bar, Progress)
    assert bar.live.refresh_per_second == console.REFRESH_PER_SECOND == 2

