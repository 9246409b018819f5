"""synthbench plugin ``ours``: the paper's global-local cGAN with DESUM and DFM (paper.md).

Modules: :mod:`.networks` (G1, G2, PatchGAN D), :mod:`.desum` (eq. 1), :mod:`.dfm` (eq. 4),
:mod:`.losses` (eq. 3), :mod:`.model` (the :class:`Ours` synthesizer, eq. 2, stages, variants).
"""

from synthbench import hookimpl
from synthbench_ours.model import Ours

SYNTHBENCH_API = 1

__all__ = ["Ours"]


@hookimpl
def register_synthesizers(register):
    register(Ours)
