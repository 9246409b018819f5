"""synthbench plugin: SPADE (Park et al., CVPR 2019), registered through the ``synthbench``
entry point ``spade``. See :mod:`synthbench_spade.synthesizer` for training and departures,
:mod:`synthbench_spade.networks` for the generator, SPADE norm and VAE encoder."""

from synthbench import hookimpl
from synthbench_spade.synthesizer import SPADESynthesizer

SYNTHBENCH_API = 1

__all__ = ["SPADESynthesizer"]


@hookimpl
def register_synthesizers(register):
    register(SPADESynthesizer)
