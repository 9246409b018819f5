"""The paper's completion step and the lung-only view, defined once for every module.

* complete image (paper Sec. "Task"): the synthetic lung region pasted into the real slice,
  ``complete = fake inside the lung region, real outside``. Outside the lung region it equals
  the real image exactly.
* lung-only image: the lung region of an image with every other pixel set to ``-1`` (the bottom
  of the ``[-1, 1]`` intensity range, black). The same rule is applied to the real and to the
  synthetic image before a metric compares them. FID, KID and SSIM compare the lung-only
  images; PSNR and RMSE average the squared error over lung pixels only (over the whole image
  they would equal the complete-image values, since both settings agree outside the lung).

The lung region is every class whose role is 'lung' or 'lesion' in the data-set description
(:attr:`synthbench.data.spec.DatasetSpec.lung_region_ids`). Layouts: images ``[B, 1, H, W]``
float in ``[-1, 1]``, masks ``bool [B, 1, H, W]`` (numpy arrays of the same shapes work too).
"""

from __future__ import annotations

import numpy as np
import torch

#: Value given to pixels outside the lung region in lung-only images.
OUTSIDE_LUNG = -1.0


def complete(fake, real, lung):
    """Synthetic inside the lung region, real outside (torch tensors or numpy arrays)."""
    if isinstance(fake, torch.Tensor):
        return torch.where(lung.bool(), fake, real)
    return np.where(np.asarray(lung, dtype=bool), fake, real)


def lung_only(image, lung):
    """The lung region of ``image``; every other pixel set to :data:`OUTSIDE_LUNG`."""
    if isinstance(image, torch.Tensor):
        return torch.where(lung.bool(), image, torch.full_like(image, OUTSIDE_LUNG))
    return np.where(np.asarray(lung, dtype=bool), image, np.asarray(OUTSIDE_LUNG, dtype=np.asarray(image).dtype))
