"""synthbench plugin: SPADE (Park et al., CVPR 2019), registered through the ``synthbench``
entry point ``spade``. See :mod:`synthbench_spade.synthesizer` for training and departures,
:mod:`synthbench_spade.networks` for the generator, SPADE norm and VAE encoder."""

from synthbench import hookimpl
from synthbench.lazy import lazy_attributes

SYNTHBENCH_API = 1

#: Registered by class path: loading the plugin (every CLI start) does not import torch or the
#: networks; :mod:`synthbench_spade.synthesizer` is imported when 'spade' is first used.
_MODEL = "synthbench_spade.synthesizer"

__all__ = ["SPADESynthesizer"]


@hookimpl
def register_synthesizers(register):
    register(f"{_MODEL}:SPADESynthesizer", name="spade")


__getattr__ = lazy_attributes(_MODEL)  # ``from synthbench_spade import ...`` imports the model on first access
