"""DFM, dynamic feature matching (paper eq. 4).

    L_DFM = E sum_{i in layers} [ beta / N_i * ||D2^i(m, x) - D2^i(m, G(m))||_1
                                  + (1 - beta) / N_i * ||D1^i(m, x) - D1^i(m, G(m))||_1 ]

beta in (0, 1) per sample, predicted by a small CNN (:class:`DFMNetwork`) from an intermediate
feature of D1 (Table V "weight from D2^i": of D2). N_i is the number of elements of layer i of
one sample, so each term is a per-element mean.

Choices where the paper is vague (options of the ``ours`` synthesizer):

* Layers (``fm_layers``, default 1, 2, 3): the outputs of D's three stride-2 convs (64, 128,
  256 channels). Layer i of D1 is paired with layer i of D2 (same architecture; D2's map is at
  half resolution, and each term is normalised by its own N_i, so the sizes need not match).
* beta's input (``dfm_layer`` 2 = D1's 128-channel feature, ``dfm_input`` "fake"): the feature
  of the synthetic sample D1^i(m, G(m)), detached (beta must not train D, and G must not move
  beta through its features).
* How beta's network is trained (``beta_objective``). Trained with the generator objective, beta
  would simply move all weight to the smaller of the two distances (the term G already
  satisfies): the trivial solution. Default ``"adversarial"``: the DFM network is updated in
  its own step after the discriminators' step, *maximising* the beta-weighted distance of the
  detached, sum-normalised distances plus an entropy bonus,

      max_w  sum_k w_k * d_k / sum_j d_j  +  tau * H(w),     optimum  w = softmax(d / (tau * sum d)),

  so beta puts more weight on the resolution at which the current synthetic sample is further
  from the real one (a smooth min-max, like the GAN itself), never collapses to 0 or 1
  (``beta_entropy`` tau, default 0.5, gives weights within about 0.12..0.88 for two terms), and
  G then minimises eq. 4 with beta as a fixed weight. ``"generator"`` is the literal reading
  (beta in G's objective, same entropy regulariser, which then softly favours the smaller term).

* One beta for every layer (default) or one per layer (``dfm_per_layer``). Eq. 4 writes one beta
  inside the sum over layers i and says the CNN reads "an intermediate feature D1^i"; the
  per-layer reading gives each layer i its own beta_i, predicted from D1^i by its own CNN
  (:class:`LayerwiseDFM`), so the full- vs half-resolution balance can differ between coarse
  and fine features.

What beta does (measured on the quick suite's phantom run, 150 steps, 83 of them joint, 2 CPU
cores): with one beta it moves from 0.47 to 0.32 over the joint stage (batch means), i.e. it
shifts weight to D1's full-resolution term, which ``fixed_beta`` (0.5) cannot; within a batch
the samples' betas differ by only 0.005 on average (at most 0.014). Per layer
(``dfm_per_layer``) the three betas drift differently: layer 1 0.38-0.49, layer 2 0.33-0.50,
layer 3 0.28-0.48. Every run logs ``beta``, ``beta_min`` / ``beta_max`` (and ``beta_l<i>``).

With more than two discriminators (Table V "three discriminators") the network predicts a softmax
over all of them; with two it is eq. 4's sigmoid beta and weights (1 - beta, beta) for (D1, D2).
Shapes: distances and weights are ``[B, K]`` (one beta) or ``[B, L, K]`` (per layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DFMNetwork(nn.Module):
    """Predicts per-sample weights of the discriminators' feature-matching terms.

    2 x (3x3 stride-2 conv + LeakyReLU 0.2) -> global average pool -> FC. Two discriminators:
    one logit -> beta = sigmoid, weights (1 - beta, beta). K > 2: K logits -> softmax.
    """

    def __init__(self, in_channels: int, num_terms: int = 2, hidden: int = 64):
        super().__init__()
        if num_terms < 2:
            raise ValueError("DFM needs at least two discriminators")
        self.num_terms = num_terms
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        )
        self.fc = nn.Linear(hidden, 1 if num_terms == 2 else num_terms)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` -> weights ``[B, K]`` (rows sum to 1; column 1 is beta for two terms)."""
        logits = self.fc(F.adaptive_avg_pool2d(self.convs(feature), 1).flatten(1)).float()
        if self.num_terms == 2:
            beta = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - beta, beta], dim=1)
        return torch.softmax(logits, dim=1)


class LayerwiseDFM(nn.Module):
    """Per-layer reading of eq. 4: one :class:`DFMNetwork` per matched layer i, each predicting
    beta_i from that layer's feature D_src^i; ``forward(features)`` -> weights ``[B, L, K]``."""

    def __init__(self, channels: list[int], num_terms: int = 2, hidden: int = 64):
        super().__init__()
        self.nets = nn.ModuleList(DFMNetwork(c, num_terms, hidden) for c in channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([net(f) for net, f in zip(self.nets, features, strict=True)], dim=1)


def layer_distances(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor], layers: tuple[int, ...]) -> torch.Tensor:
    """Per sample and layer (1-based ``layers``): ||real_i - fake_i||_1 / N_i -> ``[B, L]``."""
    return torch.stack(
        [(real_feats[i - 1].float() - fake_feats[i - 1].float()).abs().flatten(1).mean(dim=1) for i in layers], dim=1)


def feature_distance(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor], layers: tuple[int, ...]) -> torch.Tensor:
    """Per-sample sum over ``layers`` (1-based) of ||real_i - fake_i||_1 / N_i -> ``[B]``."""
    return layer_distances(real_feats, fake_feats, layers).sum(dim=1)


def weighted_matching(distances: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 4: batch mean of sum_(layers,) k w_k * d_k; ``[B, K]`` or ``[B, L, K]`` alike."""
    return (weights * distances).flatten(1).sum(dim=1).mean()


def entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy of the weights over the last (discriminator) axis: ``[B, K]`` -> ``[B]``."""
    return -(weights * weights.clamp_min(1e-8).log()).sum(dim=-1)


def weight_objective(distances: torch.Tensor, weights: torch.Tensor, tau: float, maximise: bool) -> torch.Tensor:
    """Loss of the DFM network (to minimise) on detached distances ``[B, K]`` (or ``[B, L, K]``,
    each layer's terms normalised on their own).

    ``maximise=True`` (adversarial): -(sum_k w_k d_k / sum_j d_j) - tau * H(w).
    ``maximise=False`` (generator reading): +(sum_k w_k d_k / sum_j d_j) - tau * H(w).
    """
    d = distances.detach()
    normalised = d / d.sum(dim=-1, keepdim=True).clamp_min(1e-8)
    matched = (weights * normalised).sum(dim=-1)
    sign = -1.0 if maximise else 1.0
    return (sign * matched - tau * entropy(weights)).mean()
