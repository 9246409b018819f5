"""synthbench plugin: SEAN (Zhu et al., CVPR 2020), registered through the ``synthbench``
entry point ``sean``. See :mod:`synthbench_sean.synthesizer` for training, style modes and
departures, :mod:`synthbench_sean.networks` for the style encoder, SEAN norm and generator."""

from synthbench import hookimpl
from synthbench_sean.synthesizer import STYLE_MODES, SEANSynthesizer

SYNTHBENCH_API = 1

__all__ = ["STYLE_MODES", "SEANSynthesizer"]


@hookimpl
def register_synthesizers(register):
    register(SEANSynthesizer)
