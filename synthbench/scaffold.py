"""``synthbench new-plugin NAME``: write an installable synthesizer-plugin package (docs/plugins.md).

The package holds a ``pyproject.toml`` with the entry point in the ``synthbench`` group, a module
declaring ``SYNTHBENCH_API`` (:data:`synthbench.HOOK_API_VERSION`) and registering a small but
real conditional GAN (conv encoder-decoder G with skips, PatchGAN-lite D, L1 + least-squares GAN,
an L1-only warm-up stage), tests that run :mod:`synthbench.testing`, and a README. The directory
is built under a temporary name and renamed when complete (:func:`synthbench.io.atomic_directory`).
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from synthbench.errors import SynthbenchError
from synthbench.hookspecs import HOOK_API_VERSION
from synthbench.io import atomic_directory

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


def validate_name(name: str, check_registry: bool = True) -> str:
    """A plugin/synthesizer name: lowercase letter first, then letters, digits, '_' or '-' (max 40)."""
    if not NAME_RE.match(name or ""):
        raise SynthbenchError(
            f"invalid plugin name {name!r}: use a lowercase letter followed by lowercase letters, digits, "
            "'_' or '-' (at most 40 characters), e.g. 'mygan'"
        )
    module = module_name(name)
    if keyword.iskeyword(name.replace("-", "_")) or not module.isidentifier():
        raise SynthbenchError(f"invalid plugin name {name!r}: {name.replace('-', '_')!r} is a Python keyword")
    if check_registry:
        from synthbench.plugins import get_registry

        registry = get_registry()
        if name in registry.synthesizers or name in registry.conflicts["synthesizers"]:
            raise SynthbenchError(f"a synthesizer named {name!r} is already installed; choose another name")
    return name


def module_name(name: str) -> str:
    return "synthbench_" + name.replace("-", "_")


def class_name(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", name) if part) + "Synthesizer"


def render(name: str) -> dict[str, str]:
    """Relative path -> file content of the package for plugin ``name``."""
    mapping = {
        "name": name,
        "module": module_name(name),
        "cls": class_name(name),
        "dist": f"synthbench-{name}",
        "api": str(HOOK_API_VERSION),
    }
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        "${module}/__init__.py": INIT,
        "${module}/model.py": MODEL,
        "tests/test_conformance.py": TESTS,
    }
    return {Template(path).substitute(mapping): Template(text).substitute(mapping) for path, text in files.items()}


def create_plugin(name: str, out: str | Path | None = None, check_registry: bool = True) -> Path:
    """Write the package for ``name`` into ``out`` (default ``./synthbench-NAME``); return its path.

    Refuses an existing non-empty target; an existing empty directory is filled.
    """
    validate_name(name, check_registry=check_registry)
    target = Path(out) if out is not None else Path(f"synthbench-{name}")
    if target.exists():
        if not target.is_dir():
            raise SynthbenchError("exists and is not a directory; choose another --out", target)
        if any(target.iterdir()):
            raise SynthbenchError("directory exists and is not empty; choose another --out", target)
    with atomic_directory(target, overwrite=target.exists()) as tmp:
        for rel, text in render(name).items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return target


# --------------------------------------------------------------------------- templates
PYPROJECT = '''\
[build-system]
requires = ["setuptools>=70.1"]  # builds wheels without the separate 'wheel' package
build-backend = "setuptools.build_meta"

[project]
name = "${dist}"
version = "0.1.0"
description = "synthbench synthesizer plugin '${name}'"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["synthbench"]

[project.optional-dependencies]
test = ["pytest>=8"]

# synthbench finds plugins through this entry-point group; the key is the plugin's name
# (shown by `synthbench plugins`), the value the module holding the hook implementations.
# The module declares SYNTHBENCH_API = ${api}, the plugin API version it was written for.
[project.entry-points.synthbench]
${name} = "${module}"

[tool.setuptools.packages.find]
include = ["${module}*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
'''

README = '''\
# ${dist}

A synthesizer plugin for [synthbench](https://github.com/synthbench/synthbench): `${name}`, a
small conditional GAN (conv encoder-decoder generator with skips, PatchGAN-lite discriminator,
L1 + least-squares GAN loss, an L1-only warm-up stage). It works for any number of label classes
and any image size divisible by 4 (at least 16 px). Replace it with your method: see
`docs/plugins.md` in synthbench.

```bash
pip install -e .                      # registers the entry point (group "synthbench")
synthbench plugins                    # ${name} is listed with status ok
synthbench info ${name} --classes 4 --size 256
synthbench data prepare phantom --out data/phantom32 --size 32 --patients 7 \\
    --slices-per-patient 20 --train-factor 1 --test-factor 1 --keep-all-slices
synthbench train ${name} --data data/phantom32 --protocol smoke --out runs/${name}-smoke
synthbench compare --methods ${name},pix2pix --protocol smoke --data data/phantom32 \\
    --experiments "" --out comparison-${name}
python -m pip install pytest          # once, if the environment has no pytest
pytest                                # the synthbench conformance kit on ${cls}
```

Installing offline (`pip install --no-deps --no-build-isolation -e .`) needs setuptools >= 70.1
(or an older setuptools plus `wheel`) in the environment: see docs/plugins.md, Tutorial.

Files: `${module}/__init__.py` (API version + hook), `${module}/model.py` (the synthesizer),
`tests/test_conformance.py` (synthbench.testing).
'''

INIT = '''\
"""synthbench plugin '${name}': registers :class:`${module}.model.${cls}` through the
``synthbench`` entry point.

synthbench loads every plugin whenever it starts (``synthbench --help`` included). The class is
registered by its path, so ``model.py`` (and torch) is imported only when '${name}' is used.
"""

from synthbench import hookimpl

#: The synthbench plugin API version this plugin was written for (synthbench.HOOK_API_VERSION).
#: synthbench reports a plugin declaring another major version and does not load it.
SYNTHBENCH_API = ${api}


@hookimpl
def register_synthesizers(register):
    register("${module}.model:${cls}", name="${name}")


__all__ = ["SYNTHBENCH_API", "register_synthesizers"]
'''

MODEL = '''\
"""${cls}: a small conditional GAN from one-hot label maps to CT slices.

Layouts (synthbench.synthesizer): input one-hot ``float32 [B, C, H, W]``, output
``float32 [B, 1, H, W]`` in ``[-1, 1]``. G: conv encoder-decoder with ``n_down`` stride-2
levels and skip connections, tanh output. D: PatchGAN-lite on ``cat(onehot, image)`` (two
stride-2 convs, one stride-1 conv, a 1-channel patch map). Objective: least-squares GAN +
``lambda_l1`` x L1 (pix2pix-style), after an L1-only warm-up stage.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from synthbench import (
    Batch,
    OptimizerSpec,
    Stage,
    Synthesizer,
    SynthesizerConfigError,
    Update,
    set_requires_grad,
)


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True)


class Generator(nn.Module):
    """Encoder-decoder with skips: ``n_down`` x (conv s2) then ``n_down`` x (upsample + conv)."""

    def __init__(self, in_ch: int, ngf: int, n_down: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, ngf, 3, padding=1), _norm(ngf), nn.ReLU(True))
        chans = [ngf * 2**i for i in range(n_down + 1)]
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1), _norm(chans[i + 1]),
                          nn.LeakyReLU(0.2, True))
            for i in range(n_down)
        )
        self.up = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                          nn.Conv2d(chans[i + 1] + (chans[i + 1] if i + 1 < n_down else 0), chans[i], 3, padding=1),
                          _norm(chans[i]), nn.ReLU(True))
            for i in reversed(range(n_down))
        )
        self.head = nn.Sequential(nn.Conv2d(2 * ngf, 1, 3, padding=1), nn.Tanh())

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        x = self.stem(onehot)
        skips = [x]
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck itself
        for i, block in enumerate(self.up):
            if i > 0:
                x = torch.cat([x, skips.pop()], 1)
            x = block(x)
        return self.head(torch.cat([x, skips.pop()], 1))


class PatchDiscriminator(nn.Module):
    """PatchGAN-lite: two stride-2 4x4 convs, one 3x3 conv to a 1-channel patch map (no sigmoid)."""

    def __init__(self, in_ch: int, ndf: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, stride=2, padding=1), _norm(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _init(module: nn.Module, gain: float) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, gain)
            nn.init.zeros_(m.bias)
    return module


class ${cls}(Synthesizer):
    """Conv encoder-decoder G + PatchGAN-lite D, least-squares GAN + L1, after an L1 warm-up."""

    name = "${name}"
    summary = "small conv encoder-decoder G, PatchGAN-lite D, LSGAN + L1 (template plugin)"
    citation = "Your paper here."
    stages = (
        Stage("warmup", 0.2, "G alone with the L1 loss"),
        Stage("adversarial", 0.8, "G and D with least-squares GAN + L1"),
    )
    #: With the default n_down=2, sizes must be multiples of 4 and at least 16 px.
    min_size = 16
    size_multiple = 4
    variants = {"no_gan": {"lambda_gan": 0.0}}

    @classmethod
    def default_options(cls):
        return {"ngf": 32, "ndf": 32, "n_down": 2, "lambda_l1": 100.0, "lambda_gan": 1.0,
                "init_gain": 0.02, "betas": (0.5, 0.999)}

    def build_networks(self):
        o = self.options
        n_down = int(o["n_down"])
        factor = 2**n_down
        if n_down < 1 or self.image_size % factor or self.image_size < max(16, factor):
            raise SynthesizerConfigError(
                f"{self.name}: image size {self.image_size} must be a multiple of {factor} "
                f"(n_down={n_down}) and at least {max(16, factor)}"
            )
        G = Generator(self.num_classes, int(o["ngf"]), n_down)
        D = PatchDiscriminator(self.num_classes + 1, int(o["ndf"]))
        return {"G": _init(G, float(o["init_gain"])), "D": _init(D, float(o["init_gain"]))}

    def optimizers(self, stage):
        betas = tuple(self.options["betas"])
        specs = {"G": OptimizerSpec(tuple(self.nets["G"].parameters()), 1.0, betas)}
        if stage == "adversarial":
            specs["D"] = OptimizerSpec(tuple(self.nets["D"].parameters()), 1.0, betas)
        return specs

    def training_step(self, stage: str, batch: Batch) -> Iterator[Update]:
        """Warm-up: G on L1. Adversarial: D on (real, fake.detach()), then G on LSGAN + L1."""
        if stage not in self.stage_names():
            raise SynthesizerConfigError(f"{self.name}: unknown stage {stage!r} (stages: {self.stage_names()})")
        G, onehot, real = self.train_nets["G"], batch.onehot, batch.image
        fake = G(onehot)
        l1 = F.l1_loss(fake, real)
        if stage == "warmup":
            yield Update("G", self.options["lambda_l1"] * l1, {"l1": l1.detach()})
            return
        D = self.train_nets["D"]
        set_requires_grad(self.nets["D"], True)
        pred_real = D(torch.cat([onehot, real], 1))
        pred_fake = D(torch.cat([onehot, fake.detach()], 1))
        loss_d = 0.5 * (F.mse_loss(pred_real, torch.ones_like(pred_real))
                        + F.mse_loss(pred_fake, torch.zeros_like(pred_fake)))
        yield Update("D", loss_d, {"d_real": pred_real.detach().mean(), "d_fake": pred_fake.detach().mean()})
        set_requires_grad(self.nets["D"], False)
        pred = D(torch.cat([onehot, fake], 1))
        loss_gan = F.mse_loss(pred, torch.ones_like(pred))
        set_requires_grad(self.nets["D"], True)
        loss_g = self.options["lambda_gan"] * loss_gan + self.options["lambda_l1"] * l1
        yield Update("G", loss_g, {"l1": l1.detach(), "gan": loss_gan.detach()})
'''

TESTS = '''\
"""synthbench's conformance kit on ${cls}: one pytest item per check and case."""

import pytest

from synthbench.testing import CHECKS, conformance_cases

from ${module}.model import ${cls}

CASES = conformance_cases(${cls}, classes=(2, 3, 4), sizes=(32, 64))


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, case, tmp_path):
    check(${cls}, case, tmp_path)


def test_entry_point_registers_the_synthesizer():
    """Only after `pip install -e .`: synthbench finds the plugin through its entry point."""
    from synthbench import get_registry

    registry = get_registry()
    record = registry.records.get("${name}")
    if record is None:
        pytest.skip("plugin not installed (run: pip install -e .)")
    assert record.error is None, record.error
    assert registry.synthesizer("${name}") is ${cls}
'''
