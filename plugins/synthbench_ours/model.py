"""The paper's model ("ours"): global-local generator with DESUM, multi-resolution discriminator with DFM.

Jiang, Chen, Loew, Ko, "COVID-19 CT Image Synthesis with a Conditional Generative Adversarial
Network", IEEE JBHI 25(2), 2021 (paper.md, Sec. "Proposed model"). Objective (eq. 2):

    min_G max_{D1, D2}  sum_k L_cGAN(G, D_k) + lambda * L_DFM,    lambda = 10,

with the vanilla cGAN loss of eq. 3 (:mod:`.losses`), DESUM (eq. 1, :mod:`.desum`) and DFM
(eq. 4, :mod:`.dfm`). Networks (:mod:`.networks`): ``G1`` global generator at half resolution,
``G2`` local generator at full resolution, ``DESUM`` (weighting net + F_global adapter), ``D1``
full- and ``D2`` half-resolution PatchGANs, ``DFM`` (beta's network).

Training, three steps (paper: "G1 alone, G2 alone, then jointly"), as :class:`synthbench.Stage`:

* ``global``: G1 alone on the half-resolution label map, judged by D2 at half resolution.
* ``local``: G2 alone (no fusion: F_out = F_local), judged by D1.
* ``joint``: the chain G1 -> DESUM -> G2, judged by every discriminator (the final image
  downsampled to each one's resolution), with DFM.

A solo generator trains against the discriminator at its own resolution; where the variant has
none there (one discriminator, or G0 of three generators with two discriminators) it uses the
coarsest discriminator on its own output without resizing. In a solo stage eq. 4 has only one
discriminator, so feature matching is plain (weight 1, ``solo_feature_matching``); it is not
DFM, so the "w/o DFM" ablation (``feature_matching="none"``) keeps it and removes only the
joint stage's L_DFM. Default split of the protocol's epochs (``stage_fractions``): 0.25 / 0.25 /
0.5 (the paper gives none; joint training is the model). The engine's learning-rate schedule
runs over the three stages concatenated (the paper's 20 epochs: 2e-4 for the first half of the
whole run, then linearly to 0), not restarted per stage (protocol ``lr_scope``).

Generator chain (``generators``, Table V "one/three generators"): the coarsest level is a
global generator (G1's architecture); every finer level is a local generator (G2's) at twice
the resolution whose F_local is fused (DESUM) with the coarser level's output feature.
Two levels: G1 (1/2) -> G2 (1). Three: G0 (global, 1/4) -> G1 (local, 1/2) -> G2 (local, 1),
fused by ``DESUM1`` and ``DESUM``: G0 feeds G1 exactly the way G1 feeds G2. One level: the
single generator runs at full resolution; ``single_generator="global"`` (default) keeps G1's
architecture (the chain's coarsest level, as pix2pixHD's global generator ablation does), and
``"local"`` keeps G2 alone (the other reading). Discriminators (``discriminators``): D1 (1),
D2 (1/2), D3 (1/4).

Logs: ``alpha`` (mean DESUM weight of G2's fusion; ``alpha_G1`` for G1's in the three-generator
chain) and ``beta`` (mean DFM weight of D2's term; ``beta_D3`` with three discriminators; with
``dfm_per_layer`` also ``beta_l<i>`` per layer) plus ``beta_min`` / ``beta_max`` (the per-sample
range within the batch) in every joint-stage update where they exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from synthbench import Batch, OptimizerSpec, Stage, Synthesizer, SynthesizerConfigError, Update
from synthbench.departures import UNSTATED, Departure
from synthbench.synthesizer import set_requires_grad
from synthbench_ours.desum import DESUM, FUSIONS
from synthbench_ours.dfm import (
    DFMNetwork,
    LayerwiseDFM,
    feature_distance,
    layer_distances,
    weight_objective,
    weighted_matching,
)
from synthbench_ours.losses import discriminator_loss, generator_gan_loss
from synthbench_ours.networks import (
    NORMS,
    GlobalGenerator,
    LocalGenerator,
    PatchDiscriminator,
    downsample,
    init_weights,
)

STAGES = ("global", "local", "joint")
FEATURE_MATCHING = ("dynamic", "fixed", "plain", "none")


@dataclass(frozen=True)
class Level:
    """One generator of the coarse-to-fine chain: its net name, architecture and resolution (1/2**scale)."""

    name: str
    kind: str  # "global" or "local"
    scale: int


class Ours(Synthesizer):
    """The paper's model; see the module docstring. Table V ablations are :attr:`variants`."""

    name = "ours"
    min_size = 32
    size_multiple = 16  # G1 runs at half size with three stride-2 convs
    #: CPU-sized protocols (quick, smoke) train this narrower build; the paper protocol never does.
    reduced_options = {"ngf": 16, "ndf": 16, "n_blocks": 3}
    summary = "Global-local generator (G1+G2) with DESUM, multi-resolution discriminator (D1+D2) with DFM"
    citation = (
        "Jiang Y, Chen H, Loew M, Ko H. COVID-19 CT Image Synthesis with a Conditional Generative "
        "Adversarial Network. IEEE J Biomed Health Inform 25(2), 2021. arXiv:2007.14638"
    )
    stages = (
        Stage("global", 0.25, "G1 alone at half resolution, with D2"),
        Stage("local", 0.25, "G2 alone at full resolution, with D1"),
        Stage("joint", 0.5, "G1 + DESUM + G2 with D1 + D2 and DFM"),
    )
    #: Every row of the paper's Table V (ablations).
    variants = {
        "no_desum": {"fusion": "sum"},
        "desum_from_global": {"desum_input": "global"},
        "fixed_alpha": {"fusion": "fixed", "fixed_alpha": 0.5},
        "no_dfm": {"feature_matching": "none"},
        "dfm_from_d2": {"dfm_source": "D2"},
        "fixed_beta": {"feature_matching": "fixed", "fixed_beta": 0.5},
        "one_discriminator": {"discriminators": 1},
        "three_discriminators": {"discriminators": 3},
        "one_generator": {"generators": 1},
        "three_generators": {"generators": 3},
    }

    #: The paper's value of every option (UNSTATED: the paper leaves it open; a choice listed in
    #: :meth:`departures`). Variants (Table V) change options on purpose and are not departures.
    paper_options = {
        "lambda_dfm": 10.0, "ngf": 64, "ndf": 64, "n_blocks": 9, "g1_downsampling": 3,
        "g2_output_kernel": UNSTATED, "norm": UNSTATED, "d_concat": UNSTATED, "generators": 2,
        "single_generator": UNSTATED, "discriminators": 2, "fusion": "desum", "fixed_alpha": 0.5,
        "desum_input": "local", "desum_channels": UNSTATED, "global_feature": UNSTATED,
        "global_upsample": UNSTATED, "feature_matching": "dynamic", "fixed_beta": 0.5, "fm_layers": [1, 2, 3],
        "dfm_source": "D1", "dfm_layer": UNSTATED, "dfm_input": UNSTATED, "dfm_channels": UNSTATED,
        "beta_objective": UNSTATED, "beta_entropy": UNSTATED, "dfm_per_layer": UNSTATED,
        "solo_feature_matching": UNSTATED, "stage_fractions": UNSTATED,
    }

    def __init__(self, num_classes: int, image_size: int, options=None, variant=None):
        super().__init__(num_classes, image_size, options=options, variant=variant)
        self.stages = self._make_stages()

    # ------------------------------------------------------------------ options
    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {
            # eq. 2: min_G max_D sum_k L_cGAN(G, D_k) + lambda * L_DFM, lambda = 10
            "lambda_dfm": 10.0,
            # architecture (Figs. 3-5)
            "ngf": 64,
            "ndf": 64,
            "n_blocks": 9,
            "g1_downsampling": 3,
            "g2_output_kernel": 7,
            "norm": "instance",
            "d_concat": "label",
            "generators": 2,
            "single_generator": "global",
            "discriminators": 2,
            # DESUM (eq. 1)
            "fusion": "desum",
            "fixed_alpha": 0.5,
            "desum_input": "local",
            "desum_channels": 64,
            "global_feature": "last",
            "global_upsample": "bilinear",
            # DFM (eq. 4)
            "feature_matching": "dynamic",
            "fixed_beta": 0.5,
            "fm_layers": [1, 2, 3],
            "dfm_source": "D1",
            "dfm_layer": 2,
            "dfm_input": "fake",
            "dfm_channels": 64,
            "beta_objective": "adversarial",
            "beta_entropy": 0.5,
            "dfm_per_layer": False,
            # plain feature matching (weight 1) in the solo stages, where eq. 4 has one discriminator
            "solo_feature_matching": True,
            # three training steps
            "stage_fractions": {"global": 0.25, "local": 0.25, "joint": 0.5},
        }

    def _validate_options(self) -> None:
        o = self.options

        def err(msg: str) -> SynthesizerConfigError:
            return SynthesizerConfigError(f"ours: {msg}")

        def choice(key: str, allowed) -> None:
            if o[key] not in allowed:
                raise err(f"option {key}={o[key]!r} not one of {', '.join(map(str, allowed))}")

        try:
            for key in ("ngf", "ndf", "n_blocks", "g1_downsampling", "g2_output_kernel", "generators",
                        "discriminators", "desum_channels", "dfm_channels", "dfm_layer"):
                o[key] = int(o[key])
            for key in ("lambda_dfm", "fixed_alpha", "fixed_beta", "beta_entropy"):
                o[key] = float(o[key])
            o["fm_layers"] = [int(i) for i in o["fm_layers"]]
            for key in ("dfm_per_layer", "solo_feature_matching"):
                if not isinstance(o[key], bool):
                    raise TypeError(f"{key} must be true or false, got {o[key]!r}")
            o["stage_fractions"] = {str(k): float(v) for k, v in dict(o["stage_fractions"]).items()}
        except (TypeError, ValueError) as exc:
            raise err(f"invalid option value: {exc}") from exc
        choice("norm", NORMS)
        choice("d_concat", ("label", "none"))
        choice("generators", (1, 2, 3))
        choice("single_generator", ("global", "local"))
        choice("discriminators", (1, 2, 3))
        choice("fusion", FUSIONS)
        choice("desum_input", ("local", "global"))
        choice("global_feature", ("last", "penultimate"))
        choice("global_upsample", ("bilinear", "nearest"))
        choice("feature_matching", FEATURE_MATCHING)
        choice("dfm_input", ("fake", "real", "difference"))
        choice("beta_objective", ("adversarial", "generator"))
        if o["dfm_source"] not in [f"D{k}" for k in range(1, o["discriminators"] + 1)]:
            raise err(f"option dfm_source={o['dfm_source']!r}: no such discriminator (have {o['discriminators']})")
        if o["ngf"] < 2 or o["ndf"] < 1 or o["n_blocks"] < 0 or o["g1_downsampling"] < 1:
            raise err("ngf >= 2, ndf >= 1, n_blocks >= 0 and g1_downsampling >= 1 are required")
        if o["g2_output_kernel"] not in (1, 3, 5, 7):
            raise err(f"option g2_output_kernel={o['g2_output_kernel']} not one of 1, 3, 5, 7")
        if not o["fm_layers"] or any(i < 1 or i > 4 for i in o["fm_layers"]):
            raise err(f"option fm_layers={o['fm_layers']}: layers are numbered 1..4")
        if not 1 <= o["dfm_layer"] <= 4:
            raise err(f"option dfm_layer={o['dfm_layer']}: layers are numbered 1..4")
        for key in ("fixed_alpha", "fixed_beta"):
            if not 0.0 < o[key] < 1.0:
                raise err(f"option {key}={o[key]} must lie in (0, 1)")
        if o["lambda_dfm"] < 0 or o["beta_entropy"] < 0:
            raise err("lambda_dfm and beta_entropy must be >= 0")
        fr = o["stage_fractions"]
        if o["generators"] > 1:
            if set(fr) != set(STAGES) or any(v <= 0 for v in fr.values()) or abs(sum(fr.values()) - 1) > 1e-6:
                raise err(f"option stage_fractions={fr} must give positive fractions of global, local, joint summing to 1")

    # ------------------------------------------------------------------ structure
    @property
    def levels(self) -> list[Level]:
        """The generator chain, coarsest first (see the module docstring)."""
        n = self.options["generators"]
        if n == 1:
            return [Level("G1", "global", 0)] if self.options["single_generator"] == "global" else [Level("G2", "local", 0)]
        if n == 2:
            return [Level("G1", "global", 1), Level("G2", "local", 0)]
        return [Level("G0", "global", 2), Level("G1", "local", 1), Level("G2", "local", 0)]

    @property
    def discriminator_names(self) -> list[str]:
        return [f"D{k}" for k in range(1, self.options["discriminators"] + 1)]

    @staticmethod
    def fusion_name(level: Level) -> str:
        """DESUM net feeding ``level``: 'DESUM' into G2, 'DESUM1' into G1 (three generators)."""
        return "DESUM" if level.name == "G2" else f"DESUM{level.name[1:]}"

    @property
    def uses_dfm_net(self) -> bool:
        return self.options["feature_matching"] == "dynamic" and self.options["discriminators"] >= 2

    def _check_size(self) -> None:
        o, size = self.options, self.image_size
        coarsest = self.levels[0]
        down = o["g1_downsampling"] if coarsest.kind == "global" else 0
        divisor = 2 ** (coarsest.scale + down)
        minimum = divisor * 2 if down else max(8, divisor * 8)
        minimum = max(minimum, 8 * 2 ** (o["discriminators"] - 1))
        if size % divisor or size < minimum:
            raise SynthesizerConfigError(
                f"ours: image size {size} is impossible for this configuration: it must be divisible by "
                f"{divisor} ({coarsest.name} runs at 1/{2 ** coarsest.scale} resolution and halves it "
                f"{down} times) and at least {minimum}"
            )

    def _make_stages(self) -> tuple[Stage, ...]:
        if self.options["generators"] == 1:
            return (Stage("joint", 1.0, f"{self.levels[0].name} alone with {', '.join(self.discriminator_names)}"),)
        fr = self.options["stage_fractions"]
        base = {s.name: s for s in type(self).stages}
        if self.options["generators"] == 3:
            desc = {"global": "G0 alone at quarter resolution", "local": "G1 and G2 alone (no fusion)", "joint": "G0 -> G1 -> G2 chain with DESUM"}
        else:
            desc = {n: base[n].description for n in STAGES}
        return tuple(Stage(n, fr[n], desc[n]) for n in STAGES)

    def build_networks(self) -> dict[str, nn.Module]:
        self._validate_options()
        self._check_size()
        o, c = self.options, self.num_classes
        nets: dict[str, nn.Module] = {}
        previous = None
        for level in self.levels:
            if level.kind == "global":
                nets[level.name] = GlobalGenerator(c, 1, o["ngf"], o["g1_downsampling"], o["n_blocks"], o["norm"])
            else:
                nets[level.name] = LocalGenerator(c, 1, o["ngf"], o["n_blocks"], o["norm"], o["g2_output_kernel"])
            if previous is not None:
                nets[self.fusion_name(level)] = DESUM(
                    nets[previous.name].feature_channels[o["global_feature"]],
                    nets[level.name].local_channels,
                    mode=o["fusion"],
                    source=o["desum_input"],
                    hidden=o["desum_channels"],
                    fixed_alpha=o["fixed_alpha"],
                    upsample=o["global_upsample"],
                )
            previous = level
        for name in self.discriminator_names:
            nets[name] = PatchDiscriminator(c, 1, o["ndf"], 3, o["norm"], o["d_concat"])
        if self.uses_dfm_net:
            channels = nets[o["dfm_source"]].feature_channels
            if o["dfm_per_layer"]:
                nets["DFM"] = LayerwiseDFM([channels[i - 1] for i in o["fm_layers"]], o["discriminators"], o["dfm_channels"])
            else:
                nets["DFM"] = DFMNetwork(channels[o["dfm_layer"] - 1], o["discriminators"], o["dfm_channels"])
        for name, net in nets.items():
            # pix2pixHD's N(0, 0.02) for the generators and discriminators. The weighting networks
            # (DESUM, DFM; not in pix2pixHD) keep PyTorch's default init: with N(0, 0.02) their
            # outputs start at sigmoid(~1e-6) = 0.5 for every input, i.e. not yet dynamic at all.
            on_meta = any(p.is_meta for p in net.parameters())  # counting only (describe)
            if not name.startswith(("DESUM", "DFM")) and not on_meta:
                init_weights(net)
        return nets

    def generator_for(self, stage: str | None = None) -> str:
        """The final image's generator (G2; G1 in the one-generator variant); the coarsest in 'global'."""
        if stage == "global":
            return self.levels[0].name
        return self.levels[-1].name

    # ------------------------------------------------------------------ forward passes
    def _labels(self, onehot: torch.Tensor, scale: int, cache: dict[int, torch.Tensor]) -> torch.Tensor:
        if scale not in cache:
            cache[scale] = onehot if scale == 0 else downsample(self._labels(onehot, scale - 1, cache), 1)
        return cache[scale]

    def _run_chain(self, onehot: torch.Tensor, nets, labels: dict[int, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The full generator chain G_coarse -> DESUM -> ... -> G2 (eq. 1); returns image and alphas [B]."""
        alphas: dict[str, torch.Tensor] = {}
        features = None
        image = None
        key = self.options["global_feature"]
        for level in self.levels:
            m = self._labels(onehot, level.scale, labels)
            if level.kind == "global":
                image, features = nets[level.name](m, features=True)
                continue
            fuse = None
            if features is not None:
                fusion, f_global, log_key = nets[self.fusion_name(level)], features[key], "alpha" if level.name == "G2" else f"alpha_{level.name}"

                def fuse(f_local, fusion=fusion, f_global=f_global, log_key=log_key):
                    out, alpha = fusion(f_local, f_global)
                    if alpha is not None:
                        alphas[log_key] = alpha
                    return out

            image, features = nets[level.name](m, fuse=fuse, features=True)
        return image, alphas

    @torch.no_grad()
    def generate(self, onehot: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """The trained model's image: the whole chain with DESUM, in eval mode."""
        self.check_input(onehot)
        was = {n: net.training for n, net in self.nets.items()}
        self.nets.eval()
        try:
            image, _ = self._run_chain(onehot, self.nets, {})
            return image
        finally:
            for n, net in self.nets.items():
                net.train(was[n])

    def _plan(self, stage: str) -> tuple[list[Level], list[str]]:
        """Generators trained in ``stage`` (solo levels, or the chain's last for 'joint') and their discriminators."""
        if stage not in self.stage_names():
            raise SynthesizerConfigError(f"ours: unknown stage {stage!r} (this configuration has {', '.join(self.stage_names())})")
        levels = self.levels
        if stage == "joint":
            return levels, list(self.discriminator_names)
        solo = [levels[0]] if stage == "global" else levels[1:]
        return solo, [self._solo_discriminator(lv) for lv in solo]

    def _solo_discriminator(self, level: Level) -> str:
        return f"D{min(level.scale + 1, self.options['discriminators'])}"

    # ------------------------------------------------------------------ training
    def optimizers(self, stage: str) -> dict[str, OptimizerSpec]:
        """Adam, beta1 0.5, beta2 0.999 (paper's training settings) for G, D and beta's network.

        In the joint stage a coarser generator contributes only its feature (F_global), so its image
        head (trained in its solo stage) is not named: it receives no gradient there."""
        levels, discs = self._plan(stage)
        betas = (0.5, 0.999)
        g_nets = [lv.name for lv in levels]
        if stage == "joint":
            g_nets += [self.fusion_name(lv) for lv in levels[1:]]
        specs = {}
        dfm_with_g = stage == "joint" and self.uses_dfm_net and self.options["beta_objective"] == "generator"
        if dfm_with_g:
            g_nets.append("DFM")
        unused = {id(p) for lv in levels[:-1] for p in self.nets[lv.name].to_image.parameters()} if stage == "joint" else set()
        g_params = tuple(p for n in g_nets for p in self.nets[n].parameters() if id(p) not in unused)
        specs["G"] = OptimizerSpec(g_params, 1.0, betas)
        specs["D"] = OptimizerSpec(tuple(p for n in dict.fromkeys(discs) for p in self.nets[n].parameters()), 1.0, betas)
        if stage == "joint" and self.uses_dfm_net and not dfm_with_g:
            specs["DFM"] = OptimizerSpec(tuple(self.nets["DFM"].parameters()), 1.0, betas)
        return specs

    def _fm_weights(self, feats: dict[str, tuple], dist: torch.Tensor) -> torch.Tensor | None:
        """Weights of the discriminators' matching terms, shaped like ``dist`` ([B, K] or [B, L, K])."""
        o, k = self.options, self.options["discriminators"]
        mode = o["feature_matching"]
        if mode == "none":
            return None
        if mode == "plain" or k == 1:
            return torch.ones_like(dist)
        if mode == "fixed":
            row = [1 - o["fixed_beta"], o["fixed_beta"]] if k == 2 else [1.0 / k] * k
            return torch.tensor(row, device=dist.device, dtype=dist.dtype).expand_as(dist)
        return self.train_nets["DFM"](self._dfm_input(feats))

    def _dfm_input(self, feats: dict[str, tuple]) -> torch.Tensor | list[torch.Tensor]:
        """D_src^i for beta's network: of the synthetic sample, the real one, or their difference;
        detached. Per layer (``dfm_per_layer``): one such feature for every matched layer."""
        o = self.options
        real, fake = feats[o["dfm_source"]]

        def pick(i: int) -> torch.Tensor:
            if o["dfm_input"] == "fake":
                return fake[i].detach()
            if o["dfm_input"] == "real":
                return real[i].detach()
            return (real[i] - fake[i]).abs().detach()

        if o["dfm_per_layer"]:
            return [pick(i - 1) for i in o["fm_layers"]]
        return pick(o["dfm_layer"] - 1)

    def _distances(self, real_f: list[torch.Tensor], fake_f: list[torch.Tensor]) -> torch.Tensor:
        """Eq. 4's per-element L1 feature distances of one discriminator: [B] summed over the
        layers, or [B, L] per layer with ``dfm_per_layer``."""
        layers = tuple(self.options["fm_layers"])
        if self.options["dfm_per_layer"]:
            return layer_distances(real_f, fake_f, layers)
        return feature_distance(real_f, fake_f, layers)

    def _weight_logs(self, weights: torch.Tensor, logs: dict[str, Any]) -> None:
        """beta (mean), its per-sample range in the batch, and beta per layer with ``dfm_per_layer``."""
        if weights.shape[-1] >= 2:
            beta = weights[..., 1].detach()
            per_sample = beta.mean(dim=1) if beta.dim() == 2 else beta
            logs["beta"] = per_sample.mean()
            logs["beta_min"], logs["beta_max"] = per_sample.min(), per_sample.max()
            if beta.dim() == 2:
                for j, layer in enumerate(self.options["fm_layers"]):
                    logs[f"beta_l{layer}"] = beta[:, j].mean()
        if weights.shape[-1] >= 3:
            logs["beta_D3"] = weights[..., 2].mean().detach()

    def training_step(self, stage: str, batch: Batch) -> Iterator[Update]:
        """One iteration: D update (eq. 3), then beta's network (adversarial DFM), then G (eq. 2)."""
        o = self.options
        levels, discs = self._plan(stage)
        nets = self.train_nets
        onehot, real = batch.onehot.to(batch.image.device), batch.image
        labels: dict[int, torch.Tensor] = {}
        reals: dict[int, torch.Tensor] = {0: real}

        def real_at(scale: int) -> torch.Tensor:
            if scale not in reals:
                reals[scale] = downsample(real_at(scale - 1), 1)
            return reals[scale]

        # Generator forward: (discriminator, label map, real image, synthetic image) to compare.
        pairs: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        alphas: dict[str, torch.Tensor] = {}
        if stage == "joint":
            fake, alphas = self._run_chain(onehot, nets, labels)
            for name in discs:
                s = int(name[1:]) - 1
                pairs.append((name, self._labels(onehot, s, labels), real_at(s), downsample(fake, s)))
        else:
            for level, name in zip(levels, discs, strict=True):
                m = self._labels(onehot, level.scale, labels)
                fake = nets[level.name](m)
                pairs.append((name, m, real_at(level.scale), fake))

        # 1) discriminators: maximise eq. 3 (summed over discriminators)
        d_nets = [self.nets[n] for n in dict.fromkeys(discs)]
        set_requires_grad(d_nets, True)
        d_loss = 0.0
        d_logs: dict[str, Any] = {}
        d_feats: dict[str, tuple] = {}
        for name, m, x, y in pairs:
            real_logits, real_f = nets[name](m, x)
            fake_logits, fake_f = nets[name](m, y.detach())
            lr, lf = discriminator_loss(real_logits, fake_logits)
            d_loss = d_loss + 0.5 * (lr + lf)
            d_logs[f"{name}_real"], d_logs[f"{name}_fake"] = lr.detach(), lf.detach()
            d_feats[name] = ([f.detach() for f in real_f], [f.detach() for f in fake_f])
        yield Update("D", d_loss, d_logs)

        joint_dfm = stage == "joint" and self.uses_dfm_net
        # 2) beta's network (adversarial reading of eq. 4, see dfm.py), on detached features
        if joint_dfm and o["beta_objective"] == "adversarial":
            dist = torch.stack([self._distances(*d_feats[n]) for n in discs], dim=-1)
            weights = nets["DFM"](self._dfm_input(d_feats))
            logs: dict[str, Any] = {}
            self._weight_logs(weights, logs)
            yield Update("DFM", weight_objective(dist, weights, o["beta_entropy"], maximise=True), logs)

        # 3) generator: eq. 2 = sum_k cGAN + lambda * L_DFM (solo stages: plain feature matching)
        set_requires_grad(d_nets, False)
        matching = o["feature_matching"] != "none" if stage == "joint" else o["solo_feature_matching"]
        g_gan = 0.0
        distances, g_feats = [], {}
        g_logs: dict[str, Any] = {}
        for name, m, x, y in pairs:
            fake_logits, fake_f = nets[name](m, y)
            term = generator_gan_loss(fake_logits)
            g_gan = g_gan + term
            g_logs[f"G_{name}"] = term.detach()
            if matching:
                with torch.no_grad():
                    _, real_f = nets[name](m, x)
                distances.append(self._distances(real_f, fake_f))
                g_feats[name] = (real_f, fake_f)
        loss = g_gan
        if distances:
            dist = torch.stack(distances, dim=-1)
            if stage == "joint":
                if joint_dfm and o["beta_objective"] == "generator":
                    weights = nets["DFM"](self._dfm_input(g_feats))
                    loss = loss + o["lambda_dfm"] * weight_objective(dist, weights, o["beta_entropy"], maximise=False)
                    weights = weights.detach()
                else:
                    with torch.no_grad():
                        weights = self._fm_weights(g_feats, dist)
                self._weight_logs(weights, g_logs)
            else:
                weights = torch.ones_like(dist)
            dfm = weighted_matching(dist, weights.to(dist.dtype))
            loss = loss + o["lambda_dfm"] * dfm
            g_logs["G_dfm" if stage == "joint" else "G_fm"] = dfm.detach()
        g_logs["G_gan"] = g_gan.detach()
        for key, alpha in alphas.items():
            g_logs[key] = alpha.mean().detach()
        try:
            yield Update("G", loss, g_logs)
        finally:  # D trainable again for the next D step
            set_requires_grad(d_nets, True)

    # ------------------------------------------------------------------ reporting
    @classmethod
    def departures(cls, options) -> list[Departure]:
        """The choices made where the paper is silent (no code was published), and their reasons."""
        o = options
        return [
            Departure("G1's upsampling path (Fig. 3)", "three upsampling convs to 256, 128, 64 channels, then a 7x7 "
                      "conv to the image at half resolution; the kind of upsampling is not named",
                      "3x3 stride-2 transposed convs (pix2pixHD's global generator), the last one 128 -> 64 at G1's "
                      "output resolution, then reflection pad + 7x7 conv + tanh",
                      "pix2pixHD's global generator, which G1 extends; matches every channel and size the paper gives"),
            Departure("G2's image head", "\"7x7 conv 64 -> image\"; the layer that makes the image is not named",
                      f"a {o['g2_output_kernel']}x{o['g2_output_kernel']} conv + tanh after the 7x7 conv 64",
                      "with a 1x1 projection G2 alone did not learn on the phantom (L1 0.88 -> 0.88 in 30 steps; "
                      "7x7: 0.78 -> 0.18)", "g2_output_kernel"),
            Departure("normalisation", "not named", f"{o['norm']} norm (InstanceNorm without affine, as pix2pixHD)",
                      "the global-local design is pix2pixHD's; identical on one GPU and on CPU", "norm"),
            Departure("discriminator \"Concat\" (Fig. 5)", "a Concat between the 128 and 256 layers, inputs not named",
                      "label map re-injected (area-resized) before the 256 layer" if o["d_concat"] == "label"
                      else "none (plain PatchGAN)",
                      "D_k(m, x) sees only m and x in eqs. 3-4; joining the other discriminator would couple D1 and D2",
                      "d_concat"),
            Departure("F_global for DESUM", "\"an output feature map of G1's upsampling path\"",
                      f"G1's {o['global_feature']} upsampling feature, 1x1 conv to F_local's channels, "
                      f"{o['global_upsample']} resize to G2's resolution (inside the DESUM net)",
                      "pix2pixHD fuses the global generator's last features", "global_feature, global_upsample"),
            Departure("DESUM weighting net width", "3 conv + 2 FC layers, widths not stated",
                      f"{o['desum_channels']} channels, FC {o['desum_channels']} -> {o['desum_channels'] // 2} -> 1",
                      "a small net; the paper gives no widths", "desum_channels"),
            Departure("DFM: beta's input", "\"an intermediate feature D1^i of D1\"",
                      (f"D1 layers {o['fm_layers']}, one beta per layer" if o["dfm_per_layer"]
                       else f"{o['dfm_source']} layer {o['dfm_layer']} (128 channels)")
                      + f", feature of the {o['dfm_input']} sample, detached",
                      "beta must not train D, and G must not move beta through its features",
                      "dfm_layer, dfm_input, dfm_per_layer"),
            Departure("DFM: one beta or one per layer", "eq. 4 has one beta inside the sum over layers i; its CNN "
                      "reads \"D1^i\"", "one beta per sample (per layer with dfm_per_layer)",
                      "both readings are possible; the per-layer one lets coarse and fine features weigh the two "
                      "resolutions differently", "dfm_per_layer"),
            Departure("DFM: how beta's CNN trains", "not stated",
                      f"{o['beta_objective']}: its own step after D's, maximising the beta-weighted normalised "
                      f"distances plus entropy x {o['beta_entropy']} (G then minimises eq. 4 with beta fixed)",
                      "trained through G's objective beta collapses onto the smaller distance (the trivial "
                      "solution); beta_objective='generator' is that literal reading", "beta_objective, beta_entropy"),
            Departure("DFM net width", "not stated", f"2 convs of {o['dfm_channels']} channels + FC",
                      "a small net; the paper gives no widths", "dfm_channels"),
            Departure("solo stages' feature matching", "eq. 4 needs two discriminators; solo steps not described",
                      "plain feature matching (weight 1, lambda 10) against the one discriminator"
                      if o["solo_feature_matching"] else "none",
                      "what eq. 4 reduces to with one discriminator; it is not DFM, so the w/o DFM ablation keeps it",
                      "solo_feature_matching"),
            Departure("stage lengths", "three steps (G1 alone, G2 alone, joint), lengths not stated",
                      ", ".join(f"{k} {v:g}" for k, v in o["stage_fractions"].items()) + " of the epochs, one "
                      "learning-rate schedule over the three (2e-4 for the first half of the run, then to 0)",
                      "joint training is the model; the paper's schedule is stated for the whole 20 epochs",
                      "stage_fractions, protocol lr_scope"),
            Departure("one-generator ablation", "Table V \"one generator\": which one not stated",
                      f"{o['single_generator']}: G1's architecture at full resolution" if o["single_generator"] == "global"
                      else "G2 alone at full resolution", "pix2pixHD's global-generator ablation",
                      "single_generator"),
        ]

    def describe(self) -> dict[str, Any]:
        """Choices made where the paper is vague, and the parameter counts of every Table V variant."""
        o = self.options
        notes: dict[str, Any] = {
            "objective (eq. 2)": f"sum_k L_cGAN(G, D_k) + lambda * L_DFM with lambda = lambda_dfm = {o['lambda_dfm']:g} "
            "(the paper's lambda = 10); vanilla cGAN loss (eq. 3)",
            "generator chain": " -> ".join(f"{lv.name} ({lv.kind}, 1/{2 ** lv.scale})" for lv in self.levels),
            "F_global": (
                f"G1's {o['global_feature']} upsampling feature, "
                + ("1x1 conv to F_local's channels, " if o["global_feature"] == "last" else "")
                + f"{o['global_upsample']} resize to F_local's size (inside the DESUM net)"
            ),
            "DESUM": f"fusion={o['fusion']}, alpha from {'F_local' if o['desum_input'] == 'local' else 'F_global'}, trained with G",
            "discriminator Concat": "label map re-injected before the 256 layer" if o["d_concat"] == "label" else "none",
            "DFM": (
                f"{o['feature_matching']}; layers {o['fm_layers']} of each D paired by index; beta from "
                + (f"{o['dfm_source']} layers {o['fm_layers']}, one per layer" if o["dfm_per_layer"]
                   else f"{o['dfm_source']} layer {o['dfm_layer']}")
                + f" ({o['dfm_input']}); beta trained {o['beta_objective']}ly with entropy {o['beta_entropy']}; "
                + ("plain feature matching in the solo stages" if o["solo_feature_matching"] else "none in the solo stages")
            ),
            "stages": ", ".join(f"{s.name} {s.fraction:g}" for s in self.stages),
        }
        for variant in [None, *self.variants]:
            key = f"parameters, variant {variant or 'default'}"
            try:
                counts = self.variant_parameter_counts(self.num_classes, self.image_size, variant)
            except SynthesizerConfigError as exc:
                notes[key] = f"not buildable here: {exc}"
                continue
            text = ", ".join(f"{k} {v:,}" for k, v in counts.items())
            notes[key] = f"{text}; total {sum(counts.values()):,}"
        return notes

    @classmethod
    def variant_parameter_counts(cls, num_classes: int, image_size: int, variant: str | None) -> dict[str, int]:
        """Exact per-network counts of a variant, built on the meta device (no memory, no init cost)."""
        with torch.device("meta"):
            return cls(num_classes, image_size, variant=variant).parameter_counts()
