"""Engine: run layout, refusing occupied runs, exact resume, NaN stop, schedules, DDP (gloo, 2 CPU ranks)."""

from __future__ import annotations

import json
import os
import socket
import types

import pytest
import torch
from torch import nn

from synthbench import OptimizerSpec, Synthesizer, Update, hookimpl
from synthbench.engine import get_protocol, load_synthesizer, plan_stages, train
from synthbench.engine.loop import lr_lambda
from synthbench.errors import NonFiniteLossError, SynthbenchError
from synthbench.plugins import PluginRecord, get_registry
from synthbench.synthesizer import Stage

TINY = {"ngf": 8, "ndf": 8}
DET = {"deterministic": True, "batch_size": 4, "train_split": "train", "checkpoint_every": 100, "epochs": 2}


def _weights(synth) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, sd in synth.state_dict().items() for k, v in sd.items()}


def test_smoke_run_layout(phantom_dir, tmp_path):
    run = tmp_path / "run"
    result = train("pix2pix", phantom_dir, run, "smoke", options=TINY, show_progress=False)
    assert result.steps == get_protocol("smoke").max_steps == 4
    assert result.status == "finished" and set(result.final_losses) == {"D", "G"}
    config = json.loads((run / "config.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    assert config["method"] == "pix2pix" and config["options"]["ngf"] == 8
    assert config["data"]["split"] == "train_aug"  # the phantom has an augmented training split
    assert config["optimizers"]["main"]["G"]["betas"] == [0.5, 0.999]
    assert manifest["status"] == "finished" and manifest["data_hash"] == config["data"]["content_hash"]
    assert manifest["plugin"]["plugin"] == "pix2pix" and manifest["hardware"]["cpu_cores"] >= 1
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert all(isinstance(r["loss/G"], float) and "lr/D" in r and r["images_per_second"] > 0 for r in lines)
    # schedule over the 4-step plan: constant for 2 steps, then linear to 0
    assert [r["lr/G"] for r in lines] == pytest.approx([2e-4, 2e-4, 1e-4, 0.0])
    assert (run / "samples" / "epoch_001.png").is_file()
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["ckpt_0000002.pt", "ckpt_0000004.pt"]
    ck = torch.load(run / "checkpoints" / "ckpt_0000004.pt", weights_only=True)
    assert ck["position"]["step"] == 4
    synth = load_synthesizer(run)
    for name, value in _weights(synth).items():
        net, key = name.split(".", 1)
        assert torch.equal(value, ck["nets"][net][key])


def test_refuses_occupied_run_dir(phantom_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "something").write_text("x")
    with pytest.raises(SynthbenchError, match="not empty"):
        train("pix2pix", phantom_dir, run, "smoke", options=TINY, show_progress=False)
    with pytest.raises(SynthbenchError, match="config.json"):
        train("pix2pix", phantom_dir, run, "smoke", options=TINY, resume=True, show_progress=False)


def test_resume_is_exact(phantom_dir, tmp_path):
    """Interrupted twice (mid-epoch, then across an epoch boundary) and resumed == uninterrupted."""
    full = train("pix2pix", phantom_dir, tmp_path / "full", "smoke", options=TINY,
                 overrides={**DET, "max_steps": 9}, show_progress=False)
    assert full.steps == 9 and full.epochs == 2  # 20 train slices / batch 4 = 5 steps per epoch
    part = tmp_path / "part"
    r1 = train("pix2pix", phantom_dir, part, "smoke", options=TINY,
               overrides={**DET, "max_steps": 9, "stop_after_steps": 3}, show_progress=False)
    assert r1.status == "stopped" and r1.steps == 3
    assert json.loads((part / "manifest.json").read_text())["status"] == "stopped"
    r2 = train("pix2pix", phantom_dir, part, resume=True, overrides={"stop_after_steps": 4}, show_progress=False)
    assert r2.steps == 7 and r2.status == "stopped"
    with pytest.raises(SynthbenchError, match="may change"):
        train("pix2pix", phantom_dir, part, resume=True, overrides={"batch_size": 2}, show_progress=False)
    r3 = train("pix2pix", phantom_dir, part, resume=True, show_progress=False)
    assert r3.steps == 9 and r3.status == "finished"
    a, b = _weights(load_synthesizer(tmp_path / "full")), _weights(load_synthesizer(part))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    log = [json.loads(x)["step"] for x in (part / "log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 10))
    manifest = json.loads((part / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["resumed_at"]) == 2


# ------------------------------------------------------------------ NaN stop with a tiny fake method
class _NaNAfter(Synthesizer):
    """A one-conv 'generator' whose loss turns NaN at step ``nan_at`` (tests the engine's guard)."""

    name = "test-nan-after"

    @classmethod
    def default_options(cls):
        return {"nan_at": 3}

    def build_networks(self):
        self.calls = 0
        return {"G": nn.Conv2d(self.num_classes, 1, 3, padding=1)}

    def optimizers(self, stage):
        return {"G": OptimizerSpec(tuple(self.nets["G"].parameters()))}

    def training_step(self, stage, batch):
        self.calls += 1
        loss = (self.train_nets["G"](batch.onehot) - batch.image).abs().mean()
        if self.calls >= self.options["nan_at"]:
            loss = loss * float("nan")
        yield Update("G", loss, {"calls": self.calls})


@pytest.fixture
def nan_method():
    registry = get_registry()
    plugin = types.SimpleNamespace(register_synthesizers=hookimpl(lambda register: register(_NaNAfter)))
    registry.add_plugin(plugin, PluginRecord(name="test-nan", module=__name__))
    yield _NaNAfter.name
    registry.synthesizers.pop(_NaNAfter.name, None)
    registry.pm.unregister(plugin)
    registry.records.pop("test-nan", None)


def test_nan_loss_stops_and_keeps_last_checkpoint(phantom_dir, tmp_path, nan_method):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as err:
        train(nan_method, phantom_dir, run, "smoke",
              overrides={"max_steps": 10, "checkpoint_every": 1, "keep_last_n": 5}, show_progress=False)
    message = str(err.value)
    assert "test-nan-after" in message and "'G'" in message and "step 3" in message and "ckpt_0000002.pt" in message
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt_0000001.pt", "ckpt_0000002.pt"]
    assert not (run / "final.pt").exists()
    synth = load_synthesizer(run)  # the last good checkpoint loads
    assert all(torch.isfinite(p).all() for p in synth.nets.parameters())


def test_plan_and_schedule():
    stages = (Stage("a", 0.25), Stage("b", 0.75))
    plans = plan_stages(stages, epochs=4, steps_per_epoch=10, max_steps=None)
    assert [(p.epochs, p.steps) for p in plans] == [(1, 10), (3, 30)]
    capped = plan_stages(stages, epochs=4, steps_per_epoch=10, max_steps=8)
    assert [p.steps for p in capped] == [2, 6]
    tiny = plan_stages((Stage("x", 0.01), Stage("y", 0.99)), epochs=2, steps_per_epoch=3, max_steps=None)
    assert tiny[0].steps == 1  # at least one step per stage
    f = lr_lambda(10, "linear_decay", 0.5)
    assert [f(i) for i in (0, 4, 5, 6, 9)] == pytest.approx([1, 1, 1, 0.8, 0.2])
    assert lr_lambda(10, "constant", 0.5)(9) == 1.0
    with pytest.raises(SynthbenchError, match="unknown protocol field"):
        get_protocol("quick", {"epochz": 3})
    with pytest.raises(SynthbenchError, match="precision"):
        get_protocol("quick", {"precision": "fp8"})


# ------------------------------------------------------------------ DDP: 2 CPU processes, gloo
def _ddp_worker(rank: int, world: int, port: int, data: str, out: str, weights_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from synthbench.engine import train as train_

    result = train_("pix2pix", data, out, "smoke", options=TINY,
                    overrides={"deterministic": True, "max_steps": 3, "batch_size": 4}, show_progress=False)
    torch.save({"steps": result.steps, "weights": result.synthesizer.state_dict()}, f"{weights_dir}/rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_two_ranks(phantom_dir, tmp_path):
    import torch.multiprocessing as mp

    weights_dir = tmp_path / "w"
    weights_dir.mkdir()
    run = tmp_path / "run"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(phantom_dir), str(run), str(weights_dir)), nprocs=2, join=True)
    config = json.loads((run / "config.json").read_text())
    # batch_size is the global batch: 4 over 2 ranks is 2 per rank
    assert config["resolved"]["world_size"] == 2 and config["resolved"]["global_batch_size"] == 4
    assert config["resolved"]["batch_size_per_rank"] == 2
    r0 = torch.load(weights_dir / "rank0.pt", weights_only=True)
    r1 = torch.load(weights_dir / "rank1.pt", weights_only=True)
    assert r0["steps"] == r1["steps"] == 3
    for net in ("G", "D"):
        assert r0["weights"][net].keys() == r1["weights"][net].keys()
        for key, value in r0["weights"][net].items():
            assert torch.equal(value, r1["weights"][net][key]), f"{net}.{key} differs between ranks"
    final = load_synthesizer(run).state_dict()  # final.pt, written by rank 0 only
    assert all(torch.equal(v, r0["weights"]["G"][k]) for k, v in final["G"].items())
    assert list((tmp_path).glob("run*")) == [run]  # rank 1 wrote nothing elsewhere
    assert len((run / "log.jsonl").read_text().splitlines()) == 3
