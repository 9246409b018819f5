"""The conditional GAN loss of the paper (eq. 3): pix2pix's vanilla (log) loss, on logits.

    L_cGAN(G, D_k) = E[log D_k(m, x)] + E[log(1 - D_k(m, G(m)))]

computed as binary cross-entropy with logits (numerically stable; D has no sigmoid). D maximises
it: its loss is 0.5 * (BCE(D(m, x), 1) + BCE(D(m, G(m)), 0)) (pix2pix halves D's loss). G uses
the non-saturating form BCE(D(m, G(m)), 1), as pix2pix does. Summed over the discriminators
(eq. 2: sum_k L_cGAN(G, D_k)).
"""

from __future__ import annotations

import torch

from synthbench.nn import gan_loss as shared_gan_loss


def gan_loss(logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Mean BCE-with-logits of a PatchGAN map against all-ones (real) or all-zeros (fake)."""
    return shared_gan_loss(logits, target_is_real, mode="vanilla")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(real term, fake term) of one discriminator; its loss is 0.5 * (real + fake)."""
    return gan_loss(real_logits, True), gan_loss(fake_logits, False)


def generator_gan_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator term of eq. 3 for one discriminator."""
    return gan_loss(fake_logits, True)
