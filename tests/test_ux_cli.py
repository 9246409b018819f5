"""The CLI a newcomer meets (issue 22): one device rule, agreeing U-Net defaults, help text without
noise, the training size and the share of an epoch said honestly, the content hash on its line."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from synthbench.cli.main import build_app

PIX = ["--option", "ngf=8", "--option", "ndf=8"]


def _commands(command, path=()):
    """(path, click command) of every command under the app, groups included."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _param(command_path: tuple[str, ...], name: str):
    root = typer.main.get_command(build_app())
    command = dict(_commands(root))[command_path]
    return next(p for p in command.params if p.name == name)


@pytest.mark.parametrize("command", ["train", "compare", "synthesize", "evaluate", "downstream"])
def test_every_command_defaults_to_device_auto(command):
    """Old behaviour: synthesize, evaluate and downstream defaulted to cpu, train/compare to auto."""
    assert _param((command,), "device").default == "auto"


def test_device_auto_resolves_and_bad_devices_are_one_line_errors():
    import torch

    from synthbench.cli.device import resolve_device
    from synthbench.errors import SynthbenchError

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(SynthbenchError, match="--device"):
        resolve_device("gpu7")


def test_unet_protocol_defaults_agree():
    """Old behaviour: compare --unet-protocol quick, downstream --protocol default."""
    assert _param(("compare",), "unet").default == _param(("downstream",), "protocol").default == "quick"


def test_help_shows_no_bool_type_and_keeps_brackets():
    runner = CliRunner()
    root = typer.main.get_command(build_app())
    for path, _ in _commands(root):
        result = runner.invoke(build_app(), [*path, "--help"], terminal_width=120)
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path  # flags take no value
    result = runner.invoke(build_app(), ["bench", "run", "--help"], terminal_width=120)
    assert "[profiles.NAME]" in result.output  # Rich markup swallowed it


def test_train_says_which_size_wins_and_the_share_of_an_epoch(phantom_dir, tmp_path):
    """Old behaviour: nothing about the size; "4 steps, 1 epochs" for 16 of the training images."""
    from synthbench.data.prepared import PreparedDataset

    count = len(PreparedDataset(phantom_dir).split("train_aug"))
    result = CliRunner().invoke(build_app(), [
        "train", "pix2pix", "--data", str(phantom_dir), "--protocol", "smoke", "--set", "image_size=32",
        "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu", *PIX], terminal_width=200)
    assert result.exit_code == 0, (result.output, result.exception)
    assert ("training at 64 px, the prepared data's size: protocol 'smoke' names 32 px, but a run trains on the "
            "slices as prepared") in result.stderr
    assert "prepare the data with --size 32" in result.stderr
    share = 16 / count
    assert f"4 steps of batch 4 = 16 images, {share:.3g} of one epoch over {count:,} training images" in result.stdout
    assert "epochs" not in result.stdout


def test_train_at_the_protocols_size_says_so(phantom_dir, tmp_path):
    from synthbench.cli.commands.train import size_message

    assert size_message(phantom_dir, "smoke", {}) == "training at 64 px: the prepared data's size, as protocol 'smoke' names"


def test_prepare_prints_the_content_hash_on_the_path_line(tmp_path):
    """Old behaviour (before soft wrapping): the 64-character hash wrapped onto a line of its own."""
    out = tmp_path / "a-rather-long-folder-name-for-the-prepared-phantom-data"
    result = CliRunner().invoke(build_app(), [
        "data", "prepare", "phantom", "--out", str(out), "--size", "32", "--patients", "3",
        "--slices-per-patient", "2", "--train-factor", "1", "--test-factor", "1", "--keep-all-slices",
        "--slice-split"], terminal_width=60)
    assert result.exit_code == 0, (result.output, result.exception)
    line = next(ln for ln in result.stdout.splitlines() if "content hash" in ln)
    assert line.startswith(str(out)) and re.search(r"content hash [0-9a-f]{64}$", line)
