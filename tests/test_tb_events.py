"""TensorBoard event files beside log.jsonl (issue 18): tags and values, resume without duplicated
steps, a record cut by a kill, the opt-in MLflow logging, and ``synthbench tensorboard``."""

from __future__ import annotations

import json
import shlex
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.engine import train
from synthbench.engine.tensorboard import (
    MLFLOW_ENV,
    event_files,
    scalar_tags,
    truncate_events_after,
)
from synthbench.errors import SynthbenchError

OURS = {"ngf": 8, "ndf": 8, "n_blocks": 2, "desum_channels": 16, "dfm_channels": 16}
# 20 real training slices / batch 4 = 5 steps per epoch; 4 epochs capped at 8 steps:
# ours' stages global 2, local 2, joint 4 (alpha and beta in the joint stage only).
DET = {"deterministic": True, "batch_size": 4, "train_split": "train", "checkpoint_every": 100, "epochs": 4, "max_steps": 8}
PIX = {"ngf": 8, "ndf": 8}


def _log(run) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def _events(run, purge: bool = True) -> EventAccumulator:
    return EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0}, purge_orphaned_data=purge).Reload()


def test_scalar_tags_names():
    record = {"step": 3, "stage": "joint", "epoch": 1, "batch": 3, "time": 1.0, "images_per_second": 12.5,
              "loss/G": 0.5, "lr/G": 2e-4, "alpha": 0.25, "beta": 0.75, "D1_real": 0.1}
    assert scalar_tags(record, "ours") == {
        "speed/images_per_second": 12.5, "progress/epoch": 1.0, "loss/G": 0.5, "lr/G": 2e-4,
        "ours/alpha": 0.25, "ours/beta": 0.75, "ours/D1_real": 0.1}


def test_ours_writes_losses_lr_alpha_beta_speed_and_sample_grids(phantom_dir, tmp_path):
    run = tmp_path / "run"
    train("ours", phantom_dir, run, "smoke", options=OURS, overrides=DET, show_progress=False)
    assert len(event_files(run)) == 1
    acc = _events(run)
    scalars = set(acc.Tags()["scalars"])
    expected = {"loss/D", "loss/G", "loss/DFM", "lr/D", "lr/G", "lr/DFM", "ours/alpha", "ours/beta",
                "speed/images_per_second", "progress/epoch"}
    assert expected <= scalars, expected - scalars
    log = _log(run)
    for tag, key in (("loss/G", "loss/G"), ("lr/G", "lr/G"), ("ours/alpha", "alpha"), ("ours/beta", "beta"),
                     ("speed/images_per_second", "images_per_second")):
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        want = [(r["step"], r[key]) for r in log if key in r]
        assert [s for s, _ in got] == [s for s, _ in want], tag
        assert all(v == pytest.approx(w, rel=1e-6) for (_, v), (_, w) in zip(got, want, strict=True)), tag
    assert [e.step for e in acc.Scalars("ours/alpha")] == [5, 6, 7, 8]  # the joint stage
    # one sample grid per epoch, the same picture as samples/epoch_NNN.png
    grids = acc.Images("samples")
    assert [g.step for g in grids] == [2, 4, 8] and len(list((run / "samples").glob("*.png"))) == 3
    last = sorted((run / "samples").glob("*.png"))[-1]
    assert grids[-1].encoded_image_string and (grids[-1].width, grids[-1].height) == _png_size(last)


def _png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_resume_drops_the_steps_after_the_checkpoint(phantom_dir, tmp_path):
    """A run killed after step 4's events but before its checkpoint: the resumed run redoes steps
    3-4, and every reader sees each step once (old behaviour: steps 3 and 4 twice)."""
    run = tmp_path / "run"
    overrides = {"deterministic": True, "max_steps": 4, "checkpoint_every": 2, "keep_last_n": 5}
    train("pix2pix", phantom_dir, run, "smoke", options=PIX, overrides=overrides, show_progress=False)
    (run / "checkpoints" / "ckpt_0000004.pt").unlink()  # as if killed before this checkpoint
    (run / "final.pt").unlink()
    train("pix2pix", phantom_dir, run, resume=True, show_progress=False)
    assert len(event_files(run)) == 2
    log_steps = [r["step"] for r in _log(run)]
    assert log_steps == [1, 2, 3, 4]
    for purge in (True, False):  # TensorBoard's purge (purge_step) and a reader without it
        acc = _events(run, purge)
        for tag in ("loss/G", "loss/D", "lr/G", "speed/images_per_second"):
            assert [e.step for e in acc.Scalars(tag)] == log_steps, (tag, purge)
        values = {e.step: e.value for e in acc.Scalars("loss/G")}
        assert [values[s] for s in log_steps] == pytest.approx([r["loss/G"] for r in _log(run)], rel=1e-6)


def test_truncation_reads_past_a_record_cut_by_a_kill(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as w:
        for step in range(1, 6):
            w.add_scalar("loss/G", float(step), step)
    (path,) = event_files(tmp_path)
    path.write_bytes(path.read_bytes()[:-7])  # the last record cut short
    assert truncate_events_after(tmp_path, 3) == 1  # step 4 (5 was cut) dropped
    assert [e.step for e in _events(tmp_path, purge=False).Scalars("loss/G")] == [1, 2, 3]
    assert truncate_events_after(tmp_path, 3) == 0  # nothing more to do: the file is left as it is


def test_rank_other_than_zero_writes_no_events(tmp_path):
    from synthbench.engine.tensorboard import RunEvents

    events = RunEvents(tmp_path, "pix2pix", enabled=False)
    events.scalars({"step": 1, "loss/G": 1.0})
    events.close("finished")
    assert list(tmp_path.iterdir()) == []


def test_mlflow_without_mlflow_is_skipped_with_a_line(phantom_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(MLFLOW_ENV, str(tmp_path / "mlruns"))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    result = train("pix2pix", phantom_dir, tmp_path / "run", "smoke", options=PIX, show_progress=False)
    assert result.status == "finished"
    assert "mlflow is not installed: MLflow logging skipped" in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()


def test_mlflow_local_store_gets_the_scalars(phantom_dir, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is optional and not installed")
    store = tmp_path / "mlruns"
    monkeypatch.setenv(MLFLOW_ENV, str(store))
    run = tmp_path / "run"
    train("pix2pix", phantom_dir, run, "smoke", options=PIX, overrides={"stop_after_steps": 2}, show_progress=False)
    run_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    client = mlflow.tracking.MlflowClient(tracking_uri=store.resolve().as_uri())
    assert client.get_run(run_id).info.status == "KILLED"  # stopped, to be resumed
    train("pix2pix", phantom_dir, run, resume=True, show_progress=False)  # continues the same MLflow run
    assert json.loads((run / "mlflow_run.json").read_text())["run_id"] == run_id
    history = client.get_metric_history(run_id, "loss/G")
    assert [m.step for m in history] == [r["step"] for r in _log(run)] == [1, 2, 3, 4]
    info = client.get_run(run_id)
    assert info.info.status == "FINISHED" and info.data.params["method"] == "pix2pix"
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv(MLFLOW_ENV, str(blocker / "mlruns"))
    with pytest.raises(SynthbenchError, match="cannot log to MLflow"):
        train("pix2pix", phantom_dir, tmp_path / "run2", "smoke", options=PIX, show_progress=False)
    assert not (tmp_path / "run2").exists()  # refused before anything was written


# ------------------------------------------------------------------ synthbench tensorboard
def test_tensorboard_command_print_only(phantom_dir, tmp_path):
    run = tmp_path / "cmp" / "runs" / "pix2pix-seed0-abc"
    train("pix2pix", phantom_dir, run, "smoke", options=PIX, show_progress=False)
    app = build_app()
    runner = CliRunner()
    for target, logdir in ((run, run), (tmp_path / "cmp", tmp_path / "cmp" / "runs")):
        res = runner.invoke(app, ["tensorboard", str(target), "--print-only", "--port", "7007", "--host", "0.0.0.0"])
        assert res.exit_code == 0, res.output
        args = shlex.split(res.output.strip())
        assert args[:3] == [sys.executable, "-m", "tensorboard.main"]
        assert args[3:] == ["--logdir", str(logdir), "--port", "7007", "--host", "0.0.0.0"]
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["tensorboard", str(empty), "--print-only"])
    assert res.exit_code == 2 and "no TensorBoard event files" in res.output and str(empty) in res.output
    res = runner.invoke(app, ["tensorboard", str(tmp_path / "missing"), "--print-only"])
    assert res.exit_code == 2 and "not a folder" in res.output
    res = runner.invoke(app, ["tensorboard", str(run), "--print-only", "--port", "0"])
    assert res.exit_code == 2  # click's range check
