"""``synthbench train`` under torchrun (issue 18), gloo on CPU: 2 processes on one node, and 2
"nodes" of one process each on localhost (two torchrun launchers with --node-rank 0 and 1).

Both ranks finish (every launcher exits 0), rank 0 alone writes the run (one event-file writer,
one log line per step), and the result equals a single-process run with the same global batch
(4 = 2 per rank) to float rounding. Not bitwise: DDP averages the ranks' gradients with an
all-reduce, which adds in another order than one process's mean over the batch. Adam then
amplifies these rounding differences wherever a gradient is itself at rounding level (a conv bias
right before an InstanceNorm without affine has an exactly zero gradient, so Adam turns its noise
into steps of up to lr). Measured on the phantom (generator output on 4 fixed test label maps, in
[-1, 1]): 2.6e-6 after step 1, 1.5e-3 after step 2, 0.02 after step 3; a wrong split of the
batch (global batch 2) gives 0.36 / 0.42 / 0.55 and another seed 1.5. So the check is 1e-5 on
the step-1 checkpoint and 0.1 on the final weights.
pix2pixHD fits this check: InstanceNorm (per image) and no dropout, so nothing depends on how the
batch is split (pix2pix's BatchNorm statistics and dropout masks would).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from synthbench.data.prepared import PreparedDataset
from synthbench.engine import load_synthesizer, train
from synthbench.engine.tensorboard import event_files

OPTIONS = {"ngf": 8, "ndf": 8, "n_blocks_global": 1, "no_vgg_loss": True}
PROTOCOL = {"deterministic": True, "batch_size": 4, "max_steps": 3, "checkpoint_every": 1, "keep_last_n": 3}
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(data, out, port: int, nnodes: int, nproc: int, node_rank: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc-per-node", str(nproc),
           "--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
           "-m", "synthbench", "train", "pix2pixhd", "--data", str(data), "--out", str(out), "--protocol", "smoke",
           "--max-steps", str(PROTOCOL["max_steps"]), "--set", "deterministic=true",
           "--set", f"batch_size={PROTOCOL['batch_size']}", "--set", "checkpoint_every=1", "--set", "keep_last_n=3",
           "--quiet"]
    for key, value in OPTIONS.items():
        cmd += ["--option", f"{key}={str(value).lower()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SYNTHBENCH_PROGRESS": "off"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _finish(*launchers: subprocess.Popen) -> list[str]:
    outputs = []
    for proc in launchers:
        try:
            out, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for p in launchers:
                p.kill()
            raise
        outputs.append(out)
    for proc, out in zip(launchers, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    return outputs


def _generated(run, checkpoint: str | None = None) -> torch.Tensor:
    """The run's generator output on 4 fixed test label maps (after ``checkpoint``, else at the end)."""
    synth = load_synthesizer(run, checkpoint=run / "checkpoints" / checkpoint if checkpoint else None)
    data = PreparedDataset(json.loads((run / "config.json").read_text())["data"]["dir"])
    split = data.torch_dataset("test")
    batch = data.collate([split[i] for i in range(4)])
    with torch.no_grad():
        return synth.generate(batch.onehot)


@pytest.fixture(scope="module")
def single(phantom_dir, tmp_path_factory):
    """The same training in one process (global batch 4)."""
    run = tmp_path_factory.mktemp("single") / "run"
    train("pix2pixhd", phantom_dir, run, "smoke", options=OPTIONS, overrides=PROTOCOL, show_progress=False)
    return run


def _check_distributed_run(run, single) -> None:
    config = json.loads((run / "config.json").read_text())["resolved"]
    assert (config["world_size"], config["batch_size_per_rank"], config["global_batch_size"]) == (2, 2, 4)
    assert json.loads((run / "manifest.json").read_text())["status"] == "finished"
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert len(event_files(run)) == 1  # rank 0's writer only
    step1 = "ckpt_0000001.pt"
    torch.testing.assert_close(_generated(run, step1), _generated(single, step1), rtol=0, atol=1e-5)
    torch.testing.assert_close(_generated(run), _generated(single), rtol=0, atol=0.1)


def test_torchrun_two_processes_one_node(phantom_dir, tmp_path, single):
    run = tmp_path / "run"
    (output,) = _finish(_torchrun(phantom_dir, run, _free_port(), nnodes=1, nproc=2))
    _check_distributed_run(run, single)
    assert output.count("run directory:") == 1  # the summary is rank 0's (was printed by every rank)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_torchrun_two_nodes_of_one_process(phantom_dir, tmp_path, single):
    run = tmp_path / "run"
    port = _free_port()
    node0 = _torchrun(phantom_dir, run, port, nnodes=2, nproc=1, node_rank=0)
    node1 = _torchrun(phantom_dir, run, port, nnodes=2, nproc=1, node_rank=1)
    _finish(node0, node1)
    _check_distributed_run(run, single)
