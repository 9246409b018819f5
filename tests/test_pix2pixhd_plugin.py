"""pix2pixHD plugin: reference counts, shapes, size errors, stages, a manual training loop and a
short engine run that learns."""

from __future__ import annotations

import json

import pytest
import torch
from synthbench_pix2pixhd import GlobalGenerator, LocalEnhancer, Pix2PixHD

from synthbench import Batch, SynthesizerConfigError
from synthbench.plugins import get_registry
from synthbench.synthesizer import count_parameters

SMALL = {"ngf": 8, "ndf": 8, "n_blocks_global": 2}


def test_registered_through_entry_point():
    assert get_registry().synthesizer("pix2pixhd") is Pix2PixHD


def test_reference_parameter_counts():
    with torch.device("meta"):
        glob = Pix2PixHD(4, 256).parameter_counts()
        local = Pix2PixHD(4, 256, variant="local").parameter_counts()
        assert count_parameters(GlobalGenerator(36, 3)) == 182_546_755  # Cityscapes cross-check
    assert glob == {"G": 182_440_129, "D": 5_533_570}
    assert local == {"G": 182_703_393, "D": 8_300_355}


def test_info_cli_prints_reference_counts():
    from typer.testing import CliRunner

    from synthbench.cli.main import build_app

    runner = CliRunner()
    with torch.device("meta"):  # counts only: skip allocating 190M parameters
        out = runner.invoke(build_app(), ["info", "pix2pixhd", "--classes", "4", "--size", "256", "--json"])
        out_local = runner.invoke(build_app(), ["info", "pix2pixhd", "--classes", "4", "--size", "256",
                                                "--variant", "local", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["parameters"] == {"G": 182_440_129, "D": 5_533_570}
    info = json.loads(out_local.stdout)
    assert info["parameters"] == {"G": 182_703_393, "D": 8_300_355}
    assert info["stages"] == ["local_only", "joint"]
    bad = runner.invoke(build_app(), ["info", "pix2pixhd", "--size", "100"])
    assert bad.exit_code == 2 and "divisible by 16" in bad.output


def test_size_constraints_and_stages():
    with pytest.raises(SynthesizerConfigError, match="divisible by 16"):
        Pix2PixHD(4, 72, options=SMALL)
    with pytest.raises(SynthesizerConfigError, match="divisible by 32"):
        Pix2PixHD(4, 48, options=SMALL, variant="local")
    assert Pix2PixHD(4, 48, options=SMALL).stage_names() == ["global"]
    local = Pix2PixHD(4, 64, options=SMALL, variant="local")
    assert local.stage_names() == ["local_only", "joint"]
    assert [s.fraction for s in local.stages] == pytest.approx([0.1, 0.9])
    assert Pix2PixHD(4, 64, options={**SMALL, "fix_global_fraction": 0.0}, variant="local").stage_names() == ["joint"]
    with pytest.raises(SynthesizerConfigError, match="unknown option"):
        Pix2PixHD(4, 64, options={"bogus": 1})


def test_discriminator_shapes_at_256_and_generator_output():
    synth = Pix2PixHD(4, 256, options={"ngf": 4, "ndf": 4, "n_blocks_global": 1})
    x = torch.zeros(1, 5, 256, 256)
    feats = synth.nets["D"](x)
    assert [tuple(f[-1].shape[-2:]) for f in feats] == [(35, 35), (19, 19)]
    assert [len(f) for f in feats] == [5, 5]
    local = LocalEnhancer(4, 1, ngf_global=8, n_blocks_global=1, n_blocks_local=1)
    onehot = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 64, 64)), 4).permute(0, 3, 1, 2).float()
    out = local(onehot)
    assert out.shape == (2, 1, 64, 64) and out.abs().max() <= 1


def _batch(n=2, size=64, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, classes, (n, size, size), generator=g)
    image = torch.rand(n, 1, size, size, generator=g) * 2 - 1
    return Batch(image, label, classes)


def _run_steps(synth, stage, steps=2):
    opts = {name: torch.optim.Adam(spec.params, lr=2e-4, betas=spec.betas) for name, spec in synth.optimizers(stage).items()}
    logs = []
    for step in range(steps):
        for update in synth.training_step(stage, _batch(seed=step)):
            assert torch.isfinite(update.loss)
            opts[update.optimizer].zero_grad(set_to_none=True)
            update.loss.backward()
            opts[update.optimizer].step()
            logs.append((update.optimizer, update.logs))
    return logs


def test_manual_two_step_training_loop():
    torch.manual_seed(0)
    synth = Pix2PixHD(4, 64, options=SMALL)
    assert synth.optimizers("global")["G"].betas == (0.5, 0.999)
    before = {k: v.clone() for k, v in synth.nets.state_dict().items()}
    logs = _run_steps(synth, "global")
    assert [o for o, _ in logs] == ["G", "D", "G", "D"]  # the official trainer's order
    assert set(logs[0][1]) == {"G_GAN", "G_GAN_Feat", "G_VGG"}
    assert set(logs[1][1]) == {"D_real", "D_fake"}
    after = synth.nets.state_dict()
    for net in ("G", "D"):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(net + "."))
    rec = synth.pretrained_weights()
    assert len(rec) == 1 and {"name", "source", "path", "sha256"} <= set(rec[0])
    fake = synth.generate(_batch().onehot)
    assert fake.shape == (2, 1, 64, 64) and fake.abs().max() <= 1
    assert Pix2PixHD(4, 64, options=SMALL, variant="no_vgg").pretrained_weights() == []


def test_local_only_stage_keeps_global_fixed():
    torch.manual_seed(0)
    synth = Pix2PixHD(4, 64, options={**SMALL, "no_vgg_loss": True}, variant="local")
    G = synth.nets["G"]
    g0 = {k: v.clone() for k, v in G.global_model.state_dict().items()}
    l0 = {k: v.clone() for k, v in G.local_down.state_dict().items()}
    logs = _run_steps(synth, "local_only", steps=1)
    assert "G_VGG" not in logs[0][1]
    assert all(torch.equal(g0[k], v) for k, v in G.global_model.state_dict().items())
    assert any(not torch.equal(l0[k], v) for k, v in G.local_down.state_dict().items())
    _run_steps(synth, "joint", steps=1)
    assert any(not torch.equal(g0[k], v) for k, v in G.global_model.state_dict().items())
    assert len(synth.nets["D"].scales) == 3


def test_engine_quick_run_learns(phantom_dir, tmp_path):
    pytest.importorskip("synthbench.engine")
    from synthbench.data.prepared import PreparedDataset
    from synthbench.engine import load_synthesizer, train
    from synthbench.synthesis import mean_l1_to_real

    data = PreparedDataset(phantom_dir)
    torch.manual_seed(0)
    untrained = Pix2PixHD(data.num_classes, data.size, options=SMALL)
    l1_untrained = mean_l1_to_real(untrained, data, "test", max_images=16)
    result = train("pix2pixhd", phantom_dir, tmp_path / "run", protocol="quick", seed=0, options=SMALL,
                   overrides={"max_steps": 15, "batch_size": 4, "checkpoint_every": 1000}, show_progress=False)
    assert result.status == "finished"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "sha256" in json.dumps(manifest.get("pretrained_weights", manifest))
    synth = load_synthesizer(result.run_dir)
    l1_trained = mean_l1_to_real(synth, data, "test", max_images=16)
    assert l1_trained < 0.8 * l1_untrained, (l1_trained, l1_untrained)
