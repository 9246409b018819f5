"""synthbench plugin ``ours``: the paper's global-local cGAN with DESUM and DFM (paper.md).

Modules: :mod:`.networks` (G1, G2, PatchGAN D), :mod:`.desum` (eq. 1), :mod:`.dfm` (eq. 4),
:mod:`.losses` (eq. 3), :mod:`.model` (the :class:`Ours` synthesizer, eq. 2, stages, variants).
"""

from synthbench import hookimpl
from synthbench.lazy import lazy_attributes

SYNTHBENCH_API = 1

#: Registered by class path: loading the plugin (every CLI start) does not import torch or the
#: networks; :mod:`synthbench_ours.model` is imported when 'ours' is first used.
_MODEL = "synthbench_ours.model"

__all__ = ["Ours"]


@hookimpl
def register_synthesizers(register):
    register(f"{_MODEL}:Ours", name="ours")


__getattr__ = lazy_attributes(_MODEL)  # ``from synthbench_ours import ...`` imports the model on first access
